/**
 * A registry of async operations (begin, status, cancel, prune). An
 * operation runs in the background; its state is observable and it can be
 * cancelled through its AbortSignal. Owns its own bookkeeping; holds no lock
 * across the operation's work.
 */
import { isCancelled, type ProgressStep } from "../../protocol/index.ts";
import { cancelled } from "../async/index.ts";

export type OperationState = "running" | "succeeded" | "failed" | "cancelled";

export interface OperationSnapshot<T> {
  id: string;
  kind: string;
  state: OperationState;
  step: ProgressStep;
  message: string;
  subject: string | null;
  result: T | undefined;
  error: unknown;
  startedAt: Date;
  finishedAt: Date | null;
}

export interface OperationContext {
  signal: AbortSignal;
  /** Records the step the operation is on; observable through status. */
  report(step: ProgressStep, message: string): void;
}

export interface OperationRegistryOptions {
  now: () => Date;
  newId: () => string;
  /** Finished operations older than this are pruned. */
  retainMs: number;
}

interface Entry<T> {
  snapshot: OperationSnapshot<T>;
  controller: AbortController;
  done: Promise<void>;
}

export class OperationRegistry<T> {
  #entries = new Map<string, Entry<T>>();
  #options: OperationRegistryOptions;

  constructor(options: OperationRegistryOptions) {
    this.#options = options;
  }

  /**
   * Starts `work` in the background and returns its snapshot at once. A
   * failure counts as "cancelled" when the operation was cancelled or `work`
   * rejected with a CANCELLED error.
   */
  begin(
    kind: string,
    subject: string | null,
    work: (ctx: OperationContext) => Promise<T>,
  ): OperationSnapshot<T> {
    this.prune();
    const controller = new AbortController();
    const snapshot: OperationSnapshot<T> = {
      id: this.#options.newId(),
      kind,
      state: "running",
      step: "queued",
      message: "queued",
      subject,
      result: undefined,
      error: undefined,
      startedAt: this.#options.now(),
      finishedAt: null,
    };
    const ctx: OperationContext = {
      signal: controller.signal,
      report: (step, message) => {
        snapshot.step = step;
        snapshot.message = message;
      },
    };
    const done = (async () => {
      try {
        snapshot.result = await work(ctx);
        snapshot.state = "succeeded";
      } catch (error) {
        snapshot.error = error;
        snapshot.state = controller.signal.aborted || isCancelled(error) ? "cancelled" : "failed";
      } finally {
        snapshot.finishedAt = this.#options.now();
      }
    })();
    this.#entries.set(snapshot.id, { snapshot, controller, done });
    return { ...snapshot };
  }

  get(id: string): OperationSnapshot<T> | undefined {
    const entry = this.#entries.get(id);
    return entry ? { ...entry.snapshot } : undefined;
  }

  /** Resolves when the operation finishes or `timeoutMs` passes, whichever is first. */
  async wait(id: string, timeoutMs: number): Promise<OperationSnapshot<T> | undefined> {
    const entry = this.#entries.get(id);
    if (!entry) return undefined;
    if (entry.snapshot.state === "running" && timeoutMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        entry.done,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    return { ...entry.snapshot };
  }

  /** Aborts a running operation and waits until its unwinding has finished. */
  async cancel(id: string): Promise<OperationSnapshot<T> | undefined> {
    const entry = this.#entries.get(id);
    if (!entry) return undefined;
    if (entry.snapshot.state === "running") {
      entry.controller.abort(cancelled(undefined, `operation ${id}`));
      await entry.done;
    }
    return { ...entry.snapshot };
  }

  list(): OperationSnapshot<T>[] {
    return [...this.#entries.values()].map((entry) => ({ ...entry.snapshot }));
  }

  get running(): number {
    let count = 0;
    for (const entry of this.#entries.values()) if (entry.snapshot.state === "running") count += 1;
    return count;
  }

  /** Drops finished operations older than the retention window. */
  prune(): number {
    const cutoff = this.#options.now().getTime() - this.#options.retainMs;
    let removed = 0;
    for (const [id, entry] of this.#entries) {
      const finished = entry.snapshot.finishedAt;
      if (finished !== null && finished.getTime() < cutoff) {
        this.#entries.delete(id);
        removed += 1;
      }
    }
    return removed;
  }

  /** Cancels everything still running; used at daemon shutdown. */
  async cancelAll(): Promise<void> {
    await Promise.all([...this.#entries.keys()].map((id) => this.cancel(id)));
  }
}
