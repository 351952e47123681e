/**
 * `banger daemon start|stop|status|logs`, `banger ping`, `banger doctor`.
 */
import { open, readFile, stat } from "node:fs/promises";
import type { Command } from "commander";
import { sleep } from "../../core/async/index.ts";
import { BangerError, ErrorCode, type ResultOf } from "../../protocol/index.ts";
import { waitForPidGone } from "../connect.ts";
import { type CliContext, printJson } from "../context.ts";
import { formatTable } from "../render/table.ts";

export function registerDaemonCommands(program: Command, ctx: CliContext): void {
  const daemon = program
    .command("daemon")
    .description("manage bangerd, the daemon that owns VMs, images and networking");

  daemon
    .command("start")
    .description("start bangerd in the background if it is not running")
    .addHelpText(
      "after",
      "\nExamples:\n  banger daemon start\n  BANGER_NETNS=lab banger daemon start   # run it inside network namespace 'lab'",
    )
    .action(async () => {
      ctx.setAutostart(true);
      const client = await ctx.client();
      const status = await client.call("daemon.status", {});
      ctx.stdout.write(`bangerd is running (pid ${status.pid}, socket ${status.socket})\n`);
    });

  daemon
    .command("stop")
    .description("stop bangerd; running VMs keep running unless --stop-vms")
    .option("--stop-vms", "stop every running VM first")
    .addHelpText("after", "\nExamples:\n  banger daemon stop\n  banger daemon stop --stop-vms")
    .action(async (options: { stopVms?: boolean }) => {
      ctx.setAutostart(false);
      let client: Awaited<ReturnType<CliContext["client"]>>;
      try {
        client = await ctx.client();
      } catch (error) {
        if (error instanceof BangerError && error.code === ErrorCode.DAEMON_UNAVAILABLE) {
          ctx.stdout.write("bangerd is not running\n");
          return;
        }
        throw error;
      }
      const status = await client.call("daemon.status", {});
      const result = await client.call("daemon.shutdown", { stopVms: options.stopVms === true });
      await waitForPidGone(status.pid, 15_000);
      for (const name of result.stoppedVms) ctx.stdout.write(`stopped VM ${name}\n`);
      ctx.stdout.write(`bangerd stopped (pid ${status.pid})\n`);
    });

  daemon
    .command("status")
    .description("show whether bangerd runs, and its pid, socket and VM counts")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger daemon status\n  banger daemon status --json")
    .action(async (options: { json?: boolean }) => {
      ctx.setAutostart(false);
      let status: ResultOf<"daemon.status">;
      try {
        status = await (await ctx.client()).call("daemon.status", {});
      } catch (error) {
        if (error instanceof BangerError && error.code === ErrorCode.DAEMON_UNAVAILABLE) {
          if (options.json) printJson(ctx, { running: false, socket: ctx.layout.socketFile });
          else ctx.stdout.write(`bangerd is not running (socket ${ctx.layout.socketFile})\n`);
          process.exitCode = 10;
          return;
        }
        throw error;
      }
      if (options.json) {
        printJson(ctx, { running: true, ...status });
        return;
      }
      const s = status;
      ctx.stdout.write(
        `${formatTable(
          ["field", "value"],
          [
            ["running", "yes"],
            ["pid", String(s.pid)],
            ["version", `${s.build} (protocol ${s.protocol}, node ${s.node})`],
            ["uptime", `${Math.round(s.uptimeMs / 1000)} s`],
            ["socket", s.socket],
            ["state", s.stateDir],
            ["netns", s.netns ?? "(host)"],
            ["vms", `${s.vms.running} running, ${s.vms.total} total`],
          ],
        )}\n`,
      );
    });

  daemon
    .command("logs")
    .description("show the daemon's JSON-lines log")
    .option("-f, --follow", "keep printing new lines")
    .option("-n, --lines <n>", "lines from the end to show", "100")
    .addHelpText("after", "\nExamples:\n  banger daemon logs -n 20\n  banger daemon logs -f")
    .action(async (options: { follow?: boolean; lines: string }) => {
      const count = Number.parseInt(options.lines, 10);
      if (!Number.isInteger(count) || count < 0) {
        throw new BangerError(
          ErrorCode.INVALID_PARAMS,
          `--lines must be a whole number, not '${options.lines}'`,
        );
      }
      await printLog(ctx, ctx.layout.daemonLog, count, options.follow === true);
    });

  program
    .command("ping")
    .description("check that bangerd answers")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger ping")
    .action(async (options: { json?: boolean }) => {
      const client = await ctx.client();
      const started = performance.now();
      const result = await client.call("daemon.ping", {});
      const ms = performance.now() - started;
      if (options.json) printJson(ctx, { ...result, roundTripMs: ms });
      else ctx.stdout.write(`pong from bangerd in ${ms.toFixed(2)} ms\n`);
    });

  program
    .command("doctor")
    .description("check this host for what banger needs, with a fix for each problem")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger doctor\n  banger doctor --json | jq '.checks[] | select(.status != \"ok\")'",
    )
    .action(async (options: { json?: boolean }) => {
      const client = await ctx.client();
      const { checks } = await client.call("daemon.doctor", {});
      if (options.json) printJson(ctx, { checks });
      else {
        ctx.stdout.write(
          `${formatTable(
            ["check", "status", "detail"],
            checks.map((c) => [c.name, c.status, c.detail]),
          )}\n`,
        );
        const hints = checks.filter((c) => c.status !== "ok" && c.hint);
        if (hints.length > 0) {
          ctx.stdout.write("\nTo fix:\n");
          for (const check of hints) ctx.stdout.write(`  ${check.name}: ${check.hint}\n`);
        }
      }
      if (checks.some((check) => check.status === "fail")) process.exitCode = 1;
    });
}

/** Prints the last `count` lines of a file, then follows it if asked. */
async function printLog(ctx: CliContext, file: string, count: number, follow: boolean): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    if (!follow) {
      ctx.stderr.write(`no log yet at ${file}\n`);
      return;
    }
    text = "";
  }
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const shown = count === 0 ? [] : lines.slice(-count);
  if (shown.length > 0) ctx.stdout.write(`${shown.join("\n")}\n`);
  if (!follow) return;
  let offset = Buffer.byteLength(text);
  for (;;) {
    await sleep(250);
    const size = await stat(file)
      .then((s) => s.size)
      .catch(() => offset);
    if (size < offset) offset = 0;
    if (size === offset) continue;
    const handle = await open(file, "r");
    try {
      const buffer = Buffer.alloc(size - offset);
      await handle.read(buffer, 0, buffer.length, offset);
      ctx.stdout.write(buffer);
      offset = size;
    } finally {
      await handle.close();
    }
  }
}
