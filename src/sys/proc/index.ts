/**
 * Process inspection through /proc. `processLiveness` is the one function
 * that decides whether a recorded VMM process is alive: the pid exists, it
 * is not a zombie, and it is the same process (start time matches) whose
 * command line mentions the expected marker (its control socket path).
 * `readProcessUsage` samples a process's CPU time and resident memory.
 */
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

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  return parseProcStat(text);
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
  const stat = await readProcStat(pid);
  if (!stat) return undefined;
  let status: string;
  try {
    status = await readFile(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  return {
    cpuSeconds: (stat.utimeTicks + stat.stimeTicks) / USER_HZ,
    rssBytes: parseProcKeyValues(status).get("VmRSS") ?? 0,
  };
}

export async function readCmdline(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`);
    return raw
      .toString("utf8")
      .split("\0")
      .filter((part) => part.length > 0);
  } catch {
    return undefined;
  }
}

export type Liveness = "alive" | "dead" | "zombie" | "foreign";

export interface LivenessQuery {
  pid: number;
  /** Start time recorded when the process was launched; 0 skips the check. */
  startTicks: number;
  /** A string that must appear in one of the process's argv entries. */
  marker: string;
}

export async function processLiveness(query: LivenessQuery): Promise<Liveness> {
  if (!Number.isInteger(query.pid) || query.pid <= 0) return "dead";
  const stat = await readProcStat(query.pid);
  if (!stat) return "dead";
  if (stat.state === "Z" || stat.state === "X") return "zombie";
  if (query.startTicks !== 0 && stat.startTicks !== query.startTicks) return "foreign";
  const argv = await readCmdline(query.pid);
  if (!argv) return "dead";
  if (!argv.some((arg) => arg.includes(query.marker))) return "foreign";
  return "alive";
}

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
