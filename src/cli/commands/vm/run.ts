/**
 * `banger vm run [flags] -- CMD...`: run a command in a VM (created if
 * needed), stream its output and exit with its status; `--rm` deletes the
 * VM afterwards, also when interrupted.
 */

import { ErrorCode, exitStatusFor } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { reportError } from "../../context.ts";
import { exitStatusForSignal } from "../../exit-status.ts";
import { createProgressRenderer } from "../../render/progress.ts";
import type { CommandSpec } from "../../spec.ts";
import { createWithProgress } from "./create-flow.ts";
import { type SizingFlags, sizingOptions, sizingParams } from "./sizing.ts";

interface RunArgs extends SizingFlags {
  command: string[];
  name?: string;
  rm?: boolean;
}

const INTERRUPTED = exitStatusFor[ErrorCode.CANCELLED];

export const runSpec: CommandSpec<RunArgs> = {
  name: "run <command...>",
  describe:
    "run a command in a VM: create it if needed, wait for SSH, stream its output, exit with its status",
  examples: [
    "banger vm run -- uname -a",
    "banger vm run --rm -- make test",
    "echo hi | banger vm run --name box -- cat",
    "banger vm run --cpus 2 --memory 2g -- nproc",
  ],
  options: [
    ...sizingOptions,
    { flags: "--name <name>", description: "use (or create) the VM with this name" },
    { flags: "--rm", description: "delete the VM afterwards if this run created it, also on Ctrl-C" },
  ],
  handler: (ctx, args) => runInVm(ctx, args),
};

async function runInVm(ctx: CliContext, args: RunArgs): Promise<{ exitCode: number }> {
  const client = await ctx.client();
  let name = args.name;
  // --rm deletes only a VM this run created, never one that was there before.
  let created: string | undefined;
  const interrupted = ctx.interrupted();
  try {
    const existing = name ? await client.call("vm.show", { name }).catch(() => undefined) : undefined;
    if (!existing) {
      const vm = await createWithProgress(ctx, client, { ...sizingParams(args), ...(name ? { name } : {}) });
      name = vm.name;
      created = vm.name;
    } else if (existing.state !== "running") {
      const progress = createProgressRenderer(ctx.stderr, false);
      await client.call(
        "vm.start",
        { name: existing.name },
        { onProgress: (event) => progress.onProgress(event) },
      );
      progress.finish();
    }
    if (interrupted.aborted) return { exitCode: INTERRUPTED };
    const pipeStdin = ctx.stdin.isTTY !== true;
    const call = client.start(
      "vm.exec",
      { name: name!, argv: args.command, stdin: pipeStdin },
      {
        signal: interrupted,
        onStream: (ch, data) => {
          if (data === null) return;
          if (ch === "stdout") ctx.stdout.write(data);
          else if (ch === "stderr") ctx.stderr.write(data);
        },
      },
    );
    if (pipeStdin) {
      ctx.stdin.on("data", (chunk: Buffer) => void call.write("stdin", chunk));
      ctx.stdin.on("end", () => call.end("stdin"));
      ctx.stdin.on("error", () => call.end("stdin"));
    }
    const result = await call.result;
    if (interrupted.aborted) return { exitCode: INTERRUPTED };
    return { exitCode: result.exitCode ?? exitStatusForSignal(result.signal) };
  } catch (error) {
    if (interrupted.aborted) return { exitCode: INTERRUPTED };
    return { exitCode: reportError(ctx, error) };
  } finally {
    // Stop reading stdin: an open pipe would keep the process alive.
    ctx.stdin.pause();
    if (args.rm && created !== undefined) {
      await client
        .call("vm.delete", { name: created, force: true })
        .catch((error: unknown) => reportError(ctx, error));
    }
  }
}
