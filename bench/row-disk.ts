/**
 * Rows "disk-*": how long the daemon's root disk executor (createRootDisk
 * of src/sys/disk, through the real process runner) takes to make a VM's
 * disk over a 1 GiB base, per strategy, and what each disk allocates.
 *
 * - disk-sparse: `cp --sparse=always` + `truncate` on the bench's temp dir
 *   filesystem, alone (no baseline): the cost the others are measured against.
 * - disk-qcow2: a qcow2 overlay (`qemu-img create -b`) there, alternating
 *   with a sparse copy on the same filesystem as the baseline.
 * - disk-reflink: `cp --reflink=always` on an XFS (reflink=1) the bench
 *   makes in a sparse loop file, alternating with a sparse copy on that XFS.
 * - disk-dm: dm-snapshot (create + the per-boot attach, which makes the
 *   devices) against a sparse copy; skipped with the probe's reason where
 *   the kernel has no device-mapper snapshots.
 *
 * The base is an ext4 image made by mkfs.ext4 -d from random files, so a
 * sparse copy has real data to copy. Everything lives in a temp dir under
 * the bench's BANGER_HOME; the loop device, the mount and every disk made
 * have undo steps that `close()` runs (the bench also registers it with its
 * session cleanup, so Ctrl-C and the overall cap run it too).
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, stat, statfs, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { defaultConfig } from "../src/core/config/index.ts";
import type { RootDiskStrategy } from "../src/core/disk/index.ts";
import { attachRootDisk, createRootDisk, detachRootDisk } from "../src/sys/disk/index.ts";
import { createProcessRunner, type Runner } from "../src/sys/runner/index.ts";
import { type BenchEnv, isRoot, onPath } from "./env.ts";
import { run, runChecked, sleep } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate, median, summarize } from "./stats.ts";

export const DISK_SPARSE_ROW = {
  id: "disk-sparse",
  benchmark: "root disk: sparse copy (1 GiB base)",
  unit: "ms",
  goal: "-",
} as const;
export const DISK_QCOW2_ROW = {
  id: "disk-qcow2",
  benchmark: "root disk: qcow2 overlay vs sparse copy",
  unit: "ms",
  goal: "≤0.1x",
} as const;
export const DISK_REFLINK_ROW = {
  id: "disk-reflink",
  benchmark: "root disk: reflink vs sparse copy (XFS)",
  unit: "ms",
  goal: "≤0.1x",
} as const;
export const DISK_DM_ROW = {
  id: "disk-dm",
  benchmark: "root disk: dm-snapshot (+attach) vs sparse copy",
  unit: "ms",
  goal: "≤0.1x",
} as const;

export const DISK_ROWS = [DISK_SPARSE_ROW, DISK_QCOW2_ROW, DISK_REFLINK_ROW, DISK_DM_ROW] as const;
export type DiskRowId = (typeof DISK_ROWS)[number]["id"];

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const BASE_BYTES = GiB;
/** The base's data: random files mkfs.ext4 -d copies in (36 × 8 MiB = 288 MiB, about 300 MB). */
const BASE_FILES = 36;
const BASE_FILE_BYTES = 8 * MiB;
/** The XFS loop file: sparse, room for the base and one sparse copy at a time. */
const XFS_IMAGE_BYTES = 4 * GiB;
const RUNS = 5;
const BUDGET_MS = 90_000;
/** Every command the executor runs gets this timeout (createRootDisk itself takes none). */
const COMMAND_TIMEOUT_MS = 120_000;
const TOOL_TIMEOUT_MS = 120_000;
const UMOUNT_TRIES = 25;

/** The size the guest sees: the daemon's default disk (`vm.disk_gib`), so the truncate step runs too. */
const DISK_BYTES = defaultConfig().vm.disk_gib * GiB;

const FS_TYPES: Record<number, string> = {
  61267: "ext4",
  1481003842: "xfs",
  2435016766: "btrfs",
  16914836: "tmpfs",
  801189825: "zfs",
};

