/**
 * The Runner seam: every external tool (ip, nft, qemu-img, mkfs.ext4, ssh...)
 * runs through it. Argv only, never a shell string. Unit tests replace it
 * with a fake that matches argv and records calls.
 */
import { spawn } from "node:child_process";
import { cancelled } from "../../core/async/index.ts";
import { MIB } from "../../core/units.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface RunOptions {
  /** Aborting kills the process (SIGTERM, then SIGKILL after 2 s). */
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer | undefined;
  env?: Readonly<Record<string, string | undefined>> | undefined;
  cwd?: string | undefined;
  /** Resolve with a non-zero code instead of throwing CommandFailedError. */
  allowFailure?: boolean | undefined;
  /** Output kept per stream; the rest is dropped from the start (tail kept). */
  maxOutputBytes?: number | undefined;
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface Runner {
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
}

/** A command that exited non-zero (or by a signal). Carries argv and the tail of stderr. */
export class CommandFailedError extends Error {
  readonly argv: readonly string[];
  readonly result: RunResult;

  constructor(argv: readonly string[], result: RunResult) {
    const tail = result.stderr.trim().split("\n").slice(-5).join("\n");
    const how = result.signal ? `was killed by ${result.signal}` : `exited with ${result.code}`;
    super(`${argv.join(" ")} ${how}${tail ? `: ${tail}` : ""}`);
    this.name = "CommandFailedError";
    this.argv = argv;
    this.result = result;
  }
}

const DEFAULT_MAX_OUTPUT = 8 * MIB;

export interface ProcessRunnerOptions {
  /** Called after each command with its duration, for debug logging. */
  onRun?: (argv: readonly string[], result: RunResult) => void;
}

export function createProcessRunner(options: ProcessRunnerOptions = {}): Runner {
  return {
    run(argv, runOptions = {}) {
      return runProcess(argv, runOptions).then((result) => {
        options.onRun?.(argv, result);
        if (!runOptions.allowFailure && result.code !== 0) throw new CommandFailedError(argv, result);
        return result;
      });
    },
  };
}

function runProcess(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const [command, ...args] = argv;
  if (command === undefined) return Promise.reject(new Error("runner: empty argv"));
  if (options.signal?.aborted) return Promise.reject(cancelled(options.signal));
  const started = performance.now();
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env ? { ...options.env } : process.env,
      cwd: options.cwd,
    });
    const stdout = new TailBuffer(maxOutput);
    const stderr = new TailBuffer(maxOutput);
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.stdin.on("error", () => {});
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();

    let killTimer: NodeJS.Timeout | undefined;
    const terminate = () => {
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), 2000);
      killTimer.unref();
    };
    const timeout = options.timeoutMs !== undefined ? setTimeout(terminate, options.timeoutMs) : undefined;
    const onAbort = () => terminate();
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.on("error", (error: NodeJS.ErrnoException) => {
      cleanup();
      if (error.code === "ENOENT") {
        reject(
          new BangerError(ErrorCode.TOOL_MISSING, `${command} is not installed or not on PATH`, {
            cause: error,
            data: { tool: command },
          }),
        );
      } else {
        reject(error);
      }
    });
    child.on("close", (code, signal) => {
      cleanup();
      if (options.signal?.aborted) {
        reject(cancelled(options.signal));
        return;
      }
      resolve({
        code,
        signal,
        stdout: stdout.toString(),
        stderr: stderr.toString(),
        durationMs: performance.now() - started,
      });
    });

    function cleanup() {
      if (timeout) clearTimeout(timeout);
      if (killTimer) clearTimeout(killTimer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  });
}

/** Keeps the last `limit` bytes of a stream. */
class TailBuffer {
  #chunks: Buffer[] = [];
  #size = 0;
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#size > this.limit && this.#chunks.length > 1) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  toString(): string {
    const all = Buffer.concat(this.#chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString("utf8");
  }
}
