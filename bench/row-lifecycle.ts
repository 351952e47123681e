/**
 * Rows "create-parallel", "reconcile" and "rss-stopped": the VM service's
 * own overhead, without root, taps or guests.
 *
 * - create-parallel: the real VM service on the fake platform
 *   (test/fakes/vm-platform/: real SQLite store and VM files, fake VMM
 *   whose boot takes a fixed time): 8 creates at once against 1 create.
 * - reconcile: `reconcile()` of the real service over 100 VM rows and 100
 *   handles.json files; liveness is the real /proc check the QEMU driver
 *   uses, against live and dead `sleep` processes the bench starts and ends
 *   by pid. Network, guest and disks are fakes (free).
 * - rss-stopped: a real bin/bangerd started on a store holding 100 stopped
 *   VM rows, against one started on a store with none.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { ROOT_DISK_FILES } from "../src/core/disk/index.ts";
import { resolveLayout, vmPaths } from "../src/core/paths/index.ts";
import { macForVmId, tapNameForVmId, type VmHandles, type VmRecord } from "../src/core/vm/index.ts";
import { qemuControlSocket } from "../src/core/vmm/qemu-plan.ts";
import { createVmService, type OpOptions } from "../src/daemon/vm/index.ts";
import { processLiveness, readCmdline, readProcStat } from "../src/sys/proc/index.ts";
import { type ImageRecord, openStore, type Store } from "../src/sys/store/index.ts";
import { createVmFiles } from "../src/sys/vmfiles/index.ts";
import { createFakeVmPlatform } from "../test/fakes/vm-platform/index.ts";
import { type BenchEnv, makeEnv, startDaemon } from "./env.ts";
import { readRssKiB, sleep, stopPid, waitPidGone } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate, median, summarize } from "./stats.ts";

export const CREATE_PARALLEL_ROW = {
  id: "create-parallel",
  benchmark: "8 parallel creates vs 1 (fake VMM, 200 ms boot)",
  unit: "ms",
  goal: "<1.3x",
} as const;

export const RECONCILE_ROW = {
  id: "reconcile",
  benchmark: "daemon reconcile, 100 VMs (50 alive, 50 dead)",
  unit: "ms",
  goal: "<200 ms",
} as const;

export const RSS_STOPPED_ROW = {
  id: "rss-stopped",
  benchmark: "bangerd RSS growth, 100 stopped VMs",
  unit: "MiB",
  goal: "<1 MiB",
} as const;

const BOOT_MS = 200;
const PARALLEL = 8;
const CREATE_ROUNDS = 5;
const CREATE_BUDGET_MS = 60_000;

const RECONCILE_VMS = 100;
const RECONCILE_ALIVE = 50;
const RECONCILE_SAMPLES = 20;
const RECONCILE_WARMUP = 2;

const STOPPED_VMS = 100;
const RSS_ROUNDS = 3;
const RSS_SAMPLES = 5;
/** Time the daemon gets after start and a vm.list before RSS is sampled. */
const RSS_SETTLE_MS = 1000;

const noProgress: OpOptions["progress"] = () => {};

interface RowOptions {
  env: BenchEnv;
  log: (line: string) => void;
  onPid: (pid: number) => void;
}

