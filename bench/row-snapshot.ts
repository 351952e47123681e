/**
 * The snapshot rows, in the bench's one daemon (QEMU, TCG):
 * - "vm-snap": `banger vm run --rm --from SNAP -- true` (restore, clone
 *   identity, exec, delete) next to a cold `banger vm run --rm -- true`,
 *   alternating. SNAP is taken once, untimed, from a running VM.
 * - "vm-fork": `banger vm fork SRC NEW --count 8` next to `--count 1`,
 *   alternating; the clones and their snapshot are deleted untimed after
 *   each. The notes give the state's and a clone's disk bytes.
 * - "vm-suspend": `banger vm resume SRC` of the suspended source next to
 *   `banger vm start SRC` (a cold boot of the same, stopped VM),
 *   alternating; the suspend before each resume and the stop before each
 *   start are untimed, the suspends' times go in the notes with both per
 *   GiB of guest RAM.
 */
import { bangerChecked } from "./env.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { alternate } from "./stats.ts";

export const VM_SNAP_ROW = {
  id: "vm-snap",
  benchmark: "vm run --rm --from SNAP -- true vs cold",
  unit: "ms",
  goal: "≤0.15x",
} as const;
export const VM_FORK_ROW = {
  id: "vm-fork",
  benchmark: "vm fork SRC NEW --count 8 vs --count 1",
  unit: "ms",
  goal: "≤2x",
} as const;

export const VM_SUSPEND_ROW = {
  id: "vm-suspend",
  benchmark: "vm resume of a suspended VM vs vm start (cold)",
  unit: "ms",
  goal: "-",
} as const;

const RUNS = 5;
const FORK_RUNS = 3;
const BUDGET_MS = 240_000;
const VM_TIMEOUT_MS = 300_000;
const SOURCE = "bench-snap-src";
const SNAPSHOT = "bench-snap";

/** Boots the source VM and takes the snapshot both rows use (untimed); returns its sizes for the notes. */
async function prepare(ctx: VmContext): Promise<{ stateBytes: number; diskBytes: number }> {
  await bangerChecked(ctx.env, ["vm", "create", SOURCE], VM_TIMEOUT_MS);
  const taken = await bangerChecked(ctx.env, ["vm", "snapshot", SOURCE, SNAPSHOT, "--json"], VM_TIMEOUT_MS);
  const info = JSON.parse(taken.stdout) as { memoryBytes: number; diskBytes: number };
  return { stateBytes: info.memoryBytes, diskBytes: info.diskBytes };
}

