/** `banger vm list`: the VMs, as a table or JSON. */
import { formatVmList } from "../../render/vm.ts";
import { type CommandSpec, json, success } from "../../spec.ts";

interface ListArgs {
  json?: boolean;
}

export const listSpec: CommandSpec<ListArgs> = {
  name: "list",
  aliases: ["ls"],
  describe: "list VMs",
  examples: ["banger vm ls", "banger vm list --json | jq -r '.[].name'"],
  options: [{ flags: "--json", description: "print JSON" }],
  async handler(ctx, args) {
    const { vms } = await (await ctx.client()).call("vm.list", {});
    return success(args.json ? json(vms) : formatVmList(vms));
  },
};
