/**
 * `banger vm list`: the VMs, as a table, names only (-q) or JSON, filtered
 * as docker does (`--filter state=running`, repeatable: values of one key
 * match any, different keys must all match).
 */
import { BangerError, ErrorCode, type VmInfo } from "../../../protocol/index.ts";
import { formatVmList } from "../../render/vm.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

interface ListArgs {
  json?: boolean;
  quiet?: boolean;
  filter?: string[];
}

const FILTER_KEYS = ["state", "name", "image", "vmm"] as const;
type FilterKey = (typeof FILTER_KEYS)[number];

export const listSpec: CommandSpec<ListArgs> = {
  name: "list",
  aliases: ["ls"],
  describe: "list VMs",
  examples: [
    "banger vm ls",
    "banger vm ls -q --filter state=stopped | xargs -r banger vm delete",
    "banger vm list --json | jq -r '.[].name'",
  ],
  notes: `Filters: ${FILTER_KEYS.map((key) => `${key}=VALUE`).join(", ")} (name matches a part of the name).`,
  options: [
    { flags: "-q, --quiet", description: "print only the names" },
    { flags: "--filter <key=value>", description: "only VMs that match (repeatable)", repeatable: true },
    JSON_OPTION,
  ],
  async handler(ctx, args) {
    const matches = vmFilter(args.filter ?? []);
    const { vms } = await (await ctx.client()).call("vm.list", {});
    const shown = vms.filter(matches);
    if (args.json) return success(json(shown));
    if (args.quiet) return success(shown.map((vm) => vm.name).join("\n"));
    return success(formatVmList(shown));
  },
};

/** A predicate from `--filter key=value` flags; refuses an unknown key or a flag without `=`. */
function vmFilter(flags: readonly string[]): (vm: VmInfo) => boolean {
  const wanted = new Map<FilterKey, string[]>();
  for (const flag of flags) {
    const equals = flag.indexOf("=");
    const key = flag.slice(0, equals) as FilterKey;
    if (equals <= 0 || !FILTER_KEYS.includes(key)) {
      throw new BangerError(
        ErrorCode.INVALID_PARAMS,
        `--filter '${flag}' is not one of ${FILTER_KEYS.join("=, ")}=`,
        {
          hint: "e.g. --filter state=running",
        },
      );
    }
    wanted.set(key, [...(wanted.get(key) ?? []), flag.slice(equals + 1)]);
  }
  return (vm) =>
    [...wanted].every(([key, values]) =>
      values.some((value) => (key === "name" ? vm.name.includes(value) : vm[key] === value)),
    );
}
