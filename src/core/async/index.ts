/**
 * The one vocabulary for cancellation and waiting. Every long operation takes
 * an AbortSignal; when it aborts, the operation rejects with `cancelled()`, a
 * CANCELLED BangerError whose cause is the signal's reason. Waiting is
 * `sleep` (wakes early, rejecting, on abort) and `pollUntil` (a check
 * repeated until it holds, the time runs out or the signal aborts).
 * Pure: timers only, no I/O.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface CancelledOptions {
  /** Overrides the cause (the signal's reason by default). */
  cause?: unknown;
  /** Overrides the code's default hint (for work a cancel does not undo). */
  hint?: string;
}

/**
 * The CANCELLED error: "<what> cancelled", or "cancelled" without `what`.
 * Its cause is `options.cause`, else the signal's abort reason.
 */
export function cancelled(signal?: AbortSignal, what?: string, options: CancelledOptions = {}): BangerError {
  const cause = "cause" in options ? options.cause : signal?.reason;
  return new BangerError(ErrorCode.CANCELLED, what ? `${what} cancelled` : "cancelled", {
    cause,
    ...(options.hint === undefined ? {} : { hint: options.hint }),
  });
}

/**
 * What to throw for `error`, which ended work `signal` governs: the
 * CANCELLED error of `what` (with `hint`, its cause `error`) when the
 * signal has aborted, since the abort is why the work failed; else `error`.
 */
export function cancelledIfAborted(
  error: unknown,
  signal: AbortSignal | undefined,
  what: string,
  hint?: string,
): unknown {
  if (!signal?.aborted) return error;
  return cancelled(signal, what, { cause: error, ...(hint === undefined ? {} : { hint }) });
}

/** Throws `cancelled(signal, what)` when the signal has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw cancelled(signal, what);
}

/** Resolves after `ms`; rejects with `cancelled(signal)` as soon as the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(cancelled(signal));
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelled(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export interface PollOptions {
  /** How long to keep trying in total, in milliseconds (a duration, not a timestamp). */
  timeoutMs: number;
  /** Pause between attempts, in milliseconds. */
  intervalMs: number;
  /** Aborting rejects with `cancelled(signal)` between attempts. */
  signal?: AbortSignal | undefined;
}

/**
 * Runs `check` until it returns true (resolves true) or `timeoutMs` has
 * passed since the first attempt (resolves false). The check always runs at
 * least once, and once more at the deadline's edge.
 */
export async function pollUntil(
  check: () => boolean | Promise<boolean>,
  options: PollOptions,
): Promise<boolean> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    throwIfAborted(options.signal);
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(options.intervalMs, options.signal);
  }
}

/** The message of an Error, or the string form of anything else thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What `drained` needs of a writable stream or socket. */
interface DrainEmitter {
  on(event: "drain" | "close" | "error", listener: () => void): unknown;
  off(event: "drain" | "close" | "error", listener: () => void): unknown;
  /** A destroyed stream emits nothing more: it counts as drained. */
  readonly destroyed?: boolean;
}

/**
 * Resolves at the stream's next `drain`, or when it errs or closes (a broken
 * or closed stream never drains; its own error handling reports why).
 */
export function drained(stream: DrainEmitter): Promise<void> {
  if (stream.destroyed === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("error", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
    stream.on("error", done);
  });
}
