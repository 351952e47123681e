/**
 * Runs the capability hooks (VmHook in platform.ts) of one VM: those of a
 * phase at start, each registered for undo on the start's stack before it
 * runs; all of them, in reverse order, at stop. A failing stop is logged and
 * the others still run.
 */
import type { Logger } from "../../core/log/index.ts";
import { tapNameForVmId, type VmRecord } from "../../core/vm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { VmHook, VmHookContext } from "./platform.ts";

export interface HookRunner {
  /** Starts the hooks of `phase` in order; each one's stop is deferred on `stack` first. */
  start(
    vm: VmRecord,
    phase: VmHook["phase"],
    stack: AsyncDisposableStack,
    signal: AbortSignal,
  ): Promise<void>;
  /** Stops every hook (idempotent), in reverse order. */
  stopAll(vm: VmRecord): Promise<void>;
}

export function createHookRunner(options: { hooks: readonly VmHook[]; logger: Logger }): HookRunner {
  const { hooks, logger } = options;
  const contextOf = (vm: VmRecord): VmHookContext => ({
    vmId: vm.id,
    vmName: vm.name,
    guestIp: vm.guestIp,
    tap: tapNameForVmId(vm.id),
  });
  const stopEach = async (vm: VmRecord, only: readonly VmHook[]): Promise<void> => {
    for (const hook of [...only].reverse()) {
      await hook
        .stop(contextOf(vm))
        .catch((error: unknown) =>
          logger.warn("capability hook stop failed", { vm: vm.name, hook: hook.name, err: String(error) }),
        );
    }
  };
  return {
    async start(vm, phase, stack, signal) {
      for (const hook of hooks.filter((candidate) => candidate.phase === phase)) {
        stack.defer(() => stopEach(vm, [hook]));
        try {
          await hook.start({ ...contextOf(vm), signal });
        } catch (error) {
          if (error instanceof BangerError) throw error;
          throw new BangerError(
            ErrorCode.BOOT_FAILED,
            `capability '${hook.name}' failed to start: ${String(error)}`,
            {
              cause: error,
            },
          );
        }
      }
    },
    stopAll: (vm) => stopEach(vm, hooks),
  };
}
