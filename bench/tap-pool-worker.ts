/**
 * Run inside the tap-pool row's namespace, as the daemon runs inside its
 * own (so `ip` is spawned directly): `node tap-pool-worker.ts RUNS` makes
 * the bridge and a warm pool of 4, then alternates RUNS times between a
 * start's tap from the pool (`TapPool.createTap`) and one made without a
 * pool (`HostNetwork.createTap`), each tap deleted and the pool refilled
 * untimed; prints {"banger": [ms...], "baseline": [ms...]} and removes
 * everything it made.
 */
import { performance } from "node:perf_hooks";
import { silentLogger } from "../src/core/log/index.ts";
import { createTapPool } from "../src/daemon/network/index.ts";
import { createHostNetwork } from "../src/sys/network/index.ts";
import { createProcessRunner } from "../src/sys/runner/index.ts";

const runs = Number(process.argv[2] ?? "20");
const network = createHostNetwork({
  runner: createProcessRunner(),
  logger: silentLogger,
  bridge: "benchpool0",
  subnet: "10.79.0.0/24",
});
const pool = createTapPool({
  size: 4,
  host: network,
  anyVm: () => true,
  anyVmRunning: () => false,
  logger: silentLogger,
});
await using stack = new AsyncDisposableStack();
stack.defer(() => network.teardownBridge());
stack.defer(() => pool.teardown());
await network.ensureBridge();
await pool.ensure(new AbortController().signal);
await pool.idle();

let serial = 0;
const timed = async (make: (tap: string) => Promise<void>) => {
  const tap = `bgr-bench${serial++}`;
  const started = performance.now();
  await make(tap);
  const elapsed = performance.now() - started;
  await network.deleteTap(tap);
  await pool.idle();
  return elapsed;
};
const warm = (tap: string) => pool.createTap(tap);
const cold = (tap: string) => network.createTap(tap);
await timed(warm);
await timed(cold);
const samples = { banger: [] as number[], baseline: [] as number[] };
for (let run = 0; run < runs; run++) {
  samples.banger.push(await timed(warm));
  samples.baseline.push(await timed(cold));
}
process.stdout.write(`${JSON.stringify(samples)}\n`);
