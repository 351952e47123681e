/**
 * What every command receives: where things are, how to reach the daemon,
 * the terminal (stdin, stdout, stderr), the signals sent to the CLI, and a
 * way to hand the terminal to a child program. Commands touch no process
 * globals: this context owns them, so a test can give a command fakes.
 */
import { spawn } from "node:child_process";
import { errorMessage } from "../core/async/index.ts";
import type { Layout } from "../core/paths/index.ts";
import { BangerError, ErrorCode, exitStatusFor } from "../protocol/index.ts";
import { connectDaemon } from "./connect.ts";
import { exitStatusForSignal } from "./exit-status.ts";
import { createProgressRenderer } from "./render/progress.ts";
import type { DaemonClient } from "./rpc/client.ts";

/** The signals the CLI catches, forwards or unwinds on. */
export type CliSignal = "SIGINT" | "SIGTERM" | "SIGHUP";
const CAUGHT_SIGNALS: readonly CliSignal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export interface InputStream extends NodeJS.ReadableStream {
  isTTY?: boolean;
  setRawMode?(raw: boolean): unknown;
}

export interface OutputStream extends NodeJS.WritableStream {
  isTTY?: boolean;
  columns?: number;
  rows?: number;
}

export interface CliContext {
  layout: Layout;
  env: Readonly<Record<string, string | undefined>>;
  /** The package root (holds bin/ and node_modules/). */
  root: string;
  stdin: InputStream;
  stdout: OutputStream;
  stderr: OutputStream;
  /** Connects (autostarting unless disabled) and returns a client; reused within one command. */
  client(): Promise<DaemonClient>;
  /** Aborted at the first SIGINT, SIGTERM or SIGHUP; its reason is the signal's name. */
  interrupted(): AbortSignal;
  /** Calls `listener` on every SIGINT, SIGTERM and SIGHUP until the returned function is called. */
  onSignal(listener: (signal: CliSignal) => void): () => void;
  /** Aborted when stdout cannot be written any more (its reader went away: EPIPE). */
  outputClosed(): AbortSignal;
  /** Calls `listener` when the terminal on stdout changes size, until the returned function is called. */
  onResize(listener: () => void): () => void;
  /** Runs a program on this terminal (inherited stdio) and resolves its exit status. */
  runInteractive(argv: readonly string[]): Promise<number>;
  autostart(): boolean;
  setAutostart(enabled: boolean): void;
  close(): void;
}

export function createCliContext(options: {
  layout: Layout;
  env: Readonly<Record<string, string | undefined>>;
  root: string;
}): CliContext {
  let client: DaemonClient | undefined;
  let autostart = !isTruthy(options.env.BANGER_NO_AUTOSTART);
  const signals = processSignals();
  // A reader that goes away (`banger vm exec … | head -2`) ends output quietly, without a stack trace.
  const output = new AbortController();
  process.stdout.on("error", () => output.abort());
  return {
    layout: options.layout,
    env: options.env,
    root: options.root,
    stdin: process.stdin,
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
        onStarting: () => progress.onProgress({ message: "starting bangerd", status: "running" }),
      });
      if (connection.started)
        progress.onProgress({ message: `bangerd started (pid ${connection.hello.pid})`, status: "done" });
      progress.finish();
      client = connection.client;
      return client;
    },
    interrupted: signals.interrupted,
    onSignal: signals.onSignal,
    outputClosed: () => output.signal,
    onResize(listener) {
      process.stdout.on("resize", listener);
      return () => process.stdout.off("resize", listener);
    },
    runInteractive: (argv) => runWithTerminal(argv, signals),
    autostart: () => autostart,
    setAutostart(enabled) {
      autostart = enabled;
    },
    close() {
      client?.close();
      client = undefined;
    },
  };
}

/**
 * The process's SIGINT/SIGTERM/SIGHUP, caught only once a command asks for
 * them: a command that never asks keeps the default (the signal ends it).
 */
function processSignals(): Pick<CliContext, "interrupted" | "onSignal"> {
  const controller = new AbortController();
  const listeners = new Set<(signal: CliSignal) => void>();
  let installed = false;
  const install = () => {
    if (installed) return;
    installed = true;
    for (const signal of CAUGHT_SIGNALS)
      process.on(signal, () => {
        if (!controller.signal.aborted) controller.abort(signal);
        for (const listener of [...listeners]) listener(signal);
      });
  };
  return {
    interrupted() {
      install();
      return controller.signal;
    },
    onSignal(listener) {
      install();
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** Like a shell running a foreground job: the child gets the terminal and the keys; the CLI waits. */
async function runWithTerminal(
  argv: readonly string[],
  signals: Pick<CliContext, "onSignal">,
): Promise<number> {
  // The terminal's Ctrl-C reaches the child (same process group); the CLI only waits for it.
  const ignore = signals.onSignal(() => {});
  try {
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: "inherit" });
      child.on("error", (error: NodeJS.ErrnoException) =>
        reject(
          error.code === "ENOENT"
            ? new BangerError(ErrorCode.TOOL_MISSING, `${argv[0]} is not installed`, {
                hint: `install the OpenSSH client (Debian: apt-get install openssh-client)`,
              })
            : error,
        ),
      );
      child.on("exit", (code, signal) => resolve(code ?? exitStatusForSignal(signal)));
    });
  } finally {
    ignore();
  }
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

/** Prints an error the way every command does, and returns the exit status. */
export function reportError(ctx: Pick<CliContext, "stderr">, error: unknown): number {
  if (error instanceof BangerError) {
    ctx.stderr.write(`banger: ${error.message}\n`);
    if (error.hint) ctx.stderr.write(`hint: ${error.hint}\n`);
    return exitStatusFor[error.code];
  }
  ctx.stderr.write(`banger: ${errorMessage(error)}\n`);
  return exitStatusFor[ErrorCode.INTERNAL];
}
