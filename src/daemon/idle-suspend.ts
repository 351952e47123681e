/**
 * `vm.suspend_after_idle`: a periodic pass that suspends running VMs that
 * have been idle that long. Idle means no exec in flight, no exec started
 * or ended, and no byte through the VM's tap in either direction (SSH,
 * published ports and the guest's own traffic all cross it) since the last
 * change. The next exec resumes the VM (VmService.exec). A VM whose lock is
 * held is left for the next pass; a suspend that fails is logged and the
 * VM's mark starts over.
 */
import type { Logger } from "../core/log/index.ts";
import { type IdleMark, observeActivity, tapNameForVmId } from "../core/vm/index.ts";
import type { VmInfo } from "../protocol/index.ts";

export interface IdleSuspendDeps {
  idleMs: number;
  listVms(): Promise<VmInfo[]>;
  /** Exec events of the VM so far and how many run now. */
  execActivity(vmId: string): { events: number; inFlight: number };
  /** The tap's rx+tx byte count, or undefined when it cannot be read. */
  tapBytes(tap: string): Promise<number | undefined>;
  isBusy(vmId: string): boolean;
  suspend(name: string): Promise<unknown>;
  now(): number;
  logger: Logger;
}

/** One pass per call; returns the names it suspended. */
export function createIdleSuspender(deps: IdleSuspendDeps): () => Promise<string[]> {
  const marks = new Map<string, IdleMark>();
  return async () => {
    const now = deps.now();
    const suspended: string[] = [];
    const running = (await deps.listVms()).filter((vm) => vm.state === "running");
    for (const id of marks.keys()) if (!running.some((vm) => vm.id === id)) marks.delete(id);
    for (const vm of running) {
      const exec = deps.execActivity(vm.id);
      const bytes = await deps.tapBytes(tapNameForVmId(vm.id));
      // Unknowable activity is activity: the VM is never suspended on a guess.
      const signature = exec.inFlight > 0 || bytes === undefined ? `busy:${now}` : `${exec.events}:${bytes}`;
      const mark = observeActivity(marks.get(vm.id), signature, now);
      marks.set(vm.id, mark);
      if (now - mark.since < deps.idleMs || deps.isBusy(vm.id)) continue;
      try {
        await deps.suspend(vm.name);
        suspended.push(vm.name);
        deps.logger.info("suspended an idle VM", { vm: vm.name, idleMs: now - mark.since });
      } catch (error) {
        deps.logger.warn("could not suspend an idle VM", { vm: vm.name, err: String(error) });
      }
      marks.delete(vm.id);
    }
    return suspended;
  };
}
