/**
 * The rows with real guests, all inside the bench's network namespace:
 * - "vm-cold": `banger vm run --rm -- true` next to the same QEMU boot done
 *   by hand (bench/vm-worker.ts), alternating runs.
 * - "vm-warm": `banger vm exec NAME -- true` on a running VM next to
 *   bare `ssh -S CONTROL … true` over a ControlMaster the worker opens.
 * - "vm-cat": 100 MB of stdout, `vm exec NAME -- head -c … /dev/zero`
 *   next to the same command over `ssh -S CONTROL`.
 * - "rss": bangerd's resident memory with 0 and with 2 running VMs.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ImageInfo, VmInfo } from "../src/protocol/index.ts";
import { type BenchEnv, bangerChecked, type Daemon, hostTscKhz } from "./env.ts";
import { readRssKiB, sleep } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate, median, summarize } from "./stats.ts";
import { startWorker, type VmWorker } from "./worker-client.ts";

export const VM_COLD_ROW = {
  id: "vm-cold",
  benchmark: "vm run --rm -- true (cold)",
  unit: "ms",
  goal: "≤0.9x",
} as const;
export const VM_WARM_ROW = {
  id: "vm-warm",
  benchmark: "vm exec N -- true (running VM)",
  unit: "ms",
  goal: "≤1.0x",
} as const;
export const VM_CAT_ROW = {
  id: "vm-cat",
  benchmark: "100 MB of stdout from vm exec (time)",
  unit: "ms",
  goal: "≤1.0x",
} as const;
const CAT_BYTES = 100 * 1024 * 1024;
const CAT_RUNS = 3;
export const RSS_ROW = {
  id: "rss",
  benchmark: "bangerd RSS growth per running VM",
  unit: "MiB",
  goal: "<2 MiB",
} as const;

const COLD_RUNS = 5;
const COLD_BUDGET_MS = 180_000;
const WARM_RUNS = 10;
const WARM_BUDGET_MS = 60_000;
const VM_TIMEOUT_MS = 180_000;
const RSS_SAMPLES = 5;

export interface VmContext {
  env: BenchEnv;
  daemon: Daemon;
  log: (line: string) => void;
  onPid: (pid: number) => void;
  qemuBinary: string;
  /** Sizing and image of the daemon's default VM, read from a warm-up VM. */
  defaults: VmInfo;
  image: ImageInfo;
}

/**
 * Creates and deletes one VM before anything is timed: the daemon copies the
 * cached image into its store, probes the accelerator, and the rootfs lands
 * in the page cache.
 */
export async function prepareVms(base: Omit<VmContext, "defaults" | "image">): Promise<VmContext> {
  base.log("vm: warm-up VM (copies the cached image into the store; not timed)");
  // QEMU by name: the warm-up must also probe QEMU's accelerator, whatever "auto" picks on this host.
  const created = await bangerChecked(
    base.env,
    ["vm", "create", "bench-prep", "--vmm", "qemu", "--json"],
    300_000,
  );
  const defaults = JSON.parse(created.stdout) as VmInfo;
  await bangerChecked(base.env, ["vm", "delete", "--force", "bench-prep"], 60_000);
  const client = await base.daemon.connect();
  try {
    const image = await client.call("image.show", { name: defaults.image });
    return { ...base, defaults, image };
  } finally {
    client.close();
  }
}

export async function startBaselineWorker(ctx: VmContext): Promise<VmWorker> {
  const sshDir = ctx.env.layout.sshDir;
  return startWorker({
    env: ctx.env,
    onPid: ctx.onPid,
    config: {
      dir: ctx.env.home,
      kernel: ctx.image.kernel,
      initrd: ctx.image.initrd,
      rootfs: ctx.image.rootfs,
      qemuBinary: ctx.qemuBinary,
      privateKey: join(sshDir, "id_ed25519"),
      publicKey: (await readFile(join(sshDir, "id_ed25519.pub"), "utf8")).trim(),
      tscKhz: await hostTscKhz(),
      cpus: ctx.defaults.cpus,
      memoryMib: ctx.defaults.memoryMib,
      diskBytes: ctx.defaults.diskGib * 1024 ** 3,
    },
  });
}

