/**
 * Row "publish": 16 MiB echoed both ways through a published port (the
 * daemon's relay on 127.0.0.1 in the bench namespace) against the same
 * bytes sent straight to the guest's address, from the same namespace, to
 * the same busybox echo server in the guest; alternating, 5 runs each.
 */
import { join } from "node:path";
import type { VmInfo } from "../src/protocol/index.ts";
import { bangerChecked } from "./env.ts";
import { run } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { alternate } from "./stats.ts";

export const PUBLISH_ROW = {
  id: "publish",
  benchmark: "16 MiB echo via published port",
  unit: "ms",
  goal: "≤1.25x",
} as const;

const BYTES = 16 * 1024 * 1024;
const HOST_PORT = 18090;

export async function benchPublish(ctx: VmContext): Promise<RowResult> {
  const name = "bench-publish";
  ctx.log(`publish: creating VM ${name} with --publish ${HOST_PORT}:8080 (not timed)`);
  const vm = JSON.parse(
    (
      await bangerChecked(
        ctx.env,
        ["vm", "create", name, "--publish", `${HOST_PORT}:8080`, "--json"],
        300_000,
      )
    ).stdout,
  ) as VmInfo;
  await using stack = new AsyncDisposableStack();
  stack.defer(async () => void (await bangerChecked(ctx.env, ["vm", "delete", "--force", name], 60_000)));
  await bangerChecked(
    ctx.env,
    [
      "vm",
      "run",
      "--name",
      name,
      "--",
      "sh",
      "-c",
      "setsid busybox nc -ll -p 8080 -e /bin/cat </dev/null >/dev/null 2>&1 & sleep 0.5",
    ],
    60_000,
  );
  const once = async (host: string, port: number) => {
    const result = await run(
      [
        "ip",
        "netns",
        "exec",
        ctx.env.netns as string,
        ctx.env.node,
        join(ctx.env.root, "bench", "echo-throughput.ts"),
        host,
        String(port),
        String(BYTES),
      ],
      { timeoutMs: 90_000 },
    );
    if (result.code !== 0) throw new Error(`echo through ${host}:${port} failed`);
    return Number(result.stdout.trim());
  };
  await once("127.0.0.1", HOST_PORT);
  await once(vm.guestIp, 8080);
  const samples = await alternate({
    runs: 5,
    budgetMs: 120_000,
    signal: ctx.env.signal,
    banger: () => once("127.0.0.1", HOST_PORT),
    baseline: () => once(vm.guestIp, 8080),
  });
  return pairedRow(PUBLISH_ROW, samples, [
    `${samples.banger.length} runs each of ${BYTES / 1024 / 1024} MiB out and back; banger = 127.0.0.1:${HOST_PORT} (the daemon's relay), baseline = ${vm.guestIp}:8080 directly; same echo server (busybox nc -e cat) in a TCG guest, client in the bench namespace`,
  ]);
}
