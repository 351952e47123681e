/**
 * Making and removing VMs: `create` (validate, resolve the image, reserve
 * the name and address, make the directory and root disk, boot unless asked
 * not to), `reserve` (the short critical section under the reservation
 * mutex), and `removeVm` (disk, directory, row).
 */
import { join } from "node:path";
import { throwIfAborted } from "../../core/async/index.ts";
import type { DiskFormat } from "../../core/disk/index.ts";
import { GIB } from "../../core/units.ts";
import { emptyHandles, macForVmId, type VmRecord, validateVmName } from "../../core/vm/index.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  type VmInfo,
  type VmmKind,
} from "../../protocol/index.ts";
import { startLocked } from "./boot.ts";
import type { OpOptions, VmContext } from "./context.ts";
import { type RestoreFrom, restoreLocked } from "./restore.ts";
import { stopLocked } from "./stop.ts";

/** In a VM directory while its create runs; one left at reconcile marks an interrupted create. */
export const CREATE_PENDING_FILE = "create-pending.json";

export async function createVm(
  ctx: VmContext,
  params: CreateVmParams,
  options: OpOptions,
  from?: RestoreFrom,
): Promise<VmInfo> {
  const { deps } = ctx;
  const { store } = deps;
  if (params.name !== undefined) validateVmName(params.name);
  if (params.name !== undefined && store.getVmByName(params.name)) {
    throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${params.name}' already exists`);
  }
  const { image, vmm, base } = from
    ? cloneSource(ctx, params, from)
    : await imageSource(ctx, params, options);
  const vm = await reserve(ctx, from ? cloneParams(params, from) : params, vmm, image, from?.snapshotId);
  // From here the VM exists; any failure before it is usable removes it again.
  return deps.vmLocks.run(vm.id, async () => {
    await using stack = new AsyncDisposableStack();
    stack.defer(async () => {
      // A failure after the boot (the last step) also ends the VMM that boot left running.
      const current = store.getVmById(vm.id);
      if (current && ctx.handles.vmmHandle(await ctx.handles.load(current)))
        await stopLocked(ctx, current, "kill");
      await removeVm(ctx, vm);
    });
    const paths = ctx.paths(vm);
    await deps.files.makeDir(paths.dir);
    // Until removed below, this file tells a reconcile after a daemon crash that the create never finished.
    const marker = join(paths.dir, CREATE_PENDING_FILE);
    await deps.files.writeHandles(marker, emptyHandles());
    options.progress({ step: "vm.disk", message: `creating the root disk of ${vm.name}` });
    await deps.disks.create({
      formats: deps.drivers.get(vmm).features.diskFormats,
      base: base.path,
      baseFormat: base.format,
      vmDir: paths.dir,
      sizeBytes: vm.diskGib * GIB,
      signal: options.signal,
    });
    let result = ctx.setState(vm, "stopped");
    if (params.start !== false) {
      result = from
        ? await restoreLocked(ctx, result, from, options)
        : await startLocked(ctx, result, options);
    }
    await deps.files.removeFile(marker);
    // A cancel that arrived during the last steps still unwinds: the client is told it failed.
    throwIfAborted(options.signal, `create of ${vm.name}`);
    stack.move();
    return ctx.toInfo(result);
  });
}

interface CreateSource {
  image: { id: string; name: string };
  vmm: VmmKind;
  /** What the VM's disk is made over. */
  base: { path: string; format: DiskFormat };
}

/** A VM booted from an image: the VMM asked for (or chosen), the image resolved (maybe built). */
async function imageSource(
  ctx: VmContext,
  params: CreateVmParams,
  options: OpOptions,
): Promise<CreateSource> {
  const { deps } = ctx;
  const requested = params.vmm ?? deps.config.vmm.default;
  // An explicit VMM is checked before a possibly long image build; `auto`
  // is decided after it, when the accelerator probe has a kernel to boot.
  if (requested !== "auto") await deps.drivers.choose(requested);
  const image = await deps.images.resolve(params.image ?? deps.config.vm.default_image, options);
  const vmm = await deps.drivers.choose(requested);
  return { image, vmm, base: { path: image.rootfs, format: "raw" } };
}

