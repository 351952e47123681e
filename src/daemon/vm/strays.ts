/**
 * Stray VMMs: processes of this home's VMs that no live VM owns. handles.json
 * can miss a VMM (a daemon killed between spawn and record, a torn or
 * deleted file, a VM directory removed under a running VM), so reconcile,
 * delete and start also look the VMMs up from /proc through `VmmCensus` and
 * kill every one that is not the recorded VMM of a VM kept running.
 */
import type { Logger } from "../../core/log/index.ts";
import type { VmmHandle } from "../../core/vmm/contract.ts";

/** Finds and ends this home's VMM processes whatever handles.json says (src/sys/vmm/census.ts). */
export interface VmmCensus {
  list(): Promise<{ vmId: string; handle: VmmHandle }[]>;
  /** SIGKILL, then waits until the process is gone; a process that is no longer ours is left alone. */
  kill(handle: VmmHandle): Promise<void>;
}

/**
 * Kills the VMMs of `vmId` (or of every VM when it is undefined) except the
 * pids in `keep`. Returns the pids it killed. A census that cannot read
 * /proc is logged and kills nothing.
 */
export async function killStrayVmms(options: {
  census: VmmCensus | undefined;
  logger: Logger;
  vmId?: string | undefined;
  keep?: ReadonlySet<number> | undefined;
  /** A listing taken earlier in the same pass (reconcile lists once for all VMs). */
  found?: readonly { vmId: string; handle: VmmHandle }[] | undefined;
}): Promise<number[]> {
  if (!options.census) return [];
  const found = options.found ?? (await listVmms(options.census, options.logger));
  const killed: number[] = [];
  for (const { vmId, handle } of found) {
    if (options.vmId !== undefined && vmId !== options.vmId) continue;
    if (options.keep?.has(handle.pid)) continue;
    options.logger.warn("killing a VMM no live VM owns", { vmId, pid: handle.pid });
    await options.census.kill(handle);
    killed.push(handle.pid);
  }
  return killed;
}

/** The census's listing; [] (logged) when /proc cannot be read. */
export async function listVmms(
  census: VmmCensus | undefined,
  logger: Logger,
): Promise<{ vmId: string; handle: VmmHandle }[]> {
  if (!census) return [];
  try {
    return await census.list();
  } catch (error) {
    logger.warn("cannot list VMM processes; strays are left for the next reconcile", { err: String(error) });
    return [];
  }
}
