/** Gates: hold an operation of a VM (by id) until a test releases it; an abort rejects with CANCELLED. */
import { cancelled } from "../../../src/core/async/index.ts";

export interface Gate {
  /** From now on, every passing VM waits until released. */
  hold(): void;
  /** Lets one VM pass (now, or when it arrives). */
  release(vmId: string): void;
  /** Lets every waiting VM pass and stops holding. */
  releaseAll(): void;
  /** VM ids waiting at the gate. */
  readonly waiting: readonly string[];
}

export interface PassableGate extends Gate {
  /** Waits while held; an abort of `signal` rejects with CANCELLED naming `step`. */
  pass(vmId: string, step: string, signal?: AbortSignal): Promise<void>;
}

export function createGate(): PassableGate {
  let holding = false;
  const waiting = new Map<string, () => void>();
  const passed = new Set<string>();
  return {
    hold() {
      holding = true;
    },
    release(vmId) {
      const resolve = waiting.get(vmId);
      waiting.delete(vmId);
      if (resolve) resolve();
      else passed.add(vmId);
    },
    releaseAll() {
      holding = false;
      for (const resolve of waiting.values()) resolve();
      waiting.clear();
    },
    get waiting() {
      return [...waiting.keys()];
    },
    pass(vmId, step, signal) {
      if (!holding || passed.delete(vmId)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          waiting.delete(vmId);
          reject(cancelled(undefined, step));
        };
        waiting.set(vmId, () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        });
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}
