/**
 * Runs the image worker (worker.ts) as a child process, optionally behind a
 * launcher argv (nsenter into the host's network namespace), and turns its
 * JSON lines into progress callbacks and one result or BangerError.
 * Cancelling sends SIGTERM; the worker aborts and exits.
 */
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { BangerError, ErrorCode, isErrorCode, type ProgressStep } from "../../protocol/index.ts";
import type { WorkerLine, WorkerRequest, WorkerResult } from "./worker.ts";

const WORKER = new URL("./worker.ts", import.meta.url).pathname;

export interface WorkerRunOptions {
  request: WorkerRequest;
  /** Argv prefix, e.g. nsenter into the host's network namespace. */
  launcher?: readonly string[] | undefined;
  signal?: AbortSignal | undefined;
  /**
   * A private directory (the daemon's own cache) where Node keeps the
   * worker's compiled modules between pulls: without it every pull pays
   * for compiling its TypeScript again (about 0.3 s of a pull's start).
   */
  compileCacheDir?: string | undefined;
  onProgress?:
    | ((event: { step: ProgressStep; message: string; current?: number; total?: number }) => void)
    | undefined;
}

export type { WorkerRequest, WorkerResult } from "./worker.ts";

export function runImageWorker(options: WorkerRunOptions): Promise<WorkerResult> {
  // A larger young generation: a pull allocates a buffer per network and decompressed chunk, and the
  // default one makes the worker spend a fifth of its time collecting them.
  const argv = [...(options.launcher ?? []), process.execPath, "--max-semi-space-size=16", WORKER];
  let env: NodeJS.ProcessEnv | undefined;
  if (options.compileCacheDir !== undefined) {
    mkdirSync(options.compileCacheDir, { recursive: true, mode: 0o700 });
    env = { ...process.env, NODE_COMPILE_CACHE: options.compileCacheDir };
  }
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env });
  child.stdin.end(JSON.stringify(options.request));
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const onAbort = (): void => void child.kill("SIGTERM");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  let result: WorkerResult | undefined;
  let failure: BangerError | undefined;
  const lines = createInterface({ input: child.stdout });
  lines.on("line", (text) => {
    let line: WorkerLine;
    try {
      line = JSON.parse(text) as WorkerLine;
    } catch {
      return;
    }
    if ("progress" in line) options.onProgress?.(line.progress);
    else if ("result" in line) result = line.result;
    else if ("error" in line) {
      const code = isErrorCode(line.error.code) ? line.error.code : ErrorCode.INTERNAL;
      failure = new BangerError(code, line.error.message, { hint: line.error.hint });
    }
  });
  return new Promise((resolve, reject) => {
    child.once("error", (error) =>
      reject(new BangerError(ErrorCode.TOOL_MISSING, `cannot start the image worker: ${error.message}`)),
    );
    child.once("close", (code, signal) => {
      options.signal?.removeEventListener("abort", onAbort);
      if (options.signal?.aborted)
        reject(new BangerError(ErrorCode.CANCELLED, "the image pull was cancelled"));
      else if (failure) reject(failure);
      else if (result && code === 0) resolve(result);
      else
        reject(
          new BangerError(
            ErrorCode.INTERNAL,
            `the image worker ${signal ? `was killed by ${signal}` : `exited with ${code}`}${stderr ? `: ${stderr.trim().split("\n").slice(-3).join(" ")}` : ""}`,
          ),
        );
    });
  });
}