export async function benchCreateParallel(options: RowOptions): Promise<RowResult> {
  const { env } = options;
  await using platform = createFakeVmPlatform({ bootDelayMs: BOOT_MS, parentDir: env.home });
  const service = createVmService(platform.deps);
  const op: OpOptions = { signal: env.signal, progress: noProgress };
  let round = 0;
  const createAll = async (count: number) => {
    const prefix = `r${round++}`;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: count }, (_, i) => service.create({ name: `${prefix}-${i}` }, op)),
    );
    return performance.now() - started;
  };
  await createAll(1);
  options.log(`create-parallel: ${CREATE_ROUNDS} rounds of ${PARALLEL} at once and 1 alone, alternating`);
  const samples = await alternate({
    runs: CREATE_ROUNDS,
    budgetMs: CREATE_BUDGET_MS,
    signal: env.signal,
    banger: () => createAll(PARALLEL),
    baseline: () => createAll(1),
  });
  const notes = [
    `${samples.banger.length} rounds; wall time of ${PARALLEL} concurrent vm creates (create + start) against 1, on the fake platform: real VM service, SQLite store and VM files; fake VMM whose boot takes ${BOOT_MS} ms, fake network, disks and SSH`,
  ];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${CREATE_BUDGET_MS / 1000} s cap`);
  return pairedRow(CREATE_PARALLEL_ROW, samples, notes);
}

/** A `sleep` whose argv[0] is `marker`, as a VMM's cmdline holds its control socket. */
async function startMarkedSleep(marker: string, onPid: (pid: number) => void): Promise<ChildProcess> {
  const child = spawn("sleep", ["3600"], { argv0: marker, stdio: "ignore" });
  if (child.pid === undefined) throw new Error("could not spawn sleep");
  onPid(child.pid);
  for (let tries = 0; tries < 200; tries++) {
    if ((await readCmdline(child.pid))?.[0] === marker) return child;
    await sleep(10);
  }
  throw new Error(`sleep pid ${child.pid} never showed its marker argv[0]`);
}

async function endChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  await stopPid(child.pid, 2000);
  await exited;
}

function benchVm(image: ImageRecord, index: number, state: VmRecord["state"]): VmRecord {
  const id = `${index.toString(16).padStart(6, "0")}be0c4e`;
  const at = new Date(Date.UTC(2025, 0, 1, 0, 0, index)).toISOString();
  return {
    id,
    name: `bench-${index}`,
    imageId: image.id,
    imageName: image.name,
    vmm: "qemu",
    cpus: 1,
    memoryMib: 512,
    diskGib: 2,
    guestIp: `10.77.${Math.floor((index + 2) / 256)}.${(index + 2) % 256}`,
    mac: macForVmId(id),
    state,
    lastError: null,
    createdAt: at,
    updatedAt: at,
  };
}

export async function benchReconcile(options: RowOptions): Promise<RowResult> {
  const { env } = options;
  const liveness = async (handle: { pid: number; pidStartTicks: number; controlSocket: string }) =>
    (await processLiveness({
      pid: handle.pid,
      startTicks: handle.pidStartTicks,
      marker: handle.controlSocket,
    })) === "alive";
  await using platform = createFakeVmPlatform({ parentDir: env.home, isRunning: liveness });
  await using children = new AsyncDisposableStack();
  const files = createVmFiles();
  const vms: { vm: VmRecord; handles: VmHandles; alive: boolean }[] = [];
  options.log(
    `reconcile: starting ${RECONCILE_VMS} sleep processes (${RECONCILE_VMS - RECONCILE_ALIVE} ended again)`,
  );
  for (let i = 0; i < RECONCILE_VMS; i++) {
    const vm = benchVm(platform.image, i, "running");
    const paths = vmPaths(platform.layout, vm.id);
    const alive = i < RECONCILE_ALIVE;
    const child = await startMarkedSleep(qemuControlSocket(paths.dir), options.onPid);
    children.defer(() => endChild(child));
    const stat = await readProcStat(child.pid!);
    if (!stat) throw new Error(`sleep pid ${child.pid} vanished`);
    if (!alive) await endChild(child);
    const handles: VmHandles = {
      pid: child.pid!,
      pidStartTicks: stat.startTicks,
      tap: tapNameForVmId(vm.id),
      controlSocket: qemuControlSocket(paths.dir),
      disk: { strategy: "file", path: join(paths.dir, ROOT_DISK_FILES["qcow2-overlay"].file) },
    };
    platform.store.insertVm(vm);
    await files.makeDir(paths.dir);
    vms.push({ vm, handles, alive });
  }
  /** Puts every VM back to "running" with its handles.json, as a daemon restart would find them. */
  const seed = async () => {
    for (const { vm, handles } of vms) {
      platform.store.setVmState(vm.id, "running", null, vm.updatedAt);
      await files.writeHandles(vmPaths(platform.layout, vm.id).handles, handles);
    }
  };
  const timedReconcile = async () => {
    await seed();
    const service = createVmService(platform.deps);
    const started = performance.now();
    const result = await service.reconcile();
    const ms = performance.now() - started;
    if (result.kept.length !== RECONCILE_ALIVE || result.demoted.length !== RECONCILE_VMS - RECONCILE_ALIVE) {
      throw new Error(
        `reconcile kept ${result.kept.length} and demoted ${result.demoted.length}; expected ${RECONCILE_ALIVE} and ${RECONCILE_VMS - RECONCILE_ALIVE}`,
      );
    }
    return ms;
  };
  for (let i = 0; i < RECONCILE_WARMUP; i++) await timedReconcile();
  options.log(`reconcile: ${RECONCILE_SAMPLES} runs`);
  const samples: number[] = [];
  while (samples.length < RECONCILE_SAMPLES && !env.signal.aborted) samples.push(await timedReconcile());
  return {
    ...RECONCILE_ROW,
    banger: summarize(samples),
    baseline: null,
    statistic: "p50",
    single: false,
    skipped: null,
    notes: [
      `${samples.length} runs of VmService.reconcile() (fresh service each, untimed re-seed between): ${RECONCILE_VMS} "running" rows in a real SQLite store, ${RECONCILE_VMS} real handles.json; ${RECONCILE_ALIVE} pids are live \`sleep\` processes whose argv[0] is the VM's control socket (kept), ${RECONCILE_VMS - RECONCILE_ALIVE} are sleeps already ended (demoted: handles removed, row set stopped)`,
      "liveness is processLiveness (/proc stat + cmdline), as the QEMU driver's isRunning; tap deletion and SSH close are fakes and cost nothing (the real deleteTap runs `ip link del` per demoted VM)",
    ],
  };
}

