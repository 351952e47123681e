/**
 * The flattener on a thread of its own: the pull worker's main thread
 * fetches and hashes blobs while this thread decompresses, hashes and
 * writes the layers below, so a pull uses two cores instead of taking
 * turns on one. The same TreeFlattener (and so the same checks: digests,
 * diff_ids, confinement, whiteouts, owners) runs here; layers arrive in
 * order, each from the blob cache.
 *
 * This file is both the thread's entry (`workerData` holds the tree) and
 * `FlattenThread`, the handle the pull uses.
 */
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { BangerError, ErrorCode, isErrorCode } from "../../protocol/index.ts";
import { type LayerToApply, TreeFlattener } from "./flatten.ts";

type Request = { apply: { layer: LayerToApply; index: number } } | { finish: true };
type Reply = { ok: true } | { error: { code: string; message: string; hint: string | undefined } };

const THREAD = new URL(import.meta.url);

/** Applies layers to one tree on a thread; one call at a time, in order. */
export class FlattenThread {
  private readonly worker: Worker;
  private pending: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(tree: string) {
    this.worker = new Worker(THREAD, { workerData: { tree } });
    this.worker.on("message", (reply: Reply) => {
      const pending = this.pending;
      this.pending = undefined;
      if ("ok" in reply) pending?.resolve();
      else {
        const code = isErrorCode(reply.error.code) ? reply.error.code : ErrorCode.INTERNAL;
        pending?.reject(new BangerError(code, reply.error.message, { hint: reply.error.hint }));
      }
    });
    const fail = (error: Error): void => {
      this.failure = new BangerError(ErrorCode.INTERNAL, `the flatten thread failed: ${error.message}`);
      this.pending?.reject(this.failure);
      this.pending = undefined;
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => {
      if (this.pending) fail(new Error(`it exited with ${code}`));
    });
  }

  /** A layer given by its file in the blob cache (`stream` cannot cross threads). */
  apply(layer: LayerToApply, index: number, signal?: AbortSignal): Promise<void> {
    return this.call({ apply: { layer, index } }, signal);
  }

  finish(signal?: AbortSignal): Promise<void> {
    return this.call({ finish: true }, signal);
  }

  /** Ends the thread (also mid-layer: the staging tree is the caller's to remove). */
  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private call(request: Request, signal: AbortSignal | undefined): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.pending = undefined;
        void this.worker.terminate();
        reject(new BangerError(ErrorCode.CANCELLED, "the pull was cancelled"));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = (): void => signal?.removeEventListener("abort", onAbort);
      this.pending = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      this.worker.postMessage(request);
    });
  }
}

function replyOf(error: unknown): Reply {
  if (error instanceof BangerError)
    return { error: { code: error.code, message: error.message, hint: error.hint } };
  return {
    error: {
      code: ErrorCode.INTERNAL,
      message: `flattening failed: ${error instanceof Error ? error.message : String(error)}`,
      hint: undefined,
    },
  };
}

if (!isMainThread && parentPort && (workerData as { tree?: unknown } | null)?.tree !== undefined) {
  const port = parentPort;
  const flattener = new TreeFlattener((workerData as { tree: string }).tree);
  port.on("message", (request: Request) => {
    const work =
      "apply" in request ? flattener.apply(request.apply.layer, request.apply.index) : flattener.finish();
    work.then(
      () => port.postMessage({ ok: true } satisfies Reply),
      (error: unknown) => port.postMessage(replyOf(error)),
    );
  });
}
