/**
 * One line of the daemon's JSON log (pino) for a person: local time, level,
 * message, then the other fields as key=value. A line that is not a JSON
 * object passes through as it is.
 */
const LEVELS: Readonly<Record<number, string>> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};

/** Fields every line carries, shown in the line's own columns or left out. */
const OMITTED = new Set(["level", "time", "msg", "svc", "pid", "hostname", "v"]);

export function formatLogLine(line: string): string {
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) return line;
  const fields = record as Record<string, unknown>;
  const time = typeof fields.time === "number" ? formatTime(new Date(fields.time)) : "-";
  const level = typeof fields.level === "number" ? (LEVELS[fields.level] ?? String(fields.level)) : "-";
  const rest = Object.entries(fields)
    .filter(([key]) => !OMITTED.has(key))
    .map(
      ([key, value]) => `${key}=${typeof value === "string" ? quoteIfNeeded(value) : JSON.stringify(value)}`,
    );
  return [time, level.padEnd(5), String(fields.msg ?? ""), ...rest].join(" ").trimEnd();
}

function formatTime(date: Date): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function quoteIfNeeded(value: string): string {
  return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
}
