/**
 * Numbered steps and injected faults. Every call into a fake adapter is one
 * step of the operation in progress; `failAt(k)` makes the k-th step from
 * now throw, `cancelAt(k, controller)` aborts the controller at the k-th
 * step, and every fake that gets a signal then throws CANCELLED.
 */
import { cancelled } from "../../../src/core/async/index.ts";
import { BangerError, ErrorCode } from "../../../src/protocol/index.ts";
import type { EventLog } from "./ledger.ts";

/** Throws CANCELLED when `signal` is aborted. */
export function checkSignal(step: string, signal?: AbortSignal): void {
  if (signal?.aborted) throw cancelled(undefined, step);
}

export class Faults {
  #steps: string[] = [];
  #fault: { k: number; code: ErrorCode } | null = null;
  #cancel: { k: number; controller: AbortController } | null = null;
  #injected: { step: string; index: number } | null = null;
  readonly #log: EventLog;

  constructor(log: EventLog) {
    this.#log = log;
  }

  /** Names of the step calls since the last arm or reset, in order. */
  get steps(): readonly string[] {
    return this.#steps;
  }

  /** Whether the armed fault or cancel has fired, and at which step. */
  get injected(): { step: string; index: number } | null {
    return this.#injected;
  }

  /** The k-th step call from now (1-based) throws a BangerError with `code`. */
  failAt(k: number, code: ErrorCode = ErrorCode.NETWORK_FAILED): void {
    this.reset();
    this.#fault = { k, code };
  }

  /** The k-th step call from now (1-based) aborts `controller` before it runs. */
  cancelAt(k: number, controller: AbortController): void {
    this.reset();
    this.#cancel = { k, controller };
  }

  /** Disarms faults and restarts step counting. */
  reset(): void {
    this.#steps = [];
    this.#injected = null;
    this.#fault = null;
    this.#cancel = null;
  }

  /** Counts one step; throws when it is the fault point; true when it is the cancel point. */
  step(name: string): boolean {
    this.#steps.push(name);
    const index = this.#steps.length;
    if (this.#fault && index === this.#fault.k) {
      this.#injected = { step: name, index };
      this.#log.record({ kind: "fault", step: name });
      throw new BangerError(this.#fault.code, `injected fault at step ${index} (${name})`);
    }
    if (this.#cancel && index === this.#cancel.k) {
      this.#injected = { step: name, index };
      this.#log.record({ kind: "cancel", step: name });
      this.#cancel.controller.abort(cancelled(undefined, name));
      return true;
    }
    return false;
  }
}
