/**
 * The Runner seam: every external tool (ip, nft, qemu-img, mkfs.ext4, ssh...)
 * runs through it. Argv only, never a shell string. Unit tests replace it
 * with a fake that matches argv and records calls.
 *
 * `spawnProcess` is the one place the daemon starts a child (short tools here,
 * long-lived ssh and VMMs in their adapters): it attaches error handling
 * before anything can fail and turns spawn failures (missing tool, EMFILE,
 * ENFILE, EAGAIN, E2BIG) into BangerErrors for the request that asked.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { cancelled } from "../../core/async/index.ts";
import { MIB } from "../../core/units.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/**
 * Starts `argv` and resolves once the process exists. A failure to start
 * rejects with a BangerError naming the command; it never surfaces as an
 * unhandled 'error' event. Later 'error' events (a failed kill) are ignored.
 */
export function spawnProcess(argv: readonly string[], options: SpawnOptions): Promise<ChildProcess> {
  const [command, ...args] = argv;
  if (command === undefined) return Promise.reject(new Error("spawnProcess: empty argv"));
  let child: ChildProcess;
  try {
    child = spawn(command, args, options);
  } catch (error) {
    return Promise.reject(spawnFailure(command, args, error));
  }
  return new Promise<ChildProcess>((resolve, reject) => {
    const onError = (error: Error) => {
      child.off("spawn", onSpawn);
      reject(spawnFailure(command, args, error));
    };
    const onSpawn = () => {
      child.off("error", onError);
      resolve(child);
    };
    child.on("error", () => {});
    child.once("error", onError);
    child.once("spawn", onSpawn);
  });
}

/** Maps a spawn failure to a clear error for the request that asked. */
function spawnFailure(command: string, args: readonly string[], error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const options = { cause: error, data: { tool: command, errno: code } };
  switch (code) {
    case "ENOENT":
      return new BangerError(ErrorCode.TOOL_MISSING, `${command} is not installed or not on PATH`, options);
    case "EMFILE":
    case "ENFILE":
      return new BangerError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `cannot start ${command}: the daemon is out of file descriptors (${code})`,
        options,
      );
    case "EAGAIN":
      return new BangerError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `cannot start ${command}: the process limit is reached (EAGAIN)`,
        options,
      );
    case "E2BIG": {
      const bytes = args.reduce((sum, arg) => sum + Buffer.byteLength(arg) + 1, 0);
      return new BangerError(
        ErrorCode.LIMIT_EXCEEDED,
        `the arguments of ${command} are too long (${bytes} bytes; one argument may hold at most 128 KiB)`,
        options,
      );
    }
    case "EACCES":
      return new BangerError(ErrorCode.PERMISSION_DENIED, `no permission to run ${command}`, options);
    default:
      return error instanceof Error ? error : new Error(String(error));
  }
}

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

async function runProcess(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  if (options.signal?.aborted) throw cancelled(options.signal);
  const started = performance.now();
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const child = await spawnProcess(argv, {
    stdio: ["pipe", "pipe", "pipe"],
    env: options.env ? { ...options.env } : process.env,
    cwd: options.cwd,
  });
  return new Promise<RunResult>((resolve, reject) => {
    const stdout = new TailBuffer(maxOutput);
    const stderr = new TailBuffer(maxOutput);
    child.stdout!.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.stdin!.on("error", () => {});
    if (options.input !== undefined) child.stdin!.end(options.input);
    else child.stdin!.end();

    let killTimer: NodeJS.Timeout | undefined;
    const terminate = () => {
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), 2000);
      killTimer.unref();
    };
    const timeout = options.timeoutMs !== undefined ? setTimeout(terminate, options.timeoutMs) : undefined;
    const onAbort = () => terminate();
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.on("close", (code, signal) => {
      if (timeout) clearTimeout(timeout);
      if (killTimer) clearTimeout(killTimer);
      options.signal?.removeEventListener("abort", onAbort);
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
