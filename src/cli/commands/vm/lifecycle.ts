/**
 * `banger vm start|stop|restart|kill|pause|resume|suspend|delete NAME...`: one verb
 * over many VMs; each VM that fails is reported and the rest still run. An
 * interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the VM in progress, which the
 * daemon unwinds, and skips the rest. A start or restart then syncs the
 * user's auth material into the VM (a failed sync only warns).
 */
import { cancelled } from "../../../core/async/index.ts";
import { isActiveState } from "../../../core/vm/index.ts";
import { BangerError, ErrorCode, exitStatusFor, isCancelled } from "../../../protocol/index.ts";
import { type CliContext, reportError } from "../../context.ts";
import { askYesNo } from "../../prompt.ts";
import { createProgressRenderer } from "../../render/progress.ts";
import type { CallOptions, DaemonClient } from "../../rpc/client.ts";
import type { CommandSpec, OptionSpec } from "../../spec.ts";
import { suggestVmName } from "../../suggest.ts";
import { syncAuthAfterStart } from "./auth.ts";

type Verb = "start" | "stop" | "restart" | "kill" | "pause" | "resume" | "suspend" | "delete";

interface LifecycleArgs {
  names: string[];
  force?: boolean;
}

interface VerbSpec {
  verb: Verb;
  describe: string;
  examples: readonly string[];
  notes?: string;
  aliases?: readonly string[];
  options?: readonly OptionSpec[];
}

function lifecycleSpec(spec: VerbSpec): CommandSpec<LifecycleArgs> {
  const { verb } = spec;
  return {
    name: `${verb} <names...>`,
    aliases: spec.aliases ?? [],
    describe: spec.describe,
    examples: spec.examples,
    ...(spec.notes === undefined ? {} : { notes: spec.notes }),
    options: spec.options ?? [],
    async handler(ctx, { names, force }) {
      const client = await ctx.client();
      const progress = createProgressRenderer(ctx.stderr, false);
      const interrupted = ctx.interrupted();
      const onInterrupt = () =>
        progress.onProgress({ message: `${String(interrupted.reason)}: cancelling…`, status: "running" });
      interrupted.addEventListener("abort", onInterrupt, { once: true });
      const done: string[] = [];
      const failures: string[] = [];
      let exitCode = 0;
      for (const name of names) {
        if (interrupted.aborted) {
          failures.push(name);
          exitCode = exitStatusFor[ErrorCode.CANCELLED];
          continue;
        }
        try {
          const options = { signal: interrupted, onProgress: progress.onProgress };
          if (verb === "delete") await deleteVm(ctx, client, { name, force: force === true }, options);
          else await client.call(`vm.${verb}`, { name }, options);
          progress.finish();
          if (verb === "start" || verb === "restart") await syncAuthAfterStart(ctx, client, name);
          done.push(name);
        } catch (error) {
          progress.finish();
          failures.push(name);
          exitCode = reportError(ctx, await suggestVmName(ctx, explainCancel(verb, name, error)));
        }
      }
      interrupted.removeEventListener("abort", onInterrupt);
      if (failures.length > 0 && names.length > 1)
        ctx.stderr.write(`banger: ${verb} failed for: ${failures.join(", ")}\n`);
      return { output: done.join("\n"), exitCode };
    },
  };
}

/**
 * Deletes; when the daemon refuses because the VM's workspace holds
 * unexported work, asks on a terminal (saying so when the VM runs and would
 * be killed) and retries with force. Without a terminal the refusal stands.
 */
async function deleteVm(
  ctx: CliContext,
  client: DaemonClient,
  { name, force }: { name: string; force: boolean },
  options: CallOptions,
): Promise<void> {
  try {
    await client.call("vm.delete", { name, force }, options);
  } catch (error) {
    if (
      !(error instanceof BangerError) ||
      error.code !== ErrorCode.UNEXPORTED_WORK ||
      ctx.stdin.isTTY !== true
    )
      throw error;
    ctx.stderr.write(`banger: ${error.message}\n`);
    const vm = await client.call("vm.show", { name });
    const killed = isActiveState(vm.state) ? ` (it is ${vm.state}; it will be killed)` : "";
    if (!(await askYesNo(ctx, `delete '${name}'${killed} and lose that work?`))) throw error;
    await client.call("vm.delete", { name, force: true }, options);
  }
}

/** A cancelled verb names itself and its VM (the hint says its partial work is undone). */
function explainCancel(verb: Verb, name: string, error: unknown): unknown {
  return isCancelled(error) ? cancelled(undefined, `${verb} of VM '${name}'`, { cause: error }) : error;
}

export const lifecycleSpecs: readonly CommandSpec<LifecycleArgs>[] = [
  lifecycleSpec({ verb: "start", describe: "boot stopped VMs", examples: ["banger vm start web db"] }),
  lifecycleSpec({
    verb: "stop",
    describe: "shut VMs down gracefully (power button, then quit, then kill)",
    examples: ["banger vm stop web"],
  }),
  lifecycleSpec({ verb: "restart", describe: "stop, then start VMs", examples: ["banger vm restart web"] }),
  lifecycleSpec({
    verb: "kill",
    describe: "stop VMs at once, without a graceful shutdown",
    examples: ["banger vm kill web"],
  }),
  lifecycleSpec({
    verb: "pause",
    describe: "freeze VMs' vCPUs; memory, disk and network stay as they are",
    examples: ["banger vm pause web"],
  }),
  lifecycleSpec({
    verb: "resume",
    describe: "let paused VMs run again, and restore suspended VMs from disk",
    examples: ["banger vm resume web"],
  }),
  lifecycleSpec({
    verb: "suspend",
    describe:
      "write VMs' memory to disk and end their VMM, freeing its RAM; `vm resume` or any exec restores them",
    examples: [
      "banger vm suspend web",
      "banger vm suspend web && banger vm exec web -- uptime   # resumes it",
    ],
    notes:
      "A suspended VM survives daemon restarts and host reboots. `vm stop` on a suspended VM discards its memory.",
  }),
  lifecycleSpec({
    verb: "delete",
    aliases: ["rm"],
    describe:
      "delete VMs and everything they own (disk, tap, files); a running VM, or a workspace holding unexported work, needs --force",
    examples: [
      "banger vm delete web db",
      "banger vm rm -f web          # also a running VM, and a workspace's unexported commits",
    ],
    notes: "On a terminal, a delete refused for unexported workspace work asks whether to lose it.",
    options: [
      {
        flags: "-f, --force",
        description: "delete running or paused VMs too (they are killed), and unexported workspace work",
      },
    ],
  }),
];
