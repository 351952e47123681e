/**
 * VM statistics, the pure half: the one guest command that reports uptime,
 * memory and root filesystem usage, the parser of its output, the parser of
 * `/proc`'s "Key: value kB" files (meminfo, PID/status), and the CPU share
 * of a process between two samples.
 *
 * The guest command prints sections headed by `@uptime`, `@meminfo` and
 * `@df`; the parser reads each section on its own, so a guest that lacks one
 * tool still reports the others (the missing fields are null).
 */
import { KIB } from "../units.ts";

/** What the guest reports about itself; a field is null when its section was missing or garbled. */
export interface GuestStats {
  uptimeSeconds: number | null;
  memoryTotalBytes: number | null;
  memoryAvailableBytes: number | null;
  rootfsSizeBytes: number | null;
  rootfsUsedBytes: number | null;
  rootfsAvailableBytes: number | null;
}

/** POSIX sh run in the guest; plain /proc reads and POSIX `df`, no bash or procps needed. */
const GUEST_STATS_SCRIPT = [
  "echo @uptime",
  "cat /proc/uptime",
  "echo @meminfo",
  "cat /proc/meminfo",
  "echo @df",
  "LC_ALL=C df -P -k /",
].join("; ");

/** The argv that prints every guest statistic in one round trip (see parseGuestStats). */
export function guestStatsArgv(): string[] {
  return ["sh", "-c", GUEST_STATS_SCRIPT];
}

/**
 * Parses the output of guestStatsArgv(). Never throws: a section that is
 * absent or does not parse leaves its fields null.
 */
export function parseGuestStats(output: string): GuestStats {
  const sections = splitSections(output);
  const memory = parseProcKeyValues(sections.get("meminfo") ?? "");
  const rootfs = parseDfRoot(sections.get("df") ?? "");
  return {
    uptimeSeconds: parseUptime(sections.get("uptime") ?? ""),
    memoryTotalBytes: memory.get("MemTotal") ?? null,
    memoryAvailableBytes: memory.get("MemAvailable") ?? null,
    rootfsSizeBytes: rootfs?.sizeBytes ?? null,
    rootfsUsedBytes: rootfs?.usedBytes ?? null,
    rootfsAvailableBytes: rootfs?.availableBytes ?? null,
  };
}

/** True when the guest output gave at least one number. */
export function hasAnyGuestStat(stats: GuestStats): boolean {
  return Object.values(stats).some((value) => value !== null);
}

function splitSections(output: string): Map<string, string> {
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const raw of output.split("\n")) {
    const line = raw.replace(/\r$/, "");
    const header = /^@([a-z]+)$/.exec(line.trim());
    if (header) {
      current = [];
      sections.set(header[1]!, current);
    } else if (current) {
      current.push(line);
    }
  }
  return new Map([...sections].map(([name, lines]) => [name, lines.join("\n")]));
}

/** /proc/uptime: "<seconds since boot> <idle seconds>". */
function parseUptime(text: string): number | null {
  const match = /^(\d+(?:\.\d+)?)\s/.exec(`${text.trim()} `);
  return match ? nonNegative(Number(match[1])) : null;
}

/**
 * "Key:   value [kB]" lines (/proc/meminfo, /proc/PID/status) as numbers;
 * values with a kB unit are converted to bytes. Lines that are not a key and
 * one number are skipped.
 */
export function parseProcKeyValues(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+(kB))?\s*$/.exec(line.trim());
    if (!match) continue;
    const value = Number(match[2]);
    values.set(match[1]!, match[3] === "kB" ? value * KIB : value);
  }
  return values;
}

interface DfRoot {
  sizeBytes: number;
  usedBytes: number;
  availableBytes: number;
}

/**
 * `df -P -k /`: a header, then one line "FS 1024-blocks Used Available
 * Capacity% MountPoint". Read from the end, so a filesystem name with spaces
 * does not shift the columns.
 */
function parseDfRoot(text: string): DfRoot | null {
  const lines = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !/^Filesystem\s/i.test(line));
  const last = lines.at(-1);
  if (last === undefined) return null;
  const fields = last.split(/\s+/);
  if (fields.length < 6 || !/^\d+%$/.test(fields.at(-2)!)) return null;
  const [size, used, available] = fields.slice(-5, -2).map((field) => nonNegative(Number(field)));
  if (size == null || used == null || available == null) return null;
  return { sizeBytes: size * KIB, usedBytes: used * KIB, availableBytes: available * KIB };
}

/**
 * CPU share of a process between two samples of its CPU time (user +
 * system), as a percentage of one core: 100 means one core busy the whole
 * interval, 200 two cores. Null when the interval is empty or the counter
 * went backwards (a different process behind the same pid).
 */
export function cpuPercent(sample: {
  cpuSecondsBefore: number;
  cpuSecondsAfter: number;
  elapsedMs: number;
}): number | null {
  const used = sample.cpuSecondsAfter - sample.cpuSecondsBefore;
  if (!(sample.elapsedMs > 0) || !(used >= 0)) return null;
  return Math.round((used / (sample.elapsedMs / 1000)) * 1000) / 10;
}

function nonNegative(value: number): number | null {
  return Number.isFinite(value) && value >= 0 ? value : null;
}
