/** Child processes for the bench: timed runs, bounded waits, signals by pid only. */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";

export interface RunOptions {
  env?: NodeJS.ProcessEnv | undefined;
  /** SIGKILLs the child (by its pid) after this long. */
  timeoutMs: number;
  /** Gets the pid as soon as the child exists. */
  onSpawn?: ((pid: number) => void) | undefined;
  /** Aborting SIGKILLs the child (by its pid). */
  signal?: AbortSignal | undefined;
  /** Counts stdout's bytes (`stdoutBytes`) instead of keeping them. */
  discardStdout?: boolean | undefined;
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  /** Wall time from just before spawn to the child's exit. */
  ms: number;
  stdout: string;
  /** Bytes the child wrote to stdout (also when they were discarded). */
  stdoutBytes: number;
  stderr: string;
  timedOut: boolean;
}

/** Runs argv to completion (stdin is /dev/null) and times it; never rejects for a non-zero exit. */
export function run(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const [command, ...args] = argv as [string, ...string[]];
  return new Promise<RunResult>((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let exited: { ms: number; code: number | null; signal: string | null } | undefined;
    let timedOut = false;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let stdoutBytes = 0;
    child.stdout.on("data", (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (!options.discardStdout) stdout.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    const kill = () => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        signalPid(child.pid, "SIGKILL");
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, options.timeoutMs);
    options.signal?.addEventListener("abort", kill, { once: true });
    if (options.signal?.aborted) kill();
    child.once("error", (error) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", kill);
      reject(new Error(`${command}: ${error.message}`));
    });
    child.once("exit", (code, signal) => {
      exited = { ms: performance.now() - started, code, signal };
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", kill);
      const end = exited ?? { ms: performance.now() - started, code, signal };
      resolve({
        ...end,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stdoutBytes,
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
      });
    });
  });
}

/** Like `run`, but a non-zero exit or a timeout throws with the command's stderr. */
export async function runChecked(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const result = await run(argv, options);
  if (result.code !== 0) {
    const why = result.timedOut
      ? `timed out after ${options.timeoutMs} ms`
      : `exited ${result.code ?? result.signal}`;
    throw new Error(`${argv.join(" ")} ${why}: ${result.stderr.trim().split("\n").slice(-8).join("\n")}`);
  }
  return result;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie still answers signal 0 but is gone for our purposes.
  return !isZombie(pid);
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid`; a process that is already gone is fine. */
export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

export async function waitPidGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves true once the pid is gone. */
export async function stopPid(pid: number, graceMs: number): Promise<boolean> {
  if (!pidAlive(pid)) return true;
  signalPid(pid, "SIGTERM");
  if (await waitPidGone(pid, graceMs)) return true;
  signalPid(pid, "SIGKILL");
  return waitPidGone(pid, 5000);
}

/** Resident set size of `pid` in KiB, from /proc/PID/status VmRSS. */
export async function readRssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Pins every thread of `pid` to `cpu` (taskset) and returns the undo, which
 * restores the mask it had. A row whose client and server wake each other
 * per request pins both: on a small VM a wakeup that lands on another idle
 * vCPU costs 80–100 µs, which swamps what the row measures.
 */
export async function pinToCpu(pid: number, cpu: string): Promise<() => Promise<void>> {
  const affinity = await runChecked(["taskset", "-p", String(pid)], { timeoutMs: 5000 });
  const mask = /:\s*([0-9a-f,]+)\s*$/i.exec(affinity.stdout.trim())?.[1];
  if (mask === undefined)
    throw new Error(`cannot read the CPU affinity of pid ${pid}: ${affinity.stdout.trim()}`);
  await runChecked(["taskset", "-a", "-p", "-c", cpu, String(pid)], { timeoutMs: 5000 });
  return async () => void (await runChecked(["taskset", "-a", "-p", mask, String(pid)], { timeoutMs: 5000 }));
}