export interface DiskBenchOptions {
  env: BenchEnv;
  log: (line: string) => void;
  onPid: (pid: number) => void;
}

export interface DiskBench extends AsyncDisposable {
  run(id: DiskRowId): Promise<RowResult>;
  /**
   * Removes every disk, the mount, the loop device and the temp dir; safe to
   * call twice or concurrently. Never rejects: what it could not undo is logged.
   */
  close(): Promise<void>;
}

/** Why a disk row cannot run here, or null when it can. */
export async function diskSkipReason(id: DiskRowId): Promise<string | null> {
  if (!onPath("mkfs.ext4")) return "mkfs.ext4 is not on PATH (it makes the base)";
  if (!onPath("cp") || !onPath("truncate")) return "cp or truncate is not on PATH";
  switch (id) {
    case "disk-sparse":
      return null;
    case "disk-qcow2":
      return onPath("qemu-img") ? null : "qemu-img is not on PATH";
    case "disk-reflink":
      if (!isRoot()) return "needs root (loop device and mount for the XFS filesystem)";
      for (const tool of ["mkfs.xfs", "losetup", "mount", "umount", "mountpoint"]) {
        if (!onPath(tool)) return `${tool} is not on PATH`;
      }
      return null;
    case "disk-dm": {
      const problem = await dmSnapshotProblem();
      if (problem) return problem;
      if (!isRoot()) return "needs root (loop and device-mapper devices)";
      return onPath("losetup") ? null : "losetup is not on PATH";
    }
  }
}

/**
 * Whether this kernel offers device-mapper snapshots, probed the way the
 * daemon does: the dm_snapshot module is loaded, or `dmsetup targets`
 * lists `snapshot` (built in).
 */
async function dmSnapshotProblem(): Promise<string | null> {
  const module = "/sys/module/dm_snapshot";
  if (existsSync(module)) return null;
  const kernel = `kernel ${release()}`;
  if (!onPath("dmsetup"))
    return `no device-mapper snapshots: ${module} is missing and dmsetup is not installed`;
  const targets = await run(["dmsetup", "targets"], { timeoutMs: 10_000 });
  if (targets.code === 0 && /^snapshot\s/m.test(targets.stdout)) return null;
  const why =
    targets.code === 0
      ? "`dmsetup targets` does not list snapshot"
      : `\`dmsetup targets\` exited ${targets.code ?? targets.signal}: ${targets.stderr.trim().split("\n")[0] ?? ""}`;
  return `no device-mapper snapshots on ${kernel}: ${module} is missing and ${why}`;
}

interface Sample {
  ms: number;
  /** st_blocks × 512 of the disk's file. */
  allocatedBytes: number;
  /** How much the filesystem's free space shrank while the disk was made. */
  fsBytes: number;
}

interface Made {
  strategy: RootDiskStrategy;
  samples: Sample[];
}

