/**
 * `banger vm start|stop|restart|kill|pause|resume|delete NAME...`: one verb
 * over many VMs; each VM that fails is reported and the rest still run.
 */
import { reportError } from "../../context.ts";
import { createProgressRenderer } from "../../render/progress.ts";
import type { CommandSpec } from "../../spec.ts";

type Verb = "start" | "stop" | "restart" | "kill" | "pause" | "resume" | "delete";

interface LifecycleArgs {
  names: string[];
}

function lifecycleSpec(
  verb: Verb,
  describe: string,
  examples: readonly string[],
  aliases: readonly string[] = [],
): CommandSpec<LifecycleArgs> {
  return {
    name: `${verb} <names...>`,
    aliases,
    describe,
    examples,
    async handler(ctx, { names }) {
      const client = await ctx.client();
      const progress = createProgressRenderer(ctx.stderr, false);
      const done: string[] = [];
      const failures: string[] = [];
      let exitCode = 0;
      for (const name of names) {
        try {
          await client.call(`vm.${verb}`, { name }, { onProgress: (event) => progress.onProgress(event) });
          progress.finish();
          done.push(name);
        } catch (error) {
          progress.finish();
          failures.push(name);
          exitCode = reportError(ctx, error);
        }
      }
      if (failures.length > 0 && names.length > 1)
        ctx.stderr.write(`banger: ${verb} failed for: ${failures.join(", ")}\n`);
      return { output: done.join("\n"), exitCode };
    },
  };
}

export const lifecycleSpecs: readonly CommandSpec<LifecycleArgs>[] = [
  lifecycleSpec("start", "boot stopped VMs", ["banger vm start web db"]),
  lifecycleSpec("stop", "shut VMs down gracefully (power button, then quit, then kill)", [
    "banger vm stop web",
  ]),
  lifecycleSpec("restart", "stop, then start VMs", ["banger vm restart web"]),
  lifecycleSpec("kill", "stop VMs at once, without a graceful shutdown", ["banger vm kill web"]),
  lifecycleSpec("pause", "freeze VMs' vCPUs; memory, disk and network stay as they are", [
    "banger vm pause web",
  ]),
  lifecycleSpec("resume", "let paused VMs run again", ["banger vm resume web"]),
  lifecycleSpec(
    "delete",
    "delete VMs and everything they own (disk, tap, files)",
    ["banger vm delete web db"],
    ["rm"],
  ),
];
