/**
 * Bringing rows back in line with the host: `reconcile` once at daemon
 * start (each VM under its lock), and `reap` every second for VMs whose VMM
 * died on its own. Both release through `releaseRuntime`, so a VM found
 * dead gives back exactly what a stopped one does.
 */
import { errorMessage } from "../../core/async/index.ts";
import { emptyHandles, isActiveState, mayHoldRuntime, vmmExitReason } from "../../core/vm/index.ts";
import type { VmContext } from "./context.ts";
import { releaseRuntime } from "./stop.ts";

export interface ReconcileResult {
  kept: string[];
  demoted: string[];
  removedTaps: string[];
}

export async function reconcile(ctx: VmContext): Promise<ReconcileResult> {
  const { deps } = ctx;
  const { store, logger } = deps;
  const kept: string[] = [];
  const demoted: string[] = [];
  const owned = new Set<string>();
  for (const vm of store.listVms()) {
    await deps.vmLocks.run(vm.id, async () => {
      const handles = (await ctx.handles.read(vm)) ?? emptyHandles();
      const handle = ctx.handles.vmmHandle(handles);
      const driver = deps.drivers.get(vm.vmm);
      const alive = handle !== undefined && (await driver.isRunning(handle));
      if (alive && isActiveState(vm.state)) {
        ctx.handles.adopt(vm, handles);
        if (handles.tap) owned.add(handles.tap);
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
      if (handle || mayHoldRuntime(vm.state)) {
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
  const removedTaps = await deps.network.removeLeftoverTaps(owned).catch((error: unknown) => {
    logger.warn("could not list leftover taps", { err: String(error) });
    return [];
  });
  logger.info("reconciled", { kept, demoted, removedTaps });
  return { kept, demoted, removedTaps };
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
