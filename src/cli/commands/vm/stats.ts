/** `banger vm stats NAME` and `banger vm health NAME`. */
import { ErrorCode, exitStatusFor } from "../../../protocol/index.ts";
import { formatVmHealth, formatVmStats } from "../../render/stats.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

interface ProbeArgs {
  name: string;
  json?: boolean;
}

export const statsSpec: CommandSpec<ProbeArgs> = {
  name: "stats <name>",
  describe: "show a VM's resource use: VMM CPU and memory, root disk on the host, and the guest's own view",
  examples: ["banger vm stats web", "banger vm stats web --json | jq '.vmm.rssBytes'"],
  notes:
    "CPU is sampled over 250 ms; 100% is one core. Guest numbers need the guest to answer SSH\nwithin a few seconds; otherwise they are null and guestUnavailable says why.",
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const stats = await (await ctx.client()).call("vm.stats", { name: args.name });
    return success(args.json ? json(stats) : formatVmStats(stats));
  },
};

const UNHEALTHY = exitStatusFor[ErrorCode.GUEST_UNREACHABLE];

export const healthSpec: CommandSpec<ProbeArgs> = {
  name: "health <name>",
  describe: "check that a VM answers: VMM process alive, sshd banner, and `true` over SSH",
  examples: [
    "banger vm health web",
    "banger vm health web --json | jq '.checks[] | select(.ok | not)'",
    "until banger vm health web >/dev/null 2>&1; do sleep 1; done",
  ],
  notes: `Exits 0 when every check passes, ${UNHEALTHY} when one fails.`,
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const health = await (await ctx.client()).call("vm.health", { name: args.name });
    const output = args.json ? json(health) : formatVmHealth(health);
    if (health.healthy) return success(output);
    const failed = health.checks.filter((check) => !check.ok).map((check) => check.name);
    const first = health.checks.find((check) => !check.ok);
    ctx.stderr.write(
      `banger: VM '${health.name}' is not healthy: ${failed.join(", ")} failed${first ? ` (${first.name}: ${first.detail})` : ""}\n`,
    );
    return { output, exitCode: UNHEALTHY };
  },
};