/** A store with the one image and `vmCount` stopped VM rows, as a daemon would find it. */
function seedStore(dbFile: string, vmCount: number): void {
  const store: Store = openStore(dbFile);
  try {
    const image: ImageRecord = {
      id: "bench-image-01",
      name: "debian-bookworm",
      kind: "debian",
      dir: "/nonexistent/bench-image",
      kernel: "/nonexistent/bench-image/vmlinuz",
      initrd: "/nonexistent/bench-image/initrd.gz",
      rootfs: "/nonexistent/bench-image/rootfs.ext4",
      sizeBytes: 1024 ** 3,
      createdAt: new Date(0).toISOString(),
    };
    store.insertImage(image);
    store.transaction(() => {
      for (let i = 0; i < vmCount; i++) store.insertVm(benchVm(image, i, "stopped"));
    });
  } finally {
    store.close();
  }
}

/** Starts bin/bangerd on a fresh BANGER_HOME holding `vmCount` stopped VMs; returns its settled RSS. */
async function daemonRssKiB(options: RowOptions, vmCount: number): Promise<number> {
  const { env } = options;
  const home = await mkdtemp(join(env.home, "rss-"));
  try {
    const layout = resolveLayout({ env: { BANGER_HOME: home }, uid: 0, homeDir: "/" });
    await mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
    seedStore(layout.dbFile, vmCount);
    const daemonEnv = makeEnv({ root: env.root, home, netns: env.netns, signal: env.signal });
    const daemon = await startDaemon(daemonEnv, options.onPid);
    try {
      const client = await daemon.connect();
      try {
        const { vms } = await client.call("vm.list", {});
        if (vms.length !== vmCount) throw new Error(`bangerd listed ${vms.length} VMs, expected ${vmCount}`);
      } finally {
        client.close();
      }
      await sleep(RSS_SETTLE_MS);
      const samples: number[] = [];
      for (let i = 0; i < RSS_SAMPLES; i++) {
        samples.push(await readRssKiB(daemon.pid));
        await sleep(200);
      }
      return median(samples);
    } finally {
      const client = await daemon.connect().catch(() => undefined);
      if (client) {
        await client.call("daemon.shutdown", {}).catch(() => undefined);
        client.close();
      }
      if (!(await waitPidGone(daemon.pid, 15_000))) await stopPid(daemon.pid, 5000);
    }
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

export async function benchRssStopped(options: RowOptions): Promise<RowResult> {
  options.log(
    `rss-stopped: ${RSS_ROUNDS} rounds of bin/bangerd on an empty store and on one with ${STOPPED_VMS} stopped VMs`,
  );
  const empty: number[] = [];
  const loaded: number[] = [];
  for (let round = 0; round < RSS_ROUNDS && !options.env.signal.aborted; round++) {
    empty.push(await daemonRssKiB(options, 0));
    loaded.push(await daemonRssKiB(options, STOPPED_VMS));
  }
  const emptyKiB = median(empty);
  const loadedKiB = median(loaded);
  const mib = (kib: number) => (kib / 1024).toFixed(1);
  return {
    ...RSS_STOPPED_ROW,
    banger: summarize([(loadedKiB - emptyKiB) / 1024]),
    baseline: null,
    statistic: "p50",
    single: true,
    skipped: null,
    notes: [
      `a fresh bangerd per sample (VmRSS median of ${RSS_SAMPLES} samples, ${RSS_SETTLE_MS / 1000} s after start and one vm.list); median of ${empty.length} daemons each: ${mib(emptyKiB)} MiB with 0 VMs, ${mib(loadedKiB)} MiB with ${STOPPED_VMS} stopped VM rows (difference shown)`,
      `per-daemon values, MiB: empty ${empty.map(mib).join(", ")}; ${STOPPED_VMS} stopped ${loaded.map(mib).join(", ")}`,
    ],
  };
}
