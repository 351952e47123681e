/** `banger vm set NAME`: change a stopped VM's vCPUs, memory or disk size, or any VM's egress policy. */
import { BangerError, ErrorCode, type VmInfo } from "../../../protocol/index.ts";
import { parseInteger, parseSize } from "../../flags.ts";
import { describeVm } from "../../render/vm.ts";
import { type CommandSpec, json, success } from "../../spec.ts";

interface SetArgs {
  name: string;
  cpus?: string;
  memory?: string;
  disk?: string;
  egress?: string;
  json?: boolean;
}

export const setSpec: CommandSpec<SetArgs> = {
  name: "set <name>",
  describe:
    "change a stopped VM's vCPUs, memory or disk size (the disk only grows), or any VM's egress policy",
  examples: [
    "banger vm stop web && banger vm set web --cpus 4 --memory 4g --disk 20g && banger vm start web",
    "banger vm set web --egress 'pypi.org,*.pythonhosted.org'",
    "banger vm set web --egress allow",
  ],
  options: [
    { flags: "--cpus <n>", description: "vCPUs" },
    { flags: "--memory <size>", description: "memory: MiB, or with a unit (512m, 2g)" },
    {
      flags: "--disk <size>",
      description: "root disk: GiB, or with a unit (20g); the guest's filesystem grows at its next boot",
    },
    {
      flags: "--egress <policy>",
      description: "allow | deny | NAME,*.SUFFIX,...; a running VM changes at once",
    },
    { flags: "--json", description: "print the VM as JSON" },
  ],
  async handler(ctx, args) {
    const changes = {
      ...(args.cpus === undefined ? {} : { cpus: parseInteger("--cpus", args.cpus) }),
      ...(args.memory === undefined ? {} : { memoryMib: parseSize("--memory", args.memory, "MiB") }),
      ...(args.disk === undefined ? {} : { diskGib: parseSize("--disk", args.disk, "GiB") }),
    };
    if (Object.keys(changes).length === 0 && args.egress === undefined) {
      throw new BangerError(
        ErrorCode.INVALID_PARAMS,
        "vm set needs at least one of --cpus, --memory, --disk, --egress",
        { hint: `e.g. banger vm set ${args.name} --disk 20` },
      );
    }
    const client = await ctx.client();
    let info: VmInfo | undefined;
    if (args.egress !== undefined)
      info = await client.call("vm.egress", { name: args.name, egress: args.egress });
    if (Object.keys(changes).length > 0) info = await client.call("vm.set", { name: args.name, ...changes });
    return success(args.json ? json(info) : describeVm(info!));
  },
};