/**
 * A clone: the snapshot's image, VMM and disk. A different VMM is refused
 * here, before anything is made; the machine shape is checked by the
 * restore against what the VMM will run (checkRestore).
 */
function cloneSource(ctx: VmContext, params: CreateVmParams, from: RestoreFrom): CreateSource {
  const { manifest } = from;
  if (ctx.restoreReadiness === undefined) {
    throw new BangerError(ErrorCode.BAD_STATE, "restoring a snapshot needs the guest agent", {
      hint: "a restored guest keeps its source's address until the agent gives it its own; SSH cannot reach it",
    });
  }
  if (params.vmm !== undefined && params.vmm !== manifest.driver) {
    throw new BangerError(
      ErrorCode.SNAPSHOT_MISMATCH,
      `snapshot ${manifest.name} was taken with VMM ${manifest.driver}; this restore has ${params.vmm}`,
      { hint: `omit --vmm with --from (a clone runs on ${manifest.driver})` },
    );
  }
  const image = ctx.deps.store.getImageById(manifest.image.id);
  if (!image) {
    throw new BangerError(
      ErrorCode.SNAPSHOT_MISMATCH,
      `snapshot ${manifest.name} needs image ${manifest.image.name}, which no longer exists`,
      { hint: "take a new snapshot" },
    );
  }
  return {
    image,
    vmm: manifest.driver,
    base: { path: join(from.dir, manifest.disk.file), format: manifest.disk.format },
  };
}

/** A clone's shape defaults to the snapshot's. */
function cloneParams(params: CreateVmParams, from: RestoreFrom): CreateVmParams {
  const { manifest } = from;
  return {
    ...params,
    cpus: params.cpus ?? manifest.machine.cpus,
    memoryMib: params.memoryMib ?? manifest.machine.memoryMib,
    diskGib: params.diskGib ?? Math.ceil(manifest.disk.sizeBytes / GIB),
  };
}

/**
 * Re-checks the name, allocates the guest IP and inserts the row (and, for
 * a clone, its link to the snapshot backing its disk), all under the
 * reservation mutex.
 */
function reserve(
  ctx: VmContext,
  params: CreateVmParams,
  vmm: VmmKind,
  image: { id: string; name: string },
  snapshotId?: string,
): Promise<VmRecord> {
  const { deps } = ctx;
  const { store, config } = deps;
  return deps.reservation.run(() => {
    const id = deps.newId();
    const name = params.name ?? `vm-${id.slice(0, 6)}`;
    if (store.getVmByName(name)) {
      throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${name}' already exists`);
    }
    const now = deps.now().toISOString();
    const vm: VmRecord = {
      id,
      name,
      imageId: image.id,
      imageName: image.name,
      vmm,
      cpus: params.cpus ?? config.vm.cpus,
      memoryMib: params.memoryMib ?? config.vm.memory_mib,
      diskGib: params.diskGib ?? config.vm.disk_gib,
      guestIp: deps.network.allocateIp(store.usedGuestIps()),
      mac: macForVmId(id),
      state: "created",
      lastError: null,
      createdAt: now,
      updatedAt: now,
    };
    store.transaction(() => {
      store.insertVm(vm);
      if (snapshotId !== undefined) store.linkClone(vm.id, snapshotId);
    });
    return vm;
  });
}

/** Removes a VM that holds nothing on the host any more: its disk, its directory, its row. */
export async function removeVm(ctx: VmContext, vm: VmRecord): Promise<void> {
  const { deps } = ctx;
  const paths = ctx.paths(vm);
  const disk = await deps.disks.locate(paths.dir);
  if (disk) await deps.disks.remove(disk);
  await deps.files.removeDir(paths.dir);
  ctx.handles.forget(vm.id);
  deps.store.deleteVm(vm.id);
}
