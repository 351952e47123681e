import type { Logger } from "../../src/core/log/index.ts";

export interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

/** A Logger that keeps lines in memory, for assertions. */
export function createMemoryLogger(
  lines: LogLine[] = [],
  bindings: Record<string, unknown> = {},
): Logger & { lines: LogLine[] } {
  const log = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, fields: { ...bindings, ...fields } });
  };
  return {
    lines,
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (more) => createMemoryLogger(lines, { ...bindings, ...more }),
  };
}
