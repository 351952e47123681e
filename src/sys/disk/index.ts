/**
 * Root disk executor: runs the plans of core/disk through the Runner,
 * unwinding completed steps when one fails or the operation is aborted, and
 * probes which raw copy-on-write strategy a directory's filesystem supports.
 */
import { access, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { throwIfAborted } from "../../core/async/index.ts";
import {
  CAPTURED_HANDLE,
  type DiskCommand,
  type DiskFormat,
  type DiskStep,
  planDiskAttach,
  planDiskDetach,
  planGrowDisk,
  planRootDisk,
  planRootDiskTeardown,
  planSnapshotDisk,
  type RawCowStrategy,
  type RootDiskStrategy,
  resolveCommand,
} from "../../core/disk/index.ts";
import { KIB } from "../../core/units.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { CommandFailedError, type Runner } from "../runner/index.ts";

export interface CreateRootDiskOptions {
  strategy: RootDiskStrategy;
  base: string;
  baseFormat?: DiskFormat | undefined;
  target: string;
  sizeBytes: number;
  runner: Runner;
  signal?: AbortSignal | undefined;
  dmName?: string | undefined;
}

export interface RootDisk {
  /** What the VMM opens: the file, or /dev/mapper/NAME for dm-snapshot. */
  path: string;
  format: DiskFormat;
  /** Everything needed to tear the disk down later (store it with the VM). */
  handles: Record<string, string>;
  /** Removes the disk and everything made for it, in reverse order. */
  undo(): Promise<void>;
}

export async function createRootDisk(options: CreateRootDiskOptions): Promise<RootDisk> {
  const baseSizeBytes = await sizeOf(options.base);
  const plan = planRootDisk({ ...options, baseSizeBytes });
  const done = await runSteps(plan.steps, { ...plan.handles }, options);
  return { path: plan.path, format: plan.format, handles: done.handles, undo: done.undo };
}

/** Removes a stored disk (after `detachRootDisk`), e.g. by a daemon that did not create it. */
export async function removeRootDisk(options: {
  handles: Record<string, string>;
  runner: Runner;
}): Promise<void> {
  await runUndo(options.runner, planRootDiskTeardown(options.handles));
}

export interface AttachedDisk {
  /** What the VMM opens for this boot. */
  path: string;
  /** Per-boot handles (loop devices, dm names) for handles.json; empty when nothing was made. */
  handles: Record<string, string>;
  undo(): Promise<void>;
}

/** Makes a stored disk openable for one boot (dm-snapshot devices); see planDiskAttach. */
export async function attachRootDisk(options: CreateRootDiskOptions): Promise<AttachedDisk> {
  const baseSizeBytes = await sizeOf(options.base);
  const plan = planDiskAttach({ ...options, baseSizeBytes });
  const done = await runSteps(plan.steps, { ...plan.handles }, options);
  return { path: plan.path, handles: done.handles, undo: done.undo };
}

/** Reverses attachRootDisk from its stored handles; a no-op for strategies without devices. */
export async function detachRootDisk(options: {
  handles: Record<string, string>;
  runner: Runner;
}): Promise<void> {
  await runUndo(options.runner, planDiskDetach(options.handles));
}

/** Runs plan steps in order, unwinding the completed ones when one fails or the signal aborts. */
async function runSteps(
  steps: readonly DiskStep[],
  handles: Record<string, string>,
  options: { target: string; runner: Runner; signal?: AbortSignal | undefined },
): Promise<{ handles: Record<string, string>; undo(): Promise<void> }> {
  const undos: DiskCommand[] = [];
  const runner = options.runner;
  try {
    for (const step of steps) {
      throwIfAborted(options.signal, `preparing root disk ${options.target}`);
      const command = resolveCommand(step.run, handles);
      const undoFirst = step.undo !== undefined && step.undoAfterFailure === true;
      if (step.undo && undoFirst) undos.push(resolveCommand(step.undo, handles));
      const result = await runner
        .run(command.argv, { signal: options.signal, input: command.input })
        .catch((error: unknown) => {
          throw diskError(`could not prepare root disk ${options.target}`, options.target, error);
        });
      if (step.run.capture) handles[step.run.capture] = capturedValue(step.run.capture, result.stdout);
      if (step.undo && !undoFirst) undos.push(resolveCommand(step.undo, handles));
    }
  } catch (error) {
    await runUndo(runner, undos.reverse()).catch(() => {});
    throw error;
  }
  const committed = undos.reverse();
  return { handles, undo: () => runUndo(runner, committed) };
}

/** Copies a stored disk whose VMM holds no writes in flight into a snapshot directory (planSnapshotDisk). */
export async function copyDiskForSnapshot(options: {
  strategy: RootDiskStrategy;
  file: string;
  dir: string;
  runner: Runner;
  signal?: AbortSignal | undefined;
}): Promise<{ file: string; format: DiskFormat }> {
  const plan = planSnapshotDisk(options);
  await options.runner.run(plan.command.argv, { signal: options.signal }).catch((error: unknown) => {
    throw diskError(`could not copy the disk ${options.file} into the snapshot`, plan.file, error);
  });
  return { file: plan.file, format: plan.format };
}

export async function growRootDisk(options: {
  strategy: RootDiskStrategy;
  path: string;
  sizeBytes: number;
  runner: Runner;
}): Promise<void> {
  const command = planGrowDisk(options);
  await options.runner.run(command.argv).catch((error: unknown) => {
    throw diskError(`could not grow root disk ${options.path}`, options.path, error);
  });
}

export interface CowStrategyProbe {
  strategy: RawCowStrategy;
  /** One sentence for `banger doctor`. */
  reason: string;
}

/**
 * Which raw copy-on-write strategy works for disks in `dir`: a reflink of a
 * small temp file there, else device-mapper snapshots, else sparse copies.
 */
export async function probeCowStrategy(
  dir: string,
  options: { runner: Runner; sysModuleDir?: string | undefined },
): Promise<CowStrategyProbe> {
  const reflink = await tryReflink(dir, options.runner);
  if (reflink.ok) return { strategy: "reflink", reason: `the filesystem of ${dir} supports reflinks` };
  const dm = await dmSnapshotAvailable(options.runner, options.sysModuleDir ?? "/sys/module");
  if (dm.ok) {
    return { strategy: "dm-snapshot", reason: `no reflinks in ${dir} (${reflink.why}); ${dm.why}` };
  }
  return {
    strategy: "sparse-copy",
    reason: `no reflinks in ${dir} (${reflink.why}) and no device-mapper snapshots (${dm.why}): each VM gets a full sparse copy`,
  };
}

async function tryReflink(dir: string, runner: Runner): Promise<{ ok: boolean; why: string }> {
  const scratch = await mkdtemp(join(dir, ".banger-reflink-probe-"));
  try {
    const source = join(scratch, "source");
    await writeFile(source, Buffer.alloc(64 * KIB, 0x5a));
    const result = await runner.run(["cp", "--reflink=always", "--", source, join(scratch, "copy")], {
      allowFailure: true,
    });
    if (result.code === 0) return { ok: true, why: "reflink copy succeeded" };
    const message = result.stderr.trim().split("\n").at(-1) ?? "";
    return { ok: false, why: message.replace(/^cp: /, "") || `cp exited with ${result.code}` };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function dmSnapshotAvailable(
  runner: Runner,
  sysModuleDir: string,
): Promise<{ ok: boolean; why: string }> {
  try {
    await access(join(sysModuleDir, "dm_snapshot"));
    return { ok: true, why: "the dm_snapshot module is loaded" };
  } catch {
    // Not loaded as a module; it may be built in, which only dmsetup can tell.
  }
  try {
    const result = await runner.run(["dmsetup", "targets"], { allowFailure: true });
    if (result.code === 0 && /^snapshot\s/m.test(result.stdout)) {
      return { ok: true, why: "dmsetup lists the snapshot target" };
    }
    const detail =
      result.code === 0 ? "dmsetup does not list the snapshot target" : result.stderr.trim().split("\n")[0];
    return { ok: false, why: detail || `dmsetup targets exited with ${result.code}` };
  } catch (error) {
    if (error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING) {
      return { ok: false, why: "dmsetup is not installed" };
    }
    throw error;
  }
}

async function runUndo(runner: Runner, commands: readonly DiskCommand[]): Promise<void> {
  const failures: string[] = [];
  for (const command of commands) {
    try {
      await runner.run(command.argv, { input: command.input });
    } catch (error) {
      failures.push(String((error as Error).message));
    }
  }
  if (failures.length > 0) {
    throw new BangerError(ErrorCode.INTERNAL, `root disk teardown left work behind: ${failures.join("; ")}`, {
      hint: "remove the listed devices or files by hand (dmsetup remove, losetup --detach, rm)",
    });
  }
}

function capturedValue(name: string, stdout: string): string {
  const value = stdout.trim();
  if (!CAPTURED_HANDLE.test(value)) {
    throw new BangerError(ErrorCode.INTERNAL, `expected a loop device for ${name}, got '${value}'`);
  }
  return value;
}

async function sizeOf(base: string): Promise<number> {
  try {
    return (await stat(base)).size;
  } catch (error) {
    throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `image base ${base} is missing`, { cause: error });
  }
}

function diskError(what: string, path: string, error: unknown): unknown {
  if (error instanceof BangerError) return error;
  if (error instanceof CommandFailedError) {
    return new BangerError(ErrorCode.BOOT_FAILED, `${what}: ${error.message}`, {
      hint: `check free space and permissions where ${path} lives`,
      cause: error,
    });
  }
  return error;
}
