/**
 * Row "publish": 32 MiB echoed both ways through a published port (the
 * daemon's relay on 127.0.0.1 in the bench namespace) against the same
 * bytes sent straight to the guest's address, from the same namespace, to
 * the same busybox echo server in the guest. One client process runs every
 * round (2 untimed, then 9), taking turns and swapping the order each
 * round, so neither side pays a cold client or always goes first.
 */
import { join } from "node:path";
import type { VmInfo } from "../src/protocol/index.ts";
import { bangerChecked } from "./env.ts";
import { run } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { median } from "./stats.ts";

export const PUBLISH_ROW = {
  id: "publish",
  benchmark: "32 MiB echo via published port",
  unit: "ms",
  goal: "≤1.25x",
} as const;

const MiB = 1024 * 1024;
const BYTES = 32 * MiB;
const WARMUP = 2;
const ROUNDS = 9;
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
      "exec",
      name,
      "--",
      "sh",
      "-c",
      "setsid busybox nc -ll -p 8080 -e /bin/cat </dev/null >/dev/null 2>&1 & sleep 0.5",
    ],
    60_000,
  );
  const relayed = `127.0.0.1:${HOST_PORT}`;
  const direct = `${vm.guestIp}:8080`;
  ctx.log(
    `publish: ${WARMUP} untimed and ${ROUNDS} timed rounds of ${BYTES / MiB} MiB each way, one client process`,
  );
  const result = await run(
    [
      "ip",
      "netns",
      "exec",
      ctx.env.netns as string,
      ctx.env.node,
      join(ctx.env.root, "bench", "echo-throughput.ts"),
      String(BYTES),
      String(WARMUP),
      String(ROUNDS),
      relayed,
      direct,
    ],
    { timeoutMs: 900_000, signal: ctx.env.signal },
  );
  if (result.code !== 0)
    throw new Error(`echo throughput failed: ${result.stderr.trim().split("\n").at(-1)}`);
  const samples = JSON.parse(result.stdout) as Record<string, number[]>;
  const banger = samples[relayed] ?? [];
  const baseline = samples[direct] ?? [];
  const rate = (ms: number) => `${((2 * BYTES) / MiB / (ms / 1000)).toFixed(1)} MiB/s`;
  const [bangerP50, baselineP50] = [median(banger), median(baseline)];
  return pairedRow(PUBLISH_ROW, { banger, baseline }, [
    `${banger.length} rounds each (after ${WARMUP} untimed) of ${BYTES / MiB} MiB out and back, one warm client process taking turns (order swapped every round); banger = ${relayed} (the daemon's relay), baseline = ${direct} directly; same echo server (busybox nc -e cat) in a TCG guest, client in the bench namespace`,
    `throughput (p50, both directions): banger ${rate(bangerP50)}, direct ${rate(baselineP50)}, ratio ${(baselineP50 / bangerP50).toFixed(2)}x (goal ≥ 0.8x)`,
  ]);
}
