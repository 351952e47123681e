/** `banger vm snapshot NAME [SNAP]` and `banger vm fork NAME NEW [--count N]`. */
import { cancelled } from "../../../core/async/index.ts";
import { isCancelled, type ProgressParams } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { positiveInt } from "../../flags.ts";
import { createProgressRenderer } from "../../render/progress.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { type CommandSpec, json, success } from "../../spec.ts";
import { syncAuthAfterStart } from "./auth.ts";

interface SnapshotArgs {
  name: string;
  snapshot?: string;
  includeSecrets?: boolean;
  json?: boolean;
}

interface ForkArgs {
  name: string;
  new: string;
  count: string;
  includeSecrets?: boolean;
  json?: boolean;
}

const INCLUDE_SECRETS = {
  flags: "--include-secrets",
  description: "allow a VM that `vm auth sync` wrote credentials into (they end up in the snapshot)",
};

/**
 * Runs one call with step progress on stderr, always finishing the renderer.
 * An interrupt (Ctrl-C, SIGTERM) cancels the call: the daemon unwinds what
 * it made and the call fails with CANCELLED.
 */
async function withProgress<T>(
  ctx: CliContext,
  what: string,
  call: (options: { onProgress: (event: ProgressParams) => void; signal: AbortSignal }) => Promise<T>,
): Promise<T> {
  const progress = createProgressRenderer(ctx.stderr, false);
  const interrupted = ctx.interrupted();
  const onInterrupt = () =>
    progress.onProgress({ message: `${String(interrupted.reason)}: cancelling…`, status: "running" });
  interrupted.addEventListener("abort", onInterrupt, { once: true });
  try {
    return await call({ onProgress: (event) => progress.onProgress(event), signal: interrupted });
  } catch (error) {
    throw isCancelled(error) || interrupted.aborted ? cancelled(interrupted, what, { cause: error }) : error;
  } finally {
    interrupted.removeEventListener("abort", onInterrupt);
    progress.finish();
  }
}

export const vmSnapshotSpec: CommandSpec<SnapshotArgs> = {
  name: "snapshot <name> [snapshot]",
  describe: "save a running VM's memory and disk as a snapshot; the VM goes on running",
  examples: [
    "banger vm snapshot web",
    "banger vm snapshot web warm && banger vm run --rm --from warm -- make test",
  ],
  notes: "A snapshot holds the guest's whole memory and disk: anything the VM held (tokens, keys) is in it.",
  options: [INCLUDE_SECRETS, { flags: "--json", description: "print the snapshot as JSON" }],
  async handler(ctx, args) {
    const client = await ctx.client();
    const info = await withProgress(ctx, `snapshot of VM '${args.name}'`, (options) =>
      client.call(
        "vm.snapshot",
        {
          name: args.name,
          ...(args.snapshot === undefined ? {} : { snapshot: args.snapshot }),
          ...(args.includeSecrets ? { includeSecrets: true } : {}),
        },
        options,
      ),
    );
    return success(args.json ? json(info) : info.name);
  },
};

export const vmForkSpec: CommandSpec<ForkArgs> = {
  name: "fork <name> <new>",
  describe: "snapshot a running VM and start clones of it, each with its own address, name and keys",
  examples: ["banger vm fork dev agent", "banger vm fork dev agent --count 8"],
  options: [
    {
      flags: "--count <n>",
      description: "how many clones (named NEW-1 … NEW-N when more than one)",
      default: "1",
    },
    INCLUDE_SECRETS,
    { flags: "--json", description: "print the snapshot and the clones as JSON" },
  ],
  async handler(ctx, args) {
    const count = positiveInt("--count", args.count);
    const client = await ctx.client();
    const forked = await withProgress(ctx, `fork of VM '${args.name}'`, (options) =>
      client.call(
        "vm.fork",
        {
          name: args.name,
          newName: args.new,
          count,
          ...(args.includeSecrets ? { includeSecrets: true } : {}),
        },
        options,
      ),
    );
    await syncClones(ctx, client, forked.vms);
    return success(args.json ? json(forked) : forked.vms.map((clone) => clone.name).join("\n"));
  },
};

async function syncClones(ctx: CliContext, client: DaemonClient, clones: readonly { name: string }[]) {
  for (const clone of clones) await syncAuthAfterStart(ctx, client, clone.name);
}
