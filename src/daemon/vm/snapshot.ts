/**
 * Saving a running or paused VM into a snapshot's staging directory
 * (`saveLocked`, under the VM's lock): its VMM state through the driver's
 * `snapshots` role, then its disk, copied while the VMM is paused with its
 * writes flushed. The VM goes on as it was; its row's state never changes
 * (the pause is internal to the save). A VM that `vm auth sync` wrote
 * credentials into is refused unless the caller includes secrets.
 */
import { basename, join } from "node:path";
import type { VmPaths } from "../../core/paths/index.ts";
import { SnapshotFiles, type SnapshotManifest } from "../../core/snapshot/index.ts";
import { GIB } from "../../core/units.ts";
import type { VmRecord } from "../../core/vm/index.ts";
import type { VmmDriver } from "../../core/vmm/contract.ts";
import { AUTH_FILES_JSON, type AuthRecord, parseAuthRecord } from "../../core/workspace/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { bootSpecFor, imageOf } from "./boot.ts";
import type { OpOptions, VmContext } from "./context.ts";

/** What the save found and wrote: everything a manifest holds but its own name, id and time. */
export type SavedState = Omit<SnapshotManifest, "format" | "id" | "name" | "createdAt"> & { vm: VmRecord };

export async function saveLocked(
  ctx: VmContext,
  vm: VmRecord,
  dir: string,
  options: OpOptions & { includeSecrets: boolean },
): Promise<SavedState> {
  const { deps } = ctx;
  if (vm.state !== "running" && vm.state !== "paused") {
    throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is not running (it is ${vm.state})`, {
      hint: `start it with \`banger vm start ${vm.name}\`; a snapshot saves a running guest's memory`,
    });
  }
  const driver = deps.drivers.get(vm.vmm);
  const snapshots = driver.snapshots;
  if (!snapshots) {
    throw new BangerError(ErrorCode.BAD_STATE, `the ${vm.vmm} driver cannot snapshot VMs`);
  }
  const paths = ctx.paths(vm);
  const authRecord = await readAuthRecord(ctx, join(paths.dir, AUTH_FILES_JSON));
  const hasSecrets = authRecord === "unreadable" || (authRecord?.paths.length ?? 0) > 0;
  if (hasSecrets && !options.includeSecrets) {
    throw new BangerError(
      ErrorCode.SNAPSHOT_SECRETS,
      `VM '${vm.name}' holds credentials synced by \`banger vm auth sync\``,
    );
  }
  const vmm = ctx.handles.vmmHandle(await ctx.handles.load(vm));
  if (!vmm) throw ctx.notRunning({ ...vm, state: "stopped" });
  const { image, stored, spec } = await runningSpec(ctx, vm, { driver, paths, ...options });
  // Described first: Firecracker knows its features once its version is probed.
  const machine = await snapshots.describe(spec);
  if (!driver.features.snapshots) {
    throw new BangerError(ErrorCode.BAD_STATE, `this ${vm.vmm} cannot snapshot VMs`, {
      hint: "Firecracker needs v1.16 or newer (vsock_override on snapshot load)",
    });
  }

  options.progress({ step: "snapshot.save", message: `saving the memory and disk of ${vm.name}` });
  const wasRunning = vm.state === "running";
  if (wasRunning) await driver.pause(vmm);
  let disk: { file: string; format: "qcow2" | "raw" };
  try {
    await snapshots.save(vmm, dir, options.signal);
    disk = await deps.disks.copyForSnapshot(stored, dir, options.signal);
    if (authRecord !== undefined && authRecord !== "unreadable") {
      await deps.files.writeJson(join(dir, SnapshotFiles.authRecord), authRecord);
    }
  } finally {
    // QEMU leaves a migrated VM in "postmigrate": `cont` reopens its disk. A paused VM is paused again.
    await driver
      .resume(vmm)
      .catch((error: unknown) =>
        deps.logger.error("could not resume a VM after its snapshot", { vm: vm.name, err: String(error) }),
      );
    if (!wasRunning) await driver.pause(vmm);
  }
  if (wasRunning && deps.agents) {
    // The guest's clock stood still while it was paused for the save.
    await deps.agents
      .setClock(vm.id, ctx.target(vm).agent)
      .catch((error: unknown) =>
        deps.logger.warn("setting the guest clock failed", { vm: vm.name, err: String(error) }),
      );
  }
  return {
    vm,
    ...(await savedRecord(ctx, {
      vm,
      machine,
      image,
      kernel: spec.kernel,
      disk,
      dir,
      includesSecrets: hasSecrets,
    })),
  };
}

/**
 * What a running VM was started with, as a save needs it: its image, its
 * stored disk and its boot spec (its initrd is not written again).
 */
export async function runningSpec(
  ctx: VmContext,
  vm: VmRecord,
  options: Pick<OpOptions, "signal" | "progress"> & { driver: VmmDriver; paths: VmPaths },
) {
  const image = imageOf(ctx, vm);
  const stored = await ctx.storedDisk(vm);
  const spec = await bootSpecFor(ctx, vm, {
    image,
    driver: options.driver,
    paths: options.paths,
    disk: { path: stored.file, format: stored.format },
    signal: options.signal,
    progress: options.progress,
    writeInitrd: false,
  });
  return { image, stored, spec };
}

/**
 * What a save records of the VM, its machine, kernel and disk: a snapshot's
 * manifest but for its own name, id and time (a suspend's uses the VM's).
 */
export async function savedRecord(
  ctx: VmContext,
  saved: {
    vm: VmRecord;
    machine: { signature: string; vmmVersion: string | null; accel: string | null };
    image: { id: string; name: string };
    kernel: string;
    disk: { file: string; format: "qcow2" | "raw" };
    dir: string;
    includesSecrets: boolean;
  },
): Promise<Omit<SnapshotManifest, "format" | "id" | "name" | "createdAt">> {
  const { vm, machine, image, disk } = saved;
  return {
    source: { vmId: vm.id, vmName: vm.name, guestIp: vm.guestIp, mac: vm.mac },
    driver: vm.vmm,
    vmmVersion: machine.vmmVersion,
    accel: machine.accel,
    machine: { cpus: vm.cpus, memoryMib: vm.memoryMib, signature: machine.signature },
    image: { id: image.id, name: image.name },
    kernel: { file: basename(saved.kernel), sizeBytes: await ctx.deps.files.size(saved.kernel) },
    disk: { file: basename(disk.file), format: disk.format, sizeBytes: vm.diskGib * GIB },
    stateBytes: await stateBytes(ctx, saved.dir),
    includesSecrets: saved.includesSecrets,
  };
}

/**
 * A VM's auth record: absent when `vm auth sync` never ran, "unreadable"
 * when it cannot be parsed (which counts as holding secrets). Credential
 * files are what a snapshot refuses; keys and the git identity are none.
 */
export async function readAuthRecord(
  ctx: VmContext,
  path: string,
): Promise<AuthRecord | "unreadable" | undefined> {
  if (!(await ctx.deps.files.exists(path))) return undefined;
  return parseAuthRecord(await ctx.deps.files.tail(path, 1024 * 1024).catch(() => "")) ?? "unreadable";
}

/** Bytes of a saved state's files (the state, and the memory where the VMM keeps it apart). */
async function stateBytes(ctx: VmContext, dir: string): Promise<number> {
  let total = 0;
  for (const file of [SnapshotFiles.state, SnapshotFiles.memory])
    total += await ctx.deps.files.size(join(dir, file));
  return total;
}
