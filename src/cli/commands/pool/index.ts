/** `banger pool ls`: the warm pools of config `[[pool]]` and their members. */
import { formatTable } from "../../render/table.ts";
import { type CommandSpec, type GroupSpec, JSON_OPTION, json, success } from "../../spec.ts";

const poolListSpec: CommandSpec<{ json?: boolean }> = {
  name: "list",
  aliases: ["ls"],
  describe: "list warm pools: their source, how many VMs they keep and how many are ready",
  examples: ["banger pool ls", "banger pool ls --json | jq '.[].ready'"],
  notes:
    'Pools are configured in config.toml:\n  [[pool]]\n  snapshot = "warm"   # or image = "debian-bookworm"\n  count = 2\nA `vm run` or `vm create` with no sizing of its own, from that snapshot or image, takes a ready VM.',
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const { pools } = await (await ctx.client()).call("pool.list", {});
    if (args.json) return success(json(pools));
    if (pools.length === 0)
      return success("no pools: add a [[pool]] entry to config.toml (see `banger pool ls --help`)");
    return success(
      formatTable(
        ["name", "source", "ready", "target", "members"],
        pools.map((pool) => [
          pool.name,
          pool.source,
          String(pool.ready),
          String(pool.target),
          pool.members.map((member) => `${member.name} (${member.state})`).join(", ") || "-",
        ]),
      ),
    );
  },
};

export const poolGroup: GroupSpec = {
  name: "pool",
  describe: "show the warm pools that serve vm run and vm create",
  commands: [poolListSpec],
};
