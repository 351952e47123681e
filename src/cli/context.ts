/**
 * What every command receives: where things are, how to reach the daemon,
 * and where to write. Commands are thin: parse → RPC → render.
 */
import { errorMessage } from "../core/async/index.ts";
import type { Layout } from "../core/paths/index.ts";
import { BangerError, ErrorCode, exitStatusFor } from "../protocol/index.ts";
import { connectDaemon } from "./connect.ts";
import { createProgressRenderer } from "./render/progress.ts";
import type { RpcClient } from "./rpc/client.ts";

export interface CliContext {
  layout: Layout;
  env: Readonly<Record<string, string | undefined>>;
  /** The package root (holds bin/ and node_modules/). */
  root: string;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** Connects (autostarting unless disabled) and returns a client; reused within one command. */
  client(): Promise<RpcClient>;
  autostart(): boolean;
  setAutostart(enabled: boolean): void;
  close(): void;
}

export function createCliContext(options: {
  layout: Layout;
  env: Readonly<Record<string, string | undefined>>;
  root: string;
}): CliContext {
  let client: RpcClient | undefined;
  let autostart = !isTruthy(options.env.BANGER_NO_AUTOSTART);
  const ctx: CliContext = {
    layout: options.layout,
    env: options.env,
    root: options.root,
    stdout: process.stdout,
    stderr: process.stderr,
    async client() {
      if (client && !client.closed) return client;
      const progress = createProgressRenderer(process.stderr, false);
      const connection = await connectDaemon({
        layout: options.layout,
        autostart,
        daemonCommand: [`${options.root}/bin/bangerd`],
        env: options.env,
        onStarting: () =>
          progress.onProgress({
            id: 0,
            step: "daemon.start",
            message: "starting bangerd",
            status: "running",
          }),
      });
      if (connection.started)
        progress.onProgress({
          id: 0,
          step: "daemon.start",
          message: `bangerd started (pid ${connection.hello.pid})`,
          status: "done",
        });
      progress.finish();
      client = connection.client;
      return client;
    },
    autostart: () => autostart,
    setAutostart(enabled) {
      autostart = enabled;
    },
    close() {
      client?.close();
      client = undefined;
    },
  };
  return ctx;
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

/** Prints an error the way every command does, and returns the exit status. */
export function reportError(ctx: Pick<CliContext, "stderr">, error: unknown): number {
  if (error instanceof BangerError) {
    ctx.stderr.write(`banger: ${error.message}\n`);
    if (error.hint) ctx.stderr.write(`hint: ${error.hint}\n`);
    return exitStatusFor[error.code] ?? 1;
  }
  ctx.stderr.write(`banger: ${errorMessage(error)}\n`);
  return exitStatusFor[ErrorCode.INTERNAL];
}

export function printJson(ctx: Pick<CliContext, "stdout">, value: unknown): void {
  ctx.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
