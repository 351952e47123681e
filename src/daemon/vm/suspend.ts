/**
 * Suspend to disk and back, under the VM's lock. `suspendLocked` pauses the
 * guest, writes its VMM state into `<vm dir>/suspended/` (staged in
 * `suspended.partial/`, renamed when complete, with a manifest like a
 * snapshot's), ends the VMM and gives back its runtime (tap, disk devices,
 * hooks): the VM is `suspended` and holds no RAM. Its disk is its own and
 * unchanged, so the state needs no disk copy. `resumeSuspendedLocked`
 * restores a VMM from that state with the VM's own identity (only the
 * clock is set from the host) and removes it; a resume that fails leaves
 * the VM `suspended` with the reason and the state kept for a retry.
 * `discardSuspended` (a stop) drops the state.
 *
 * Crash points: a daemon that dies before the rename leaves a running VM
 * and a `.partial` directory; one that dies after the rename but before the
 * row is written leaves a complete state and a dead VMM, which reconcile
 * turns into `suspended` (`isSuspendComplete`). A resume moves the manifest
 * aside as soon as a VMM holds the memory (`consumeSavedState`). Reconcile
 * removes every state that is not a suspended VM's (`removeStaleSuspend`).
 */
import { join } from "node:path";
import { errorMessage } from "../../core/async/index.ts";
import {
  parseManifest,
  SNAPSHOT_FORMAT,
  SnapshotFiles,
  type SnapshotManifest,
} from "../../core/snapshot/index.ts";
import type { VmRecord } from "../../core/vm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import {
  attachDisk,
  attachNetwork,
  type BootStep,
  beforeBootHooks,
  claimDisk,
  guestReadyHooks,
  runBoot,
} from "./boot.ts";
import type { OpOptions, VmContext } from "./context.ts";
import { awaitChannel, restoreVmm } from "./restore.ts";
import { runningSpec, savedRecord } from "./snapshot.ts";
import { releaseRuntime } from "./stop.ts";

/** The VM directory's entry holding a suspended VM's state. */
const SUSPEND_DIR = "suspended";
const MANIFEST_MAX_BYTES = 1024 * 1024;

const suspendDir = (ctx: VmContext, vm: VmRecord) => join(ctx.paths(vm).dir, SUSPEND_DIR);

export async function suspendLocked(ctx: VmContext, vm: VmRecord, options: OpOptions): Promise<VmRecord> {
  const { deps } = ctx;
  if ((vm.state !== "running" && vm.state !== "paused") || !(await ctx.isAlive(vm))) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `VM '${vm.name}' is ${vm.state}; only a running or paused VM can be suspended`,
      {
        hint: `see its state with \`banger vm show ${vm.name}\``,
      },
    );
  }
  const driver = deps.drivers.get(vm.vmm);
  const snapshots = driver.snapshots;
  const handles = await ctx.handles.load(vm);
  const vmm = ctx.handles.vmmHandle(handles)!;
  const paths = ctx.paths(vm);
  const { image, stored, spec } = await runningSpec(ctx, vm, { driver, paths, ...options });
  const machine = snapshots ? await snapshots.describe(spec) : undefined;
  if (!snapshots || !machine || !driver.features.snapshots) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `this ${vm.vmm} cannot save a VM's memory, so it cannot suspend`,
      {
        hint: "Firecracker needs v1.16 or newer; `banger vm stop` ends the VM instead",
      },
    );
  }
  const dir = suspendDir(ctx, vm);
  const staging = `${dir}.partial`;
  await deps.files.removeDir(staging);
  await deps.files.removeDir(dir);
  await deps.files.makeDir(staging);
  options.progress({ step: "vm.suspend", message: `writing the memory of ${vm.name} to disk` });
  const wasRunning = vm.state === "running";
  try {
    if (wasRunning) await driver.pause(vmm);
    await snapshots.save(vmm, staging, options.signal);
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT,
      id: vm.id,
      name: vm.name,
      createdAt: deps.now().toISOString(),
      ...(await savedRecord(ctx, {
        vm,
        machine,
        image,
        kernel: spec.kernel,
        disk: stored,
        dir: staging,
        includesSecrets: false,
      })),
    };
    await deps.files.writeJson(join(staging, SnapshotFiles.manifest), manifest);
    await deps.files.rename(staging, dir);
    // The state is complete: the VMM's memory is no longer needed.
    await driver.kill(vmm);
  } catch (error) {
    // The VM goes on as it was: QEMU's `cont` leaves "postmigrate"; a paused VM is paused again.
    await driver
      .resume(vmm)
      .then(() => (wasRunning ? undefined : driver.pause(vmm)))
      .catch((resumeError: unknown) =>
        deps.logger.error("could not resume a VM after a failed suspend", {
          vm: vm.name,
          err: String(resumeError),
        }),
      );
    await deps.files.removeDir(staging).catch(() => undefined);
    await deps.files.removeDir(dir).catch(() => undefined);
    throw error;
  }
  // With its VMM gone the VM is suspended, whatever giving back its runtime
  // then meets (reconcile removes a tap left behind).
  const suspended = ctx.setState(vm, "suspended", null);
  await releaseRuntime(ctx, vm, handles).catch((error: unknown) =>
    deps.logger.error("could not release all a suspended VM held", { vm: vm.name, err: errorMessage(error) }),
  );
  deps.logger.info("vm suspended", { vm: vm.name });
  return suspended;
}

