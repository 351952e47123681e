/**
 * "vm-pool": `banger vm run --rm -- true` served from a warm pool (`[[pool]]
 * count = 2` of the default image) next to the same command with
 * `--cpus 1`, which is the default sizing but a request of its own, so the
 * pool does not serve it: a cold boot of the same VM shape. The row runs its
 * own daemon, in its own namespace and BANGER_HOME, because a pool fills in
 * the background and would serve (and disturb) every other row. Before each
 * pooled run the bench waits, untimed, for the pool to be full again.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type BenchEnv,
  bangerChecked,
  createNetns,
  deleteNetns,
  makeEnv,
  startDaemon,
  stopDaemon,
} from "./env.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate } from "./stats.ts";

export const VM_POOL_ROW = {
  id: "vm-pool",
  benchmark: "vm run --rm -- true from a warm pool vs cold",
  unit: "ms",
  goal: "≤0.1x",
} as const;

const RUNS = 5;
const BUDGET_MS = 240_000;
const VM_TIMEOUT_MS = 300_000;
const FILL_TIMEOUT_MS = 240_000;

async function untilFull(env: BenchEnv): Promise<void> {
  const deadline = Date.now() + FILL_TIMEOUT_MS;
  for (;;) {
    const listed = await bangerChecked(env, ["pool", "ls", "--json"], VM_TIMEOUT_MS);
    const [pool] = JSON.parse(listed.stdout) as { ready: number; target: number }[];
    if (pool && pool.ready >= pool.target) return;
    if (Date.now() > deadline || env.signal.aborted) throw new Error("the pool did not fill in time");
    await sleep(250);
  }
}

export async function benchPool(options: {
  root: string;
  signal: AbortSignal;
  log: (line: string) => void;
  onPid: (pid: number) => void;
}): Promise<RowResult> {
  const { log } = options;
  await using stack = new AsyncDisposableStack();
  const home = await mkdtemp("/tmp/bbp-");
  stack.defer(() => rm(home, { recursive: true, force: true }));
  const netns = `banger-pool-${process.pid}`;
  await createNetns(netns);
  stack.defer(() => deleteNetns(netns, log));
  const env = makeEnv({ root: options.root, home, netns, signal: options.signal });
  await mkdir(join(home, "config"), { recursive: true });
  await writeFile(join(home, "config", "config.toml"), "[[pool]]\ncount = 2\n");
  log(`vm-pool: starting its own bangerd (BANGER_HOME=${home}, netns ${netns})`);
  const daemon = await startDaemon(env, options.onPid);
  stack.defer(() => stopDaemon(env, daemon, log));
  await untilFull(env);
  const pooled = async () => {
    await untilFull(env);
    return (await bangerChecked(env, ["vm", "run", "--rm", "--", "true"], VM_TIMEOUT_MS)).ms;
  };
  const cold = async () =>
    (await bangerChecked(env, ["vm", "run", "--rm", "--cpus", "1", "--", "true"], VM_TIMEOUT_MS)).ms;
  const samples = await alternate({
    runs: RUNS,
    budgetMs: BUDGET_MS,
    signal: options.signal,
    banger: pooled,
    baseline: cold,
    afterEach: (run, pooledMs, coldMs) =>
      log(`vm-pool: run ${run}: pooled ${pooledMs} ms, cold ${coldMs} ms`),
  });
  return pairedRow(VM_POOL_ROW, samples, [
    `${samples.banger.length} runs each, alternating, in the row's own daemon and namespace; CLI spawn to exit; the pool refilled (untimed) before each pooled run`,
    "banger = a paused member taken: renamed, resumed, hostname set through the guest agent, auth sync, exec, delete; baseline = `--cpus 1` (the default sizing, not served by the pool): a cold boot",
  ]);
}
