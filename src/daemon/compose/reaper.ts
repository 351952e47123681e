/**
 * Periodic background work (the VM reaper) that never overlaps itself.
 */
import type { Logger } from "../../core/log/index.ts";

/**
 * Runs `task` every `ms`, one pass at a time: a tick that finds the previous
 * pass still running is skipped. A pass that throws is logged as a warning
 * and the next tick runs as usual. Disposing stops the ticks; disposing
 * asynchronously also waits for the pass in flight, so whatever the task
 * uses can be closed right after.
 */
export function startSerialInterval(
  task: () => Promise<unknown>,
  ms: number,
  logger: Logger,
): Disposable & AsyncDisposable {
  let pass: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (pass) return;
    pass = task()
      .then(
        () => undefined,
        (error: unknown) => logger.warn("periodic pass failed", { err: String(error) }),
      )
      .finally(() => {
        pass = undefined;
      });
  }, ms);
  return {
    [Symbol.dispose]() {
      clearInterval(timer);
    },
    async [Symbol.asyncDispose]() {
      clearInterval(timer);
      await pass;
    },
  };
}