/** Restores a suspended VM with its own identity, sets its clock, and removes the saved state. */
export async function resumeSuspendedLocked(
  ctx: VmContext,
  vm: VmRecord,
  options: OpOptions,
): Promise<VmRecord> {
  const dir = suspendDir(ctx, vm);
  const manifest = await readSuspendManifest(ctx, vm);
  const steps: BootStep[] = [
    claimDisk,
    attachNetwork,
    attachDisk,
    beforeBootHooks,
    restoreVmm({ snapshotId: vm.id, dir, manifest, label: "its suspended state" }),
    consumeSavedState,
    awaitChannel,
    setGuestClock,
    guestReadyHooks,
  ];
  const running = await runBoot(ctx, vm, steps, options, "suspended");
  await ctx.deps.files.removeDir(dir).catch((error: unknown) =>
    ctx.deps.logger.warn("could not remove a resumed VM's saved state", {
      vm: vm.name,
      err: errorMessage(error),
    }),
  );
  ctx.deps.logger.info("vm resumed from disk", { vm: vm.name });
  return running;
}

/** A stop of a suspended VM: its saved state goes, the VM is stopped. */
export async function discardSuspended(ctx: VmContext, vm: VmRecord): Promise<VmRecord> {
  await ctx.deps.files.removeDir(suspendDir(ctx, vm));
  return ctx.setState(vm, "stopped", "its suspended state was discarded by a stop");
}

/** Whether the VM's directory holds a complete suspended state (its manifest is written last). */
export function isSuspendComplete(ctx: VmContext, vm: VmRecord): Promise<boolean> {
  return ctx.deps.files.exists(join(suspendDir(ctx, vm), SnapshotFiles.manifest));
}

async function readSuspendManifest(ctx: VmContext, vm: VmRecord): Promise<SnapshotManifest> {
  const path = join(suspendDir(ctx, vm), SnapshotFiles.manifest);
  if (!(await ctx.deps.files.exists(path))) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `VM '${vm.name}' is suspended but its saved state is missing (${path})`,
      {
        hint: `stop it with \`banger vm stop ${vm.name}\` and start it again; its disk is intact`,
      },
    );
  }
  return parseManifest(await ctx.deps.files.tail(path, MANIFEST_MAX_BYTES), path);
}

/**
 * Once a VMM holds the memory, the saved state stops being complete (its
 * manifest moves aside): a daemon that dies from here on must never take
 * it for a state to resume, as the disk moves on. A failed resume puts the
 * manifest back, so the state stays for a retry.
 */
const consumeSavedState: BootStep = async (run, stack) => {
  const manifest = join(suspendDir(run.ctx, run.vm), SnapshotFiles.manifest);
  const aside = `${manifest}.resuming`;
  await run.ctx.deps.files.rename(manifest, aside);
  stack.defer(() => run.ctx.deps.files.rename(aside, manifest));
};

/** Removes what a suspend left that is not a complete state to resume (at daemon start). */
export async function removeStaleSuspend(ctx: VmContext, vm: VmRecord): Promise<void> {
  const dir = suspendDir(ctx, vm);
  await ctx.deps.files.removeDir(`${dir}.partial`);
  await ctx.deps.files.removeDir(dir);
}

/** The guest's clock stood still while it was on disk. */
const setGuestClock: BootStep = async (run) => {
  const { ctx, vm } = run;
  await ctx.deps.agents
    ?.setClock(vm.id, ctx.target(vm).agent)
    .catch((error: unknown) =>
      ctx.deps.logger.warn("setting the guest clock failed", { vm: vm.name, err: String(error) }),
    );
};