export async function benchVmCold(ctx: VmContext, worker: VmWorker): Promise<RowResult> {
  ctx.log(`vm-cold: ${COLD_RUNS} boots each, alternating (about 15 s per pair under TCG)`);
  const phases: Record<string, number[]> = {};
  const samples = await alternate({
    runs: COLD_RUNS,
    budgetMs: COLD_BUDGET_MS,
    signal: ctx.env.signal,
    banger: async () => (await bangerChecked(ctx.env, ["vm", "run", "--rm", "--", "true"], VM_TIMEOUT_MS)).ms,
    baseline: async () => {
      const reply = await worker.request({ op: "cold" }, VM_TIMEOUT_MS);
      for (const [name, ms] of Object.entries(reply.phases as Record<string, number>)) {
        phases[name] = [...(phases[name] ?? []), ms];
      }
      return reply.ms as number;
    },
    afterEach: (run, bangerMs, baselineMs) =>
      ctx.log(`vm-cold: run ${run}: banger ${fmt(bangerMs)}, baseline ${fmt(baselineMs)}`),
  });
  const phaseText = Object.entries(phases)
    .map(([name, values]) => `${name} ${Math.round(median(values))} ms`)
    .join(", ");
  const notes = [
    `${samples.banger.length} runs each; banger = CLI spawn to exit (create, boot, guest agent hello, exec, delete); baseline = same QEMU argv by hand (boot, SSH banner, host key pin, ssh true), ${ctx.defaults.cpus} vCPU, ${ctx.defaults.memoryMib} MiB, TCG`,
    `baseline phases (p50): ${phaseText}`,
  ];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${COLD_BUDGET_MS / 1000} s cap`);
  return pairedRow(VM_COLD_ROW, samples, notes);
}

export async function benchVmWarm(ctx: VmContext, worker: VmWorker): Promise<RowResult[]> {
  const name = "bench-warm";
  ctx.log(`vm-warm: creating VM ${name} (not timed)`);
  const vm = JSON.parse(
    (await bangerChecked(ctx.env, ["vm", "create", name, "--json"], VM_TIMEOUT_MS)).stdout,
  ) as VmInfo;
  await using stack = new AsyncDisposableStack();
  stack.defer(async () => {
    await bangerChecked(ctx.env, ["vm", "delete", "--force", name], 60_000);
  });
  await worker.request(
    { op: "master-open", ip: vm.guestIp, knownHostsFile: join(vm.dir, "known_hosts") },
    30_000,
  );
  stack.defer(async () => {
    await worker.request({ op: "master-close" }, 30_000);
  });
  const exec = ["vm", "exec", name, "--"];
  const bangerOnce = async () => (await bangerChecked(ctx.env, [...exec, "true"], 60_000)).ms;
  const baselineOnce = async () => (await worker.request({ op: "mux-exec" }, 60_000)).ms as number;
  await bangerOnce();
  await baselineOnce();
  ctx.log(`vm-warm: ${WARM_RUNS} runs each, alternating`);
  const samples = await alternate({
    runs: WARM_RUNS,
    budgetMs: WARM_BUDGET_MS,
    signal: ctx.env.signal,
    banger: bangerOnce,
    baseline: baselineOnce,
  });
  const notes = [
    `${samples.banger.length} runs each; banger = \`banger ${exec.join(" ")} true\`, CLI spawn to exit (RPC, daemon, guest agent); baseline = ssh -S CONTROL -o ControlMaster=no root@${vm.guestIp} true, spawned inside the netns`,
  ];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${WARM_BUDGET_MS / 1000} s cap`);
  const catArgv = ["head", "-c", String(CAT_BYTES), "/dev/zero"];
  const catOnce = async () => {
    const result = await bangerChecked(ctx.env, [...exec, ...catArgv], 120_000, { discardStdout: true });
    if (result.stdoutBytes !== CAT_BYTES)
      throw new Error(`vm exec cat: ${result.stdoutBytes} bytes, not ${CAT_BYTES}`);
    return result.ms;
  };
  const sshCatOnce = async () =>
    (await worker.request({ op: "mux-cat", bytes: CAT_BYTES }, 120_000)).ms as number;
  ctx.log(`vm-cat: ${CAT_RUNS} runs each of 100 MB, alternating`);
  const cat = await alternate({
    runs: CAT_RUNS,
    budgetMs: 120_000,
    signal: ctx.env.signal,
    banger: catOnce,
    baseline: sshCatOnce,
  });
  const mbps = (ms: number[]) => (CAT_BYTES / 1e6 / (median(ms) / 1000)).toFixed(0);
  const catNotes = [
    `${cat.banger.length} runs each; \`${catArgv.join(" ")}\` in the guest, stdout counted and dropped by the caller; banger ${mbps(cat.banger)} MB/s, ssh -S CONTROL ${mbps(cat.baseline)} MB/s; a ratio ≤1.0x is ≥1.0x the throughput`,
  ];
  return [pairedRow(VM_WARM_ROW, samples, notes), pairedRow(VM_CAT_ROW, cat, catNotes)];
}

export async function benchRss(ctx: VmContext): Promise<RowResult> {
  const pid = Number((await readFile(ctx.env.layout.pidFile, "utf8")).trim());
  const client = await ctx.daemon.connect();
  try {
    const { vms } = await client.call("vm.list", {});
    if (vms.length > 0)
      throw new Error(`expected no VMs before measuring, found ${vms.map((v) => v.name).join(", ")}`);
  } finally {
    client.close();
  }
  const sample = async () => {
    const values: number[] = [];
    for (let i = 0; i < RSS_SAMPLES; i++) {
      values.push(await readRssKiB(pid));
      await sleep(200);
    }
    return median(values);
  };
  const idleKiB = await sample();
  const names = ["bench-rss-1", "bench-rss-2"];
  await using stack = new AsyncDisposableStack();
  for (const name of names) {
    ctx.log(`rss: creating VM ${name}`);
    await bangerChecked(ctx.env, ["vm", "create", name], VM_TIMEOUT_MS);
    stack.defer(async () => {
      await bangerChecked(ctx.env, ["vm", "delete", "--force", name], 60_000);
    });
  }
  await sleep(1000);
  const loadedKiB = await sample();
  const perVmMiB = (loadedKiB - idleKiB) / names.length / 1024;
  return {
    ...RSS_ROW,
    banger: summarize([perVmMiB]),
    baseline: null,
    statistic: "p50",
    single: true,
    skipped: null,
    notes: [
      `bangerd pid ${pid} VmRSS (median of ${RSS_SAMPLES} samples): ${(idleKiB / 1024).toFixed(1)} MiB with 0 VMs, ${(loadedKiB / 1024).toFixed(1)} MiB with ${names.length} running VMs`,
    ],
  };
}

function fmt(ms: number | undefined): string {
  return ms === undefined ? "-" : `${(ms / 1000).toFixed(2)} s`;
}
