/** `banger vm show NAME`: one VM's fields. */
import { describeVm } from "../../render/vm.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

interface ShowArgs {
  name: string;
  json?: boolean;
}

export const showSpec: CommandSpec<ShowArgs> = {
  name: "show <name>",
  aliases: ["inspect"],
  describe: "show one VM",
  examples: ["banger vm show web", "banger vm show web --json"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const info = await (await ctx.client()).call("vm.show", { name: args.name });
    return success(args.json ? json(info) : describeVm(info));
  },
};
