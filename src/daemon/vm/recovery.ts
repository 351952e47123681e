/**
 * Bringing rows back in line with the host: `reconcile` once at daemon
 * start (each VM under its lock), and `reap` every second for VMs whose VMM
 * died on its own. Both release through `releaseRuntime`, so a VM found
 * dead gives back exactly what a stopped one does.
 */

import { join } from "node:path";
import { errorMessage } from "../../core/async/index.ts";
import {
  emptyHandles,
  isActiveState,
  mayHoldRuntime,
  type VmHandles,
  type VmRecord,
  vmmExitReason,
} from "../../core/vm/index.ts";
import type { VmContext } from "./context.ts";
import { CREATE_PENDING_FILE, removeVm } from "./create.ts";
import { releaseRuntime } from "./stop.ts";
import { killStrayVmms, listVmms } from "./strays.ts";
import { isSuspendComplete, removeStaleSuspend } from "./suspend.ts";

export interface ReconcileResult {
  kept: string[];
  demoted: string[];
  /** VMs whose create a daemon crash interrupted: removed with all they held. */
  removed: string[];
  removedTaps: string[];
}

export async function reconcile(ctx: VmContext): Promise<ReconcileResult> {
  const { deps } = ctx;
  const { store, logger } = deps;
  const kept: string[] = [];
  const demoted: string[] = [];
  const removed: string[] = [];
  const owned = new Set<string>();
  /** Recorded VMMs of the VMs kept running; every other VMM of this home is killed. */
  const keptPids = new Set<number>();
  const found = await listVmms(deps.census, logger);
  for (const vm of store.listVms()) {
    await deps.vmLocks.run(vm.id, async () => {
      const handles = (await ctx.handles.read(vm)) ?? emptyHandles();
      const handle = ctx.handles.vmmHandle(handles);
      const driver = deps.drivers.get(vm.vmm);
      // A create the daemon died in: the user was told it failed, so nothing of it stays.
      if (await deps.files.exists(join(ctx.paths(vm).dir, CREATE_PENDING_FILE))) {
        if (handle && (await driver.isRunning(handle))) await driver.kill(handle);
        await killStrayVmms({ census: deps.census, logger, vmId: vm.id, found });
        await releaseRuntime(ctx, vm, handles);
        await removeVm(ctx, vm);
        removed.push(vm.name);
        return;
      }
      const alive = handle !== undefined && (await driver.isRunning(handle));
      if (alive && isActiveState(vm.state)) {
        await removeStaleSuspend(ctx, vm);
        ctx.handles.adopt(vm, handles);
        if (handles.tap) owned.add(handles.tap);
        keptPids.add(handle.pid);
        kept.push(vm.name);
        // A VMM whose control channel is dead still runs its guest; keep it, and say so.
        const status = await driver.reattach(handle).catch((error: unknown) => {
          const reason = `its ${vm.vmm} control channel did not answer after a daemon restart: ${errorMessage(error)}`;
          store.setVmState(vm.id, vm.state, reason, deps.now().toISOString());
          logger.warn("kept VM without a control channel", { vm: vm.name, err: reason });
          return "unreachable" as const;
        });
        logger.info("reattached VM", { vm: vm.name, vmm: vm.vmm, status });
        // A daemon that died between pausing or resuming a VMM and writing the row left it behind.
        if (status !== "unreachable" && status !== "other" && status !== vm.state) {
          ctx.setState(vm, status, vm.lastError);
        }
        return;
      }
      if (alive && handle) await driver.kill(handle);
      // Also a VMM its handles.json does not name (lost, torn, or never written).
      const strays = await killStrayVmms({ census: deps.census, logger, vmId: vm.id, found });
      const settled = await settleSuspended(ctx, vm, handles, alive);
      if (settled === "changed") demoted.push(vm.name);
      if (settled) return;
      if (handle || strays.length > 0 || mayHoldRuntime(vm.state)) {
        await releaseRuntime(ctx, vm, handles);
        if (vm.state !== "stopped") {
          ctx.setState(
            vm,
            "stopped",
            isActiveState(vm.state)
              ? "the VMM process was gone when the daemon started"
              : `interrupted while ${vm.state}`,
          );
        }
        demoted.push(vm.name);
      }
    });
  }
  // VMMs of VMs the store no longer has (or whose directory is gone) end too.
  const killedStrays = await killStrayVmms({ census: deps.census, logger, keep: keptPids, found });
  if (killedStrays.length > 0) logger.warn("killed VMMs no VM owned", { pids: killedStrays });
  const removedTaps = await deps.network.removeLeftoverTaps(owned).catch((error: unknown) => {
    logger.warn("could not list leftover taps", { err: String(error) });
    return [];
  });
  logger.info("reconciled", { kept, demoted, removed, removedTaps });
  return { kept, demoted, removed, removedTaps };
}

/**
 * A suspended VM's state, seen at daemon start: a `suspended` row without a
 * complete saved state becomes `stopped` (its disk is intact); an active
 * row whose VMM is gone but whose state was completely saved (a daemon that
 * died between the save and the row) becomes `suspended`. Undefined for
 * any other VM.
 */
async function settleSuspended(
  ctx: VmContext,
  vm: VmRecord,
  handles: VmHandles,
  alive: boolean,
): Promise<"unchanged" | "changed" | undefined> {
  if (vm.state === "suspended") {
    if (await isSuspendComplete(ctx, vm)) return "unchanged";
    ctx.setState(vm, "stopped", "its suspended state was missing when the daemon started");
    return "changed";
  }
  if (alive || !isActiveState(vm.state) || !(await isSuspendComplete(ctx, vm))) {
    await removeStaleSuspend(ctx, vm);
    return undefined;
  }
  await releaseRuntime(ctx, vm, handles);
  ctx.setState(vm, "suspended", null);
  return "changed";
}

/**
 * Finds active VMs whose VMM is gone, and under each one's lock (after a
 * re-check) releases it like a kill and marks it stopped with the reason its
 * console gives. A VM whose lock is held is left to the op holding it.
 */
export async function reap(ctx: VmContext): Promise<string[]> {
  const { deps } = ctx;
  const reaped: string[] = [];
  for (const vm of deps.store.listVms()) {
    if (!isActiveState(vm.state) || deps.vmLocks.isLocked(vm.id) || (await ctx.isAlive(vm))) continue;
    await deps.vmLocks.run(vm.id, async () => {
      const fresh = deps.store.getVmById(vm.id);
      if (!fresh || !isActiveState(fresh.state) || (await ctx.isAlive(fresh))) return;
      const handles = await ctx.handles.load(fresh);
      const tail = await deps.files.tail(ctx.paths(fresh).console, 4096).catch(() => "");
      const reason = vmmExitReason(tail, handles.pid);
      await releaseRuntime(ctx, fresh, handles);
      ctx.setState(fresh, "stopped", reason);
      deps.logger.warn("reaped a VM whose VMM died", { vm: fresh.name, reason });
      reaped.push(fresh.name);
    });
  }
  return reaped;
}
