/**
 * Ending a VM's run: a graceful stop or a kill, pause and resume, and
 * `releaseRuntime`, the one function that gives back everything a VM held
 * on the host once its VMM is gone (used by stop, kill, the reaper and
 * reconcile alike).
 *
 * A graceful stop honours its options: it reports progress, and a cancel
 * ends the wait for the guest early by killing the VMM, so the VM never
 * stays half-stopped; the stop then fails with CANCELLED and the VM is
 * `stopped` with the reason.
 */
import { cancelled } from "../../core/async/index.ts";
import type { VmHandles, VmRecord } from "../../core/vm/index.ts";
import type { VmmDriver, VmmHandle } from "../../core/vmm/contract.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { OpOptions, VmContext } from "./context.ts";

export type StopMode = "graceful" | "kill";

/** Gives back everything a VM holds on the host, after its VMM is gone: hooks, channel, tap, disk, sockets, handles. */
export async function releaseRuntime(ctx: VmContext, vm: VmRecord, handles: VmHandles): Promise<void> {
  const { deps } = ctx;
  await ctx.hooks.stopAll(vm);
  await ctx.channel.close(ctx.target(vm)).catch(() => undefined);
  if (handles.tap) await deps.network.deleteTap(handles.tap);
  if (handles.disk) await deps.disks.detach(handles.disk);
  if (handles.controlSocket) await deps.files.removeFile(handles.controlSocket);
  await ctx.handles.clear(vm);
}

/** Stops (or kills) a VM under its lock and releases what it held; returns the stopped row. */
export async function stopLocked(
  ctx: VmContext,
  vm: VmRecord,
  mode: StopMode,
  options?: OpOptions,
): Promise<VmRecord> {
  const handles = await ctx.handles.load(vm);
  const handle = ctx.handles.vmmHandle(handles);
  let current = vm;
  let interrupted = false;
  if (handle) {
    const driver = ctx.deps.drivers.get(vm.vmm);
    if (mode === "graceful") {
      options?.progress({ step: "vm.stop", message: `stopping ${vm.name}` });
      // A paused guest cannot see the power button: let it run to shut down.
      if (vm.state === "paused") await driver.resume(handle).catch(() => undefined);
      current = ctx.setState(vm, "stopping");
      await ctx.channel.close(ctx.target(vm)).catch(() => undefined);
      interrupted = await gracefulStop(ctx, driver, handle, options?.signal);
    } else {
      await driver.kill(handle);
    }
  }
  await releaseRuntime(ctx, vm, handles);
  const reason = interrupted
    ? "the stop was cancelled; the VMM was killed"
    : mode === "kill"
      ? "killed"
      : null;
  const stopped = ctx.setState(current, "stopped", reason);
  if (interrupted) {
    throw cancelled(options?.signal, `stop of VM '${vm.name}'`);
  }
  return stopped;
}

/** driver.stop, cut short by a cancel (which kills the VMM); true when cancelled. */
async function gracefulStop(
  ctx: VmContext,
  driver: VmmDriver,
  handle: VmmHandle,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  if (signal?.aborted) {
    await driver.kill(handle);
    return true;
  }
  const stopping = driver.stop(handle, { timeoutMs: ctx.deps.config.vm.stop_timeout_s * 1000 });
  if (!signal) {
    await stopping;
    return false;
  }
  let onAbort = () => {};
  const aborted = new Promise<"cancelled">((resolve) => {
    onAbort = () => resolve("cancelled");
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    const outcome = await Promise.race([stopping.then(() => "stopped" as const), aborted]);
    if (outcome === "stopped") return false;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  // The ladder may still be waiting on the guest; the kill ends the process it
  // waits for, and whatever it does after that is idempotent (socket removal).
  stopping.catch(() => undefined);
  await driver.kill(handle);
  return true;
}

/** Pauses or resumes a VM (under its lock); asking for the state it is already in is a no-op. */
export async function pauseOrResume(
  ctx: VmContext,
  vm: VmRecord,
  action: "pause" | "resume",
): Promise<VmRecord> {
  const [from, to] = action === "pause" ? (["running", "paused"] as const) : (["paused", "running"] as const);
  if (vm.state === to && (await ctx.isAlive(vm))) return vm;
  if (vm.state !== from || !(await ctx.isAlive(vm))) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `VM '${vm.name}' is ${vm.state}; only a ${action === "resume" ? "paused or suspended" : from} VM can be ${action}d`,
      {
        hint: `see its state with \`banger vm show ${vm.name}\``,
      },
    );
  }
  const handle = ctx.handles.vmmHandle(await ctx.handles.load(vm))!;
  await ctx.deps.drivers.get(vm.vmm)[action](handle);
  ctx.deps.logger.info(`vm ${action}d`, { vm: vm.name });
  if (action === "resume" && ctx.deps.agents) {
    // The guest's clock stood still while it was paused.
    await ctx.deps.agents
      .setClock(vm.id, ctx.target(vm).agent)
      .catch((error: unknown) =>
        ctx.deps.logger.warn("setting the guest clock failed", { vm: vm.name, err: String(error) }),
      );
  }
  return ctx.setState(vm, to, vm.lastError);
}
