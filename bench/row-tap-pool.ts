/**
 * Row "tap-pool": what a warm TAP pool saves a VM start. The only step of
 * a start the pool changes is getting the VM's tap onto the bridge and up,
 * so that step is timed, with the daemon's own modules and real `ip`, by a
 * worker inside a namespace of the row's own (bench/tap-pool-worker.ts;
 * its pool taps must not meet the bench daemon's): banger =
 * `TapPool.createTap` with a warm pool (one rename-attach-and-up),
 * baseline = `HostNetwork.createTap`, what a start does without a pool
 * (`ip tuntap add`, then attach and up). Alternating; each tap deleted and
 * the pool refilled untimed.
 */
import { join } from "node:path";
import { type BenchEnv, createNetns, deleteNetns, isRoot } from "./env.ts";
import { run } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";

export const TAP_POOL_ROW = {
  id: "tap-pool",
  benchmark: "VM start's tap, warm pool (saving in notes)",
  unit: "ms",
  goal: "<1x",
} as const;

const RUNS = 20;

export function tapPoolSkipReason(): string | null {
  return isRoot() ? null : "needs root (a namespace with a bridge and taps)";
}

export async function benchTapPool(options: {
  env: BenchEnv;
  log: (line: string) => void;
}): Promise<RowResult> {
  const { env } = options;
  const netns = `banger-bench-pool-${process.pid}`;
  await createNetns(netns);
  await using stack = new AsyncDisposableStack();
  stack.defer(() => deleteNetns(netns, options.log));
  options.log(`tap-pool: ${RUNS} taps each, claimed from a warm pool and created without one`);
  const result = await run(
    ["ip", "netns", "exec", netns, env.node, join(env.root, "bench", "tap-pool-worker.ts"), String(RUNS)],
    { timeoutMs: 120_000 },
  );
  if (result.code !== 0)
    throw new Error(`tap-pool worker failed: ${result.stderr.trim().split("\n").at(-1)}`);
  const samples = JSON.parse(result.stdout) as { banger: number[]; baseline: number[] };
  const row = pairedRow(TAP_POOL_ROW, samples, []);
  const saving = (row.baseline?.p50 ?? 0) - (row.banger?.p50 ?? 0);
  row.notes.push(
    `${samples.banger.length} starts' tap step each (bench/tap-pool-worker.ts inside a namespace of the row's own, spawning \`ip\` as the daemon does in its namespace); banger = a warm pool of 4 (\`ip link set dev bgp-N name TAP master BRIDGE up\`), baseline = no pool (\`ip tuntap add\` + \`ip link set master up\`); saving per VM start: ${saving.toFixed(1)} ms (p50 difference)`,
  );
  return row;
}
