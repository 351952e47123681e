/**
 * VMM process control shared by every driver: spawning a VMM detached from
 * the daemon, deciding whether a recorded VMM is still ours and alive, and
 * the signal-then-wait steps of stop and kill. Drivers keep only their plan
 * (argv or API calls) and their control channel (QMP or HTTP).
 *
 * Every function here works from a `VmmHandle` read back from handles.json
 * by a later daemon as well as from one just spawned: liveness is decided
 * through /proc (pid, start ticks, the control socket on the command line),
 * and a signal is sent only to a live process that is still ours, never to
 * a reused pid.
 */
import { open } from "node:fs/promises";
import { pollUntil } from "../../core/async/index.ts";
import type { VmmHandle } from "../../core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { type Liveness, mayBeRunning, processLiveness, readProcStat } from "../proc/index.ts";
import { spawnProcess } from "../runner/index.ts";

/** How often the wait steps look at /proc. */
const POLL_MS = 50;

export interface SpawnVmmOptions {
  /** The full argv, launcher included; argv[0] is looked up on PATH. */
  argv: readonly string[];
  /** File the process's stdout is appended to (created when missing), or a descriptor the caller owns. */
  stdout: string | { fd: number };
  /** File the process's stderr is appended to; may equal `stdout`. */
  stderr: string;
  /** Mode of a log file this call creates; default 0o640. */
  mode?: number;
  /** The process's working directory (Firecracker resolves relative drive paths against it). */
  cwd?: string | undefined;
  /** Open descriptors the process inherits as fd 3, 4, … (a snapshot's state file for `-incoming fd:3`). */
  extraFds?: readonly number[] | undefined;
}

export interface SpawnedVmm {
  pid: number;
  /** /proc start ticks read right after spawn; 0 when the process was already gone. */
  startTicks: number;
  /** Aborted when the process exits while this daemon is still its parent. */
  exited: AbortSignal;
  /** "is still running", "exited with status N" or "was killed by SIG…". */
  exitDescription(): string;
}

/**
 * Spawns in a new session with the child unref'd, so the VMM outlives the
 * daemon. Resolves once the process exists; a spawn failure is the clear
 * error `spawnProcess` makes of it (TOOL_MISSING, RESOURCE_EXHAUSTED...). The log files are
 * closed in this process before it returns (the child keeps its copies).
 */
export async function spawnDetachedVmm(options: SpawnVmmOptions): Promise<SpawnedVmm> {
  const [command, ...args] = options.argv;
  if (command === undefined) throw new BangerError(ErrorCode.INTERNAL, "VMM argv is empty");
  const mode = options.mode ?? 0o640;
  const given = typeof options.stdout === "string" ? undefined : options.stdout.fd;
  const stdout = typeof options.stdout === "string" ? await open(options.stdout, "a", mode) : undefined;
  try {
    const stderr =
      options.stderr === options.stdout && stdout ? stdout : await open(options.stderr, "a", mode);
    try {
      const child = await spawnProcess([command, ...args], {
        detached: true,
        stdio: ["ignore", given ?? stdout?.fd ?? "ignore", stderr.fd, ...(options.extraFds ?? [])],
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      });
      const exited = new AbortController();
      let description = "is still running";
      child.once("exit", (code, signal) => {
        description = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        exited.abort(new Error(`${command} ${description}`));
      });
      child.unref();
      // Unreadable /proc (out of descriptors) leaves the start ticks unknown (0), not the spawn failed.
      const stat = await readProcStat(child.pid!).catch(() => undefined);
      return {
        pid: child.pid!,
        startTicks: stat?.startTicks ?? 0,
        exited: exited.signal,
        exitDescription: () => description,
      };
    } finally {
      if (stderr !== stdout) await stderr.close();
    }
  } finally {
    await stdout?.close();
  }
}

/** Whether the process a handle records is alive and still ours (see processLiveness). */
export function vmmLiveness(handle: VmmHandle): Promise<Liveness> {
  return processLiveness({ pid: handle.pid, startTicks: handle.pidStartTicks, marker: handle.controlSocket });
}

/** Not proven gone: an unreadable /proc ("unknown") never counts as an exit. */
export async function isVmmRunning(handle: VmmHandle): Promise<boolean> {
  return mayBeRunning(await vmmLiveness(handle));
}

/** Polls until the process is not "alive" (dead, a zombie or a reused pid); false on timeout. */
export function waitVmmGone(handle: VmmHandle, timeoutMs: number): Promise<boolean> {
  return pollUntil(async () => !(await isVmmRunning(handle)), { timeoutMs, intervalMs: POLL_MS });
}

/** Sends `signal` only to our own live process, never to a reused pid. */
export async function signalVmm(handle: VmmHandle, signal: NodeJS.Signals): Promise<void> {
  if ((await vmmLiveness(handle)) !== "alive") return;
  try {
    process.kill(handle.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

/** Signals the process and waits up to `timeoutMs` for it to go; true once it is gone. */
export async function signalAndWait(
  handle: VmmHandle,
  signal: NodeJS.Signals,
  timeoutMs: number,
): Promise<boolean> {
  if (!(await isVmmRunning(handle))) return true;
  await signalVmm(handle, signal);
  return waitVmmGone(handle, timeoutMs);
}

/**
 * SIGKILL and wait up to `timeoutMs`; throws INTERNAL when the process
 * survives (stuck in the kernel). `name` names the VMM in that error.
 */
export async function killAndWait(handle: VmmHandle, timeoutMs: number, name = "the VMM"): Promise<void> {
  if (await signalAndWait(handle, "SIGKILL", timeoutMs)) return;
  throw new BangerError(
    ErrorCode.INTERNAL,
    `${name} (pid ${handle.pid}) survived SIGKILL for ${timeoutMs} ms`,
    {
      hint: "the process may be stuck in the kernel (D state); check `cat /proc/PID/stack`",
    },
  );
}
