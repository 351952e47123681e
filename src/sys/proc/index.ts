/**
 * Process inspection through /proc. `processLiveness` is the one function
 * that decides whether a recorded VMM process is alive: the pid exists, it
 * is not a zombie, and it is the same process (start time matches) whose
 * command line mentions the expected marker (its control socket path).
 * Only a missing /proc entry (ENOENT, ESRCH) proves a process gone; any
 * other read failure (EMFILE, ENFILE, EIO...) answers "unknown", which
 * callers treat as still running.
 * `readProcessUsage` samples a process's CPU time and resident memory.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { parseProcKeyValues } from "../../core/stats/index.ts";

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  startTicks: number;
  utimeTicks: number;
  stimeTicks: number;
  rssPages: number;
}

/** The process's stat, or undefined when it does not exist. Other read failures throw. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  const text = await readProcFile(`/proc/${pid}/stat`);
  return text === undefined ? undefined : parseProcStat(text.toString("utf8"));
}

/** A /proc file's bytes; undefined only when the process is gone. */
async function readProcFile(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if (isGoneError(error)) return undefined;
    throw error;
  }
}

function isGoneError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ESRCH";
}

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const pid = Number.parseInt(text.slice(0, text.indexOf(" ")), 10);
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // fields[0] is field 3 (state); field N is fields[N - 3].
  const field = (n: number) => Number(fields[n - 3]);
  return {
    pid,
    state: fields[0] ?? "?",
    ppid: field(4),
    utimeTicks: field(14),
    stimeTicks: field(15),
    startTicks: field(22),
    rssPages: field(24),
  };
}

/**
 * /proc reports CPU times in USER_HZ ticks, which the kernel fixes at 100 on
 * every architecture banger runs on (it is not the kernel's CONFIG_HZ).
 */
const USER_HZ = 100;

export interface ProcessUsage {
  /** User plus system CPU time since the process started, in seconds. */
  cpuSeconds: number;
  /** Resident set size (VmRSS) in bytes; 0 when the kernel reports none. */
  rssBytes: number;
}

/** CPU time and resident memory of a process, or undefined when it is gone. */
export async function readProcessUsage(pid: number): Promise<ProcessUsage | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = await readProcStat(pid);
    const status = await readProcFile(`/proc/${pid}/status`);
    if (!stat || status === undefined) return undefined;
    return {
      cpuSeconds: (stat.utimeTicks + stat.stimeTicks) / USER_HZ,
      rssBytes: parseProcKeyValues(status.toString("utf8")).get("VmRSS") ?? 0,
    };
  } catch {
    return undefined;
  }
}

/** The process's argv, or undefined when it does not exist. Other read failures throw. */
export async function readCmdline(pid: number): Promise<string[] | undefined> {
  const raw = await readProcFile(`/proc/${pid}/cmdline`);
  return raw
    ?.toString("utf8")
    .split("\0")
    .filter((part) => part.length > 0);
}

/**
 * "unknown": /proc could not be read (out of descriptors, I/O error), so
 * nothing is proven; callers keep treating the process as running.
 */
export type Liveness = "alive" | "dead" | "zombie" | "foreign" | "unknown";

export interface LivenessQuery {
  pid: number;
  /** Start time recorded when the process was launched; 0 skips the check. */
  startTicks: number;
  /** A string that must appear in one of the process's argv entries. */
  marker: string;
}

export async function processLiveness(query: LivenessQuery): Promise<Liveness> {
  if (!Number.isInteger(query.pid) || query.pid <= 0) return "dead";
  try {
    const stat = await readProcStat(query.pid);
    if (!stat) return "dead";
    if (stat.state === "Z" || stat.state === "X") return "zombie";
    if (query.startTicks !== 0 && stat.startTicks !== query.startTicks) return "foreign";
    const argv = await readCmdline(query.pid);
    if (!argv) return "dead";
    if (!argv.some((arg) => arg.includes(query.marker))) return "foreign";
    return "alive";
  } catch {
    return "unknown";
  }
}

/** True unless the process is proven gone (dead, a zombie, or the pid reused). */
export function mayBeRunning(liveness: Liveness): boolean {
  return liveness === "alive" || liveness === "unknown";
}

/**
 * This process's soft limit on open files (RLIMIT_NOFILE) from
 * /proc/self/limits, which also reflects a `prlimit` applied from outside;
 * undefined when it cannot be read or is unlimited.
 */
export function readOpenFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((entry) => entry.startsWith("Max open files"));
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    const limit = soft === undefined ? Number.NaN : Number(soft);
    return Number.isInteger(limit) && limit > 0 ? limit : undefined;
  } catch {
    return undefined;
  }
}