export function openDiskBench(options: DiskBenchOptions): DiskBench {
  const { env, log } = options;
  const processRunner = createProcessRunner();
  const runner: Runner = {
    run: (argv, runOptions) => processRunner.run(argv, { timeoutMs: COMMAND_TIMEOUT_MS, ...runOptions }),
  };
  const stack = new AsyncDisposableStack();
  /** Undo steps of disks made and not yet removed (a run that was interrupted). */
  const live = new Set<() => Promise<void>>();
  let closing: Promise<void> | undefined;
  let counter = 0;

  /** Registers an undo step; once closing has begun, runs it at once instead and stops the row. */
  const track = async (undo: () => Promise<void>) => {
    if (closing || stack.disposed) {
      await undo();
      throw new Error("the disk bench was closed");
    }
    stack.defer(undo);
  };
  const tool = (argv: string[]) =>
    runChecked(argv, { timeoutMs: TOOL_TIMEOUT_MS, onSpawn: options.onPid, signal: env.signal });

  const memo = <T>(make: () => Promise<T>) => {
    let value: Promise<T> | undefined;
    return () => {
      value ??= make();
      return value;
    };
  };

  const workDir = memo(async () => {
    const dir = await mkdtemp(join(env.home, "disk-"));
    await track(() => rm(dir, { recursive: true, force: true }));
    return dir;
  });

  const base = memo(async () => {
    const dir = await workDir();
    const file = join(dir, "base.ext4");
    const content = join(dir, "base-content");
    log(
      `disk: making the base: mkfs.ext4 -d over ${BASE_FILES} random files of ${BASE_FILE_BYTES / MiB} MiB (not timed)`,
    );
    await mkdir(content);
    try {
      for (let i = 0; i < BASE_FILES; i++) {
        await writeFile(join(content, `blob-${i}.bin`), randomBytes(BASE_FILE_BYTES));
      }
      await tool(["mkfs.ext4", "-q", "-F", "-L", "bench-base", "-d", content, file, `${BASE_BYTES / MiB}M`]);
    } finally {
      await rm(content, { recursive: true, force: true });
    }
    await tool(["sync", file]);
    return file;
  });

  /** XFS with reflink=1 on a loop device, holding a copy of the base. */
  const xfs = memo(async () => {
    const dir = await workDir();
    const source = await base();
    const image = join(dir, "xfs.img");
    const mountpoint = join(dir, "xfs");
    log(`disk: making XFS (reflink=1) in a sparse ${XFS_IMAGE_BYTES / GiB} GiB loop file (not timed)`);
    await tool(["truncate", "--size", String(XFS_IMAGE_BYTES), image]);
    await tool(["mkfs.xfs", "-q", "-m", "reflink=1", image]);
    await mkdir(mountpoint);
    // Registered before losetup/mount run: each undo looks for what is really there.
    await track(() => detachLoops(image));
    const loop = (await tool(["losetup", "--find", "--show", image])).stdout.trim();
    log(`disk: ${image} is ${loop}`);
    await track(() => unmount(mountpoint));
    await tool(["mount", loop, mountpoint]);
    const copy = join(mountpoint, "base.ext4");
    await tool(["cp", "--sparse=always", "--", source, copy]);
    await tool(["sync", copy]);
    return { mountpoint, base: copy };
  });

  const unmount = async (mountpoint: string) => {
    for (let attempt = 1; ; attempt++) {
      const mounted = await run(["mountpoint", "-q", mountpoint], { timeoutMs: 10_000 });
      if (mounted.code !== 0) return;
      // Not tied to env.signal: this runs during an abort, too.
      const result = await run(["umount", mountpoint], { timeoutMs: 30_000, onSpawn: options.onPid });
      if (result.code === 0) return;
      if (attempt >= UMOUNT_TRIES) {
        log(`umount ${mountpoint} failed (${result.stderr.trim()}); detaching it lazily`);
        await runChecked(["umount", "--lazy", mountpoint], { timeoutMs: 30_000 });
        return;
      }
      await sleep(200);
    }
  };

  const detachLoops = async (image: string) => {
    const listed = await runChecked(["losetup", "--noheadings", "--output", "NAME", "--associated", image], {
      timeoutMs: 10_000,
    });
    for (const device of listed.stdout.split("\n").map((line) => line.trim())) {
      if (!/^\/dev\/loop\d+$/.test(device)) continue;
      log(`disk: detaching ${device}`);
      await runChecked(["losetup", "--detach", device], { timeoutMs: 10_000 });
    }
  };

  /** Makes one disk (timed), measures it, removes it (not timed). */
  const makeOnce = async (strategy: RootDiskStrategy, source: string, dir: string): Promise<Sample> => {
    const target = join(dir, `root-${counter++}.${strategy === "qcow2-overlay" ? "qcow2" : "raw"}`);
    const before = await statfs(dir);
    const started = performance.now();
    const disk = await createRootDisk({
      strategy,
      base: source,
      target,
      sizeBytes: DISK_BYTES,
      runner,
      signal: env.signal,
    });
    // Once only: close() may run it concurrently with the finally below.
    let undo = once(() => disk.undo());
    live.add(undo);
    try {
      if (strategy === "dm-snapshot") {
        const attached = await attachRootDisk({
          strategy,
          base: source,
          target,
          sizeBytes: DISK_BYTES,
          runner,
          signal: env.signal,
        });
        live.delete(undo);
        const removeFile = undo;
        undo = once(async () => {
          await detachRootDisk({ handles: attached.handles, runner });
          await removeFile();
        });
        live.add(undo);
      }
      const ms = performance.now() - started;
      const info = await stat(target);
      const after = await statfs(dir);
      return {
        ms,
        allocatedBytes: info.blocks * 512,
        fsBytes: (before.bfree - after.bfree) * before.bsize,
      };
    } finally {
      live.delete(undo);
      await undo();
    }
  };

  /** A warm-up round, then `banger` against `baseline` alternating (or `banger` alone). */
  const measure = async (
    label: string,
    banger: { strategy: RootDiskStrategy; base: string; dir: string },
    baseline?: { strategy: RootDiskStrategy; base: string; dir: string },
  ) => {
    const made: Made = { strategy: banger.strategy, samples: [] };
    const sparse: Made | undefined = baseline && { strategy: baseline.strategy, samples: [] };
    await makeOnce(banger.strategy, banger.base, banger.dir);
    if (baseline) await makeOnce(baseline.strategy, baseline.base, baseline.dir);
    log(`${label}: ${RUNS} disks${baseline ? " each, alternating" : ""}`);
    const samples = await alternate({
      runs: RUNS,
      budgetMs: BUDGET_MS,
      signal: env.signal,
      banger: async () => {
        const sample = await makeOnce(banger.strategy, banger.base, banger.dir);
        made.samples.push(sample);
        return sample.ms;
      },
      baseline: async () => {
        if (!baseline || !sparse) return Number.NaN;
        const sample = await makeOnce(baseline.strategy, baseline.base, baseline.dir);
        sparse.samples.push(sample);
        return sample.ms;
      },
    });
    return { samples, made, sparse };
  };

  const cpVersion = memo(async () => {
    const version = await run(["cp", "--version"], { timeoutMs: 10_000 });
    return version.stdout.split("\n")[0]?.trim() || "cp";
  });

  const describeFs = async (dir: string) => {
    const info = await statfs(dir);
    return FS_TYPES[info.type] ?? `filesystem type 0x${info.type.toString(16)}`;
  };

  const baseNote = async () => {
    const file = await base();
    const info = await stat(file);
    return `base: ${BASE_BYTES / GiB} GiB ext4 image made by mkfs.ext4 -d from ${BASE_FILES} random files of ${BASE_FILE_BYTES / MiB} MiB (${mib(info.blocks * 512)} allocated, the rest holes); disks are ${DISK_BYTES / GiB} GiB (vm.disk_gib's default), so raw copies are also truncated`;
  };

  const timingNote = (count: number, alternating: boolean) =>
    `${count} disks${alternating ? " each, alternating," : ""} after one untimed warm-up; wall time of createRootDisk (src/sys/disk, the daemon's executor, real process runner); each disk removed (not timed) before the next; page cache warm, writeback not waited for (as in the daemon)`;

  const allocationNote = (made: Made, where: string) => {
    const allocated = median(made.samples.map((sample) => sample.allocatedBytes));
    const fs = median(made.samples.map((sample) => sample.fsBytes));
    return `${made.strategy} on ${where} allocates (p50) ${mib(allocated)} (st_blocks × 512 of the disk file), free space on the filesystem shrinks by ${mib(fs)}`;
  };

  const bench = async (id: DiskRowId): Promise<RowResult> => {
    const sourceOnTemp = await base();
    const tempDir = await workDir();
    const tempFs = `the temp dir's ${await describeFs(tempDir)}`;
    const onTemp = (strategy: RootDiskStrategy) => ({ strategy, base: sourceOnTemp, dir: tempDir });
    switch (id) {
      case "disk-sparse": {
        const { samples, made } = await measure(id, onTemp("sparse-copy"));
        return {
          ...DISK_SPARSE_ROW,
          banger: summarize(samples.banger),
          baseline: null,
          statistic: "p50",
          single: false,
          skipped: null,
          notes: [
            `${timingNote(samples.banger.length, false)}; cp --sparse=always + truncate on ${tempFs}`,
            await baseNote(),
            allocationNote(made, tempFs),
            ...(samples.stoppedEarly ? [`stopped early at the ${BUDGET_MS / 1000} s cap`] : []),
          ],
        };
      }
      case "disk-qcow2":
      case "disk-dm": {
        const strategy = id === "disk-qcow2" ? "qcow2-overlay" : "dm-snapshot";
        const { samples, made, sparse } = await measure(id, onTemp(strategy), onTemp("sparse-copy"));
        const what =
          strategy === "qcow2-overlay"
            ? "qemu-img create -f qcow2 -b BASE -F raw"
            : "truncate of the COW store + attach (2 losetup, dmsetup create linear+zero origin and snapshot)";
        return pairedRow(id === "disk-qcow2" ? DISK_QCOW2_ROW : DISK_DM_ROW, samples, [
          `${timingNote(samples.banger.length, true)}; banger = ${what}, baseline = sparse copy, both on ${tempFs}`,
          allocationNote(made, tempFs),
          ...(sparse ? [allocationNote(sparse, tempFs)] : []),
          ...(samples.stoppedEarly ? [`stopped early at the ${BUDGET_MS / 1000} s cap`] : []),
        ]);
      }
      case "disk-reflink": {
        const onXfs = await xfs();
        const where = `XFS (reflink=1, in a ${XFS_IMAGE_BYTES / GiB} GiB sparse loop file on ${tempFs})`;
        const dir = onXfs.mountpoint;
        // The baseline is a sparse copy where there are no reflinks: on XFS itself, cp clones
        // even with --sparse=always (measured below), so it would time a second reflink.
        const { samples, made, sparse } = await measure(
          id,
          { strategy: "reflink", base: onXfs.base, dir },
          onTemp("sparse-copy"),
        );
        const sparseOnXfs: Made = { strategy: "sparse-copy", samples: [] };
        for (let i = 0; i < RUNS && !env.signal.aborted; i++) {
          sparseOnXfs.samples.push(await makeOnce("sparse-copy", onXfs.base, dir));
        }
        const cp = await cpVersion();
        const sparseXfsMs = median(sparseOnXfs.samples.map((sample) => sample.ms));
        return pairedRow(DISK_REFLINK_ROW, samples, [
          `${timingNote(samples.banger.length, true)}; banger = cp --reflink=always + truncate on ${where}, from a copy of the base there; baseline = sparse copy on ${tempFs}`,
          allocationNote(made, "XFS"),
          ...(sparse ? [allocationNote(sparse, tempFs)] : []),
          "st_blocks counts a reflinked file's shared extents; the free-space change is what it really costs",
          `the sparse-copy strategy on this XFS (${sparseOnXfs.samples.length} more disks, not in the table): p50 ${sparseXfsMs.toFixed(1)} ms; ${allocationNote(sparseOnXfs, "XFS")}: ${cp} clones (FICLONE) by default even with --sparse=always, so on a reflink filesystem sparse-copy costs what reflink does`,
          ...(samples.stoppedEarly ? [`stopped early at the ${BUDGET_MS / 1000} s cap`] : []),
        ]);
      }
    }
  };

  const close = () => {
    closing ??= (async () => {
      for (const undo of [...live]) {
        live.delete(undo);
        await undo().catch((error: unknown) => log(`disk: could not remove a disk: ${String(error)}`));
      }
      await stack.disposeAsync().catch((error: unknown) => {
        const causes = error instanceof SuppressedError ? [error.error, error.suppressed] : [error];
        log(`disk: cleanup failed: ${causes.map(String).join("; ")}`);
      });
    })();
    return closing;
  };

  return {
    run: bench,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function once(action: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => {
    done ??= action();
    return done;
  };
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}
