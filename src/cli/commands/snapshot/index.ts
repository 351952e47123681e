/** `banger snapshot ls|show|rm`: the memory snapshots `vm snapshot` and `vm fork` save. */
import type { SnapshotInfo } from "../../../protocol/index.ts";
import { formatAge, formatBytes, formatTable } from "../../render/table.ts";
import { type CommandSpec, type GroupSpec, JSON_OPTION, json, success } from "../../spec.ts";

const snapshotListSpec: CommandSpec<{ json?: boolean }> = {
  name: "list",
  aliases: ["ls"],
  describe: "list snapshots",
  examples: ["banger snapshot ls", "banger snapshot ls --json | jq -r '.[].name'"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const { snapshots } = await (await ctx.client()).call("snapshot.list", {});
    if (args.json) return success(json(snapshots));
    const rows = snapshots.map((s) => [
      s.name,
      s.sourceVm,
      s.image,
      s.vmm,
      `${s.memoryMib}M`,
      formatBytes(s.memoryBytes),
      formatBytes(s.diskBytes),
      String(s.usedBy.length),
      formatAge(s.createdAt),
    ]);
    return success(
      formatTable(["name", "from", "image", "vmm", "memory", "state", "disk", "clones", "created"], rows),
    );
  },
};

const snapshotShowSpec: CommandSpec<{ name: string; json?: boolean }> = {
  name: "show <name>",
  aliases: ["inspect"],
  describe: "show one snapshot",
  examples: ["banger snapshot show warm", "banger snapshot show warm --json"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const info = await (await ctx.client()).call("snapshot.show", { name: args.name });
    return success(args.json ? json(info) : describeSnapshot(info));
  },
};

const snapshotDeleteSpec: CommandSpec<{ names: string[] }> = {
  name: "rm <names...>",
  aliases: ["delete"],
  describe: "delete snapshots (refused while a VM's disk depends on one)",
  examples: ["banger snapshot rm warm", "banger snapshot rm a b"],
  async handler(ctx, args) {
    const client = await ctx.client();
    const deleted: string[] = [];
    for (const name of args.names) {
      await client.call("snapshot.delete", { name });
      deleted.push(name);
    }
    return success(deleted.join("\n"));
  },
};

function describeSnapshot(s: SnapshotInfo): string {
  return formatTable(
    ["field", "value"],
    [
      ["name", s.name],
      ["id", s.id],
      ["from", s.sourceVm],
      ["image", s.image],
      ["vmm", s.vmm],
      ["cpus", String(s.cpus)],
      ["memory", `${s.memoryMib} MiB`],
      ["disk", `${s.diskGib} GiB`],
      ["state bytes", formatBytes(s.memoryBytes)],
      ["disk bytes", formatBytes(s.diskBytes)],
      ["secrets", s.includesSecrets ? "yes (auth files were synced into the source)" : "no"],
      ["clones", s.usedBy.join(", ") || "-"],
      ["dir", s.dir],
      ["created", `${s.createdAt} (${formatAge(s.createdAt)})`],
    ],
  );
}

export const snapshotGroup: GroupSpec = {
  name: "snapshot",
  describe: "list, show and delete memory snapshots",
  commands: [snapshotListSpec, snapshotShowSpec, snapshotDeleteSpec],
};
