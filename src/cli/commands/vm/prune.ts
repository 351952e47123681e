/**
 * `banger vm prune [-f]`: delete every VM that is not running (stopped,
 * created but never started, or failed), asking first unless --force.
 */
import { BangerError, ErrorCode, type VmInfo } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { reportError } from "../../context.ts";
import { askYesNo } from "../../prompt.ts";
import { type CommandSpec, success } from "../../spec.ts";

interface PruneArgs {
  force?: boolean;
}

const PRUNABLE: ReadonlySet<VmInfo["state"]> = new Set(["stopped", "created", "error"]);

export const pruneSpec: CommandSpec<PruneArgs> = {
  name: "prune",
  describe: "delete every stopped VM (also never-started and failed ones), asking first",
  examples: ["banger vm prune", "banger vm prune --force"],
  options: [{ flags: "-f, --force", description: "do not ask" }],
  async handler(ctx, args) {
    const client = await ctx.client();
    const { vms } = await client.call("vm.list", {});
    const doomed = vms.filter((vm) => PRUNABLE.has(vm.state)).map((vm) => vm.name);
    if (doomed.length === 0) {
      ctx.stderr.write("no stopped VMs to delete\n");
      return success();
    }
    if (
      !args.force &&
      !(await confirm(ctx, `delete ${doomed.length} stopped VM(s): ${doomed.join(", ")}?`))
    ) {
      ctx.stderr.write("nothing deleted\n");
      return success();
    }
    const deleted: string[] = [];
    let exitCode = 0;
    for (const name of doomed) {
      try {
        await client.call("vm.delete", { name });
        deleted.push(name);
      } catch (error) {
        exitCode = reportError(ctx, error);
      }
    }
    return { output: deleted.join("\n"), exitCode };
  },
};

/** Asks on the terminal; without one, refuses (a script says --force). */
function confirm(ctx: CliContext, question: string): Promise<boolean> {
  if (ctx.stdin.isTTY !== true) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      "vm prune asks before deleting, and stdin is not a terminal",
      {
        hint: "add --force to delete without asking",
      },
    );
  }
  return askYesNo(ctx, question);
}
