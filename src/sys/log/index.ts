/**
 * The daemon's structured logger: pino JSON lines to the daemon log file
 * (and to stderr when asked), behind the Logger interface from core.
 * Secrets are redacted by key name before they reach a line. The file
 * rotates at a size (`RotatingFile`), and every line is written
 * synchronously, so nothing is lost or half-flushed when the daemon exits.
 */
import pino from "pino";
import type { Logger } from "../../core/log/index.ts";
import { RotatingFile } from "./rotating.ts";

export interface FileLoggerOptions {
  file: string;
  level: "debug" | "info" | "warn" | "error";
  alsoStderr: boolean;
  /** Rotation size of the log file. */
  maxBytes: number;
  /** Rotated generations kept. */
  files: number;
}

const REDACT = [
  "*.password",
  "*.token",
  "*.secret",
  "*.privateKey",
  "*.authorization",
  "password",
  "token",
  "secret",
];

export function createFileLogger(options: FileLoggerOptions): { logger: Logger; close(): void } {
  const file = new RotatingFile({ path: options.file, maxBytes: options.maxBytes, files: options.files });
  const streams: pino.StreamEntry[] = [
    { stream: { write: (line: string) => file.write(line) }, level: options.level },
  ];
  if (options.alsoStderr)
    streams.push({ stream: pino.destination({ fd: 2, sync: true }), level: options.level });
  const base = pino(
    {
      level: options.level,
      base: { svc: "bangerd", pid: process.pid },
      redact: { paths: REDACT, censor: "[redacted]" },
    },
    pino.multistream(streams),
  );
  return { logger: wrap(base), close: () => file.close() };
}

function wrap(base: pino.Logger): Logger {
  return {
    debug: (msg, fields) => base.debug(fields ?? {}, msg),
    info: (msg, fields) => base.info(fields ?? {}, msg),
    warn: (msg, fields) => base.warn(fields ?? {}, msg),
    error: (msg, fields) => base.error(fields ?? {}, msg),
    child: (bindings) => wrap(base.child(bindings)),
  };
}
