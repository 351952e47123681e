/**
 * One task shared by concurrent callers: the first caller starts it, later
 * callers join it and all get its result and its events. A caller that
 * aborts leaves at once; the task itself is aborted only when every caller
 * has left, and the last one to leave waits until the task has unwound.
 */
import { cancelled } from "../../core/async/index.ts";

interface Running<T, E> {
  controller: AbortController;
  listeners: Set<(event: E) => void>;
  callers: number;
  settled: boolean;
  promise: Promise<T>;
}

export interface JoinOptions<E> {
  signal?: AbortSignal | undefined;
  onEvent?: ((event: E) => void) | undefined;
}

export class SharedTask<T, E> {
  #running: Running<T, E> | undefined;

  /** Whether a task is in flight. */
  get busy(): boolean {
    return this.#running !== undefined;
  }

  join(
    start: (signal: AbortSignal, emit: (event: E) => void) => Promise<T>,
    options: JoinOptions<E> = {},
  ): Promise<T> {
    if (options.signal?.aborted) return Promise.reject(cancelled(options.signal));
    const running = this.#running ?? this.#start(start);
    running.callers += 1;
    const onEvent = options.onEvent;
    if (onEvent) running.listeners.add(onEvent);
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const leave = () => {
        if (left) return false;
        left = true;
        running.callers -= 1;
        if (onEvent) running.listeners.delete(onEvent);
        options.signal?.removeEventListener("abort", onAbort);
        return true;
      };
      const onAbort = () => {
        if (!leave()) return;
        const reason = options.signal?.reason;
        if (running.callers > 0 || running.settled) {
          reject(cancelled(options.signal));
          return;
        }
        running.controller.abort(reason);
        running.promise.then(
          () => reject(cancelled(options.signal)),
          (error: unknown) => reject(error),
        );
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      running.promise.then(
        (value) => {
          if (leave()) resolve(value);
        },
        (error: unknown) => {
          if (leave()) reject(error);
        },
      );
    });
  }

  #start(start: (signal: AbortSignal, emit: (event: E) => void) => Promise<T>): Running<T, E> {
    const controller = new AbortController();
    const listeners = new Set<(event: E) => void>();
    const emit = (event: E) => {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          // A caller's broken listener must not break the task the others share.
        }
      }
    };
    const running: Running<T, E> = {
      controller,
      listeners,
      callers: 0,
      settled: false,
      promise: Promise.resolve().then(() => start(controller.signal, emit)),
    };
    running.promise.then(
      () => this.#finish(running),
      () => this.#finish(running),
    );
    this.#running = running;
    return running;
  }

  #finish(running: Running<T, E>): void {
    running.settled = true;
    if (this.#running === running) this.#running = undefined;
  }
}
