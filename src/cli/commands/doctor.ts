/** `banger doctor` and `banger ping`: is this host ready, does the daemon answer. */
import { EXIT_FAILURE } from "../exit-status.ts";
import { formatTable } from "../render/table.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../spec.ts";

interface JsonArgs {
  json?: boolean;
}

export const doctorSpec: CommandSpec<JsonArgs> = {
  name: "doctor",
  describe: "check this host for what banger needs, with a fix for each problem",
  examples: ["banger doctor", "banger doctor --json | jq '.checks[] | select(.status != \"ok\")'"],
  notes: `Exits 0 when no check fails, ${EXIT_FAILURE} when one does.`,
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const { checks } = await (await ctx.client()).call("daemon.doctor", {});
    const exitCode = checks.some((check) => check.status === "fail") ? EXIT_FAILURE : 0;
    if (args.json) return { output: json({ checks }), exitCode };
    let output = formatTable(
      ["check", "status", "detail"],
      checks.map((c) => [c.name, c.status, c.detail]),
    );
    const hints = checks.filter((c) => c.status !== "ok" && c.hint);
    if (hints.length > 0)
      output += `\n\nTo fix:\n${hints.map((check) => `  ${check.name}: ${check.hint}`).join("\n")}`;
    return { output, exitCode };
  },
};

export const pingSpec: CommandSpec<JsonArgs> = {
  name: "ping",
  describe: "check that bangerd answers",
  examples: ["banger ping"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const client = await ctx.client();
    const started = performance.now();
    const result = await client.call("daemon.ping", {});
    const ms = performance.now() - started;
    return success(
      args.json ? json({ ...result, roundTripMs: ms }) : `pong from bangerd in ${ms.toFixed(2)} ms`,
    );
  },
};