export async function benchSnapshotRows(ctx: VmContext, selected: ReadonlySet<string>): Promise<RowResult[]> {
  const sizes = await prepare(ctx);
  const mib = (bytes: number) => (bytes / 1024 ** 2).toFixed(1);
  const results: RowResult[] = [];
  try {
    if (selected.has(VM_SNAP_ROW.id)) {
      const fromSnapshot = async () =>
        (await bangerChecked(ctx.env, ["vm", "run", "--rm", "--from", SNAPSHOT, "--", "true"], VM_TIMEOUT_MS))
          .ms;
      const cold = async () =>
        (await bangerChecked(ctx.env, ["vm", "run", "--rm", "--", "true"], VM_TIMEOUT_MS)).ms;
      ctx.log("vm-snap: warm-up restore (not timed)");
      await fromSnapshot();
      const samples = await alternate({
        runs: RUNS,
        budgetMs: BUDGET_MS,
        signal: ctx.env.signal,
        banger: fromSnapshot,
        baseline: cold,
        afterEach: (run, snapMs, coldMs) =>
          ctx.log(`vm-snap: run ${run}: from snapshot ${snapMs} ms, cold ${coldMs} ms`),
      });
      results.push(
        pairedRow(VM_SNAP_ROW, samples, [
          `${samples.banger.length} runs each, alternating, one daemon; CLI spawn to exit; ${ctx.defaults.cpus} vCPU, ${ctx.defaults.memoryMib} MiB, image ${ctx.image.name}`,
          `banger = restore from ${SNAPSHOT} (QEMU -incoming fd:3 of a ${mib(sizes.stateBytes)} MiB state, qcow2 overlay over the snapshot's ${mib(sizes.diskBytes)} MiB disk), clone identity through the guest agent, auth sync skipped (the clone holds its source's material, by its inherited record), exec, delete; baseline = cold boot of the same image, with its auth sync`,
        ]),
      );
    }
    if (selected.has(VM_FORK_ROW.id)) {
      let round = 0;
      const fork = (count: number) => async () => {
        const name = `bf${++round}`;
        const { ms } = await bangerChecked(
          ctx.env,
          ["vm", "fork", SOURCE, name, "--count", String(count), "--json"],
          VM_TIMEOUT_MS,
        );
        const names = count === 1 ? [name] : Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
        await bangerChecked(ctx.env, ["vm", "delete", "--force", ...names], VM_TIMEOUT_MS);
        await bangerChecked(ctx.env, ["snapshot", "rm", `fork-${name}`], VM_TIMEOUT_MS);
        return ms;
      };
      const samples = await alternate({
        runs: FORK_RUNS,
        budgetMs: BUDGET_MS,
        signal: ctx.env.signal,
        banger: fork(8),
        baseline: fork(1),
        afterEach: (run, eightMs, oneMs) =>
          ctx.log(`vm-fork: run ${run}: 8 clones ${eightMs} ms, 1 clone ${oneMs} ms`),
      });
      results.push(
        pairedRow(VM_FORK_ROW, samples, [
          `${samples.banger.length} runs each, alternating; each: one snapshot of the running ${SOURCE} then its clones restored at once (CLI spawn to exit); clones and snapshot deleted untimed`,
        ]),
      );
    }
    if (selected.has(VM_SUSPEND_ROW.id)) results.push(await benchSuspend(ctx, sizes.stateBytes));
  } finally {
    await bangerChecked(ctx.env, ["vm", "delete", "--force", SOURCE], VM_TIMEOUT_MS).catch(() => undefined);
    await bangerChecked(ctx.env, ["snapshot", "rm", SNAPSHOT], VM_TIMEOUT_MS).catch(() => undefined);
  }
  return results;
}

/** Resume from disk against a cold start of the same VM; suspend times in the notes. */
async function benchSuspend(ctx: VmContext, stateBytes: number): Promise<RowResult> {
  const suspendMs: number[] = [];
  const resume = async () => {
    suspendMs.push((await bangerChecked(ctx.env, ["vm", "suspend", SOURCE], VM_TIMEOUT_MS)).ms);
    return (await bangerChecked(ctx.env, ["vm", "resume", SOURCE], VM_TIMEOUT_MS)).ms;
  };
  const coldStart = async () => {
    await bangerChecked(ctx.env, ["vm", "stop", SOURCE], VM_TIMEOUT_MS);
    return (await bangerChecked(ctx.env, ["vm", "start", SOURCE], VM_TIMEOUT_MS)).ms;
  };
  const samples = await alternate({
    runs: RUNS,
    budgetMs: BUDGET_MS,
    signal: ctx.env.signal,
    banger: resume,
    baseline: coldStart,
    afterEach: (run, resumeMs, startMs) =>
      ctx.log(
        `vm-suspend: run ${run}: suspend ${suspendMs.at(-1)} ms, resume ${resumeMs} ms, cold start ${startMs} ms`,
      ),
  });
  const gib = ctx.defaults.memoryMib / 1024;
  const median = (values: readonly number[]) =>
    Math.round([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0);
  const perGib = (ms: number) => Math.round(ms / gib);
  return pairedRow(VM_SUSPEND_ROW, samples, [
    `${samples.banger.length} runs each, alternating, on ${SOURCE} (${ctx.defaults.memoryMib} MiB); CLI spawn to exit`,
    `suspend p50 ${median(suspendMs)} ms (${perGib(median(suspendMs))} ms per GiB of guest RAM), resume p50 ${median(samples.banger)} ms (${perGib(median(samples.banger))} ms per GiB); memory file about ${(stateBytes / 1024 ** 2).toFixed(1)} MiB (the snapshot's state of the same VM)`,
  ]);
}
