/** `banger daemon start|stop|status`. */
import { BangerError, ErrorCode, exitStatusFor, type ResultOf } from "../../../protocol/index.ts";
import { waitForPidGone } from "../../connect.ts";
import { formatTable } from "../../render/table.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

/** How long `daemon stop` waits for the daemon's process to be gone. */
const STOP_WAIT_MS = 15_000;

export const startSpec: CommandSpec = {
  name: "start",
  describe: "start bangerd in the background if it is not running",
  examples: [
    "banger daemon start",
    "BANGER_NETNS=lab banger daemon start   # run it inside network namespace 'lab'",
  ],
  async handler(ctx) {
    ctx.setAutostart(true);
    const status = await (await ctx.client()).call("daemon.status", {});
    return success(`bangerd is running (pid ${status.pid}, socket ${status.socket})`);
  },
};

interface StopArgs {
  stopVms?: boolean;
}

export const stopSpec: CommandSpec<StopArgs> = {
  name: "stop",
  describe: "stop bangerd; running VMs keep running unless --stop-vms",
  examples: ["banger daemon stop", "banger daemon stop --stop-vms"],
  options: [{ flags: "--stop-vms", description: "stop every running VM first" }],
  async handler(ctx, args) {
    ctx.setAutostart(false);
    let client: DaemonClient;
    try {
      client = await ctx.client();
    } catch (error) {
      if (isDaemonDown(error)) return success("bangerd is not running");
      throw error;
    }
    const status = await client.call("daemon.status", {});
    const result = await client.call("daemon.shutdown", { stopVms: args.stopVms === true });
    await waitForPidGone(status.pid, STOP_WAIT_MS);
    const lines = result.stoppedVms.map((name) => `stopped VM ${name}`);
    lines.push(`bangerd stopped (pid ${status.pid})`);
    return success(lines.join("\n"));
  },
};

interface StatusArgs {
  json?: boolean;
}

export const statusSpec: CommandSpec<StatusArgs> = {
  name: "status",
  describe: "show whether bangerd runs, and its pid, socket and VM counts",
  examples: ["banger daemon status", "banger daemon status --json"],
  notes: `Exits 0 when bangerd runs, ${exitStatusFor[ErrorCode.DAEMON_UNAVAILABLE]} when it does not.`,
  options: [JSON_OPTION],
  async handler(ctx, args) {
    ctx.setAutostart(false);
    let status: ResultOf<"daemon.status">;
    try {
      status = await (await ctx.client()).call("daemon.status", {});
    } catch (error) {
      if (!isDaemonDown(error)) throw error;
      return {
        output: args.json
          ? json({ running: false, socket: ctx.layout.socketFile })
          : `bangerd is not running (socket ${ctx.layout.socketFile})`,
        exitCode: exitStatusFor[ErrorCode.DAEMON_UNAVAILABLE],
      };
    }
    if (args.json) return success(json({ running: true, ...status }));
    return success(
      formatTable(
        ["field", "value"],
        [
          ["running", "yes"],
          ["pid", String(status.pid)],
          ["version", `${status.build} (protocol ${status.protocol}, node ${status.node})`],
          ["uptime", `${Math.round(status.uptimeMs / 1000)} s`],
          ["socket", status.socket],
          ["state", status.stateDir],
          ["netns", status.netns ?? "(host)"],
          ["vms", `${status.vms.running} running, ${status.vms.total} total`],
        ],
      ),
    );
  },
};

function isDaemonDown(error: unknown): boolean {
  return error instanceof BangerError && error.code === ErrorCode.DAEMON_UNAVAILABLE;
}
