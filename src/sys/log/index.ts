/**
 * The daemon's structured logger: pino JSON lines to the daemon log file
 * (and to stderr when asked), behind the Logger interface from core.
 * Secrets are redacted by key name before they reach a line.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino from "pino";
import type { Logger } from "../../core/log/index.ts";

export interface FileLoggerOptions {
  file: string;
  level: "debug" | "info" | "warn" | "error";
  alsoStderr: boolean;
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

export function createFileLogger(options: FileLoggerOptions): { logger: Logger; flush(): void } {
  mkdirSync(dirname(options.file), { recursive: true, mode: 0o700 });
  const file = pino.destination({ dest: options.file, append: true, sync: false, mkdir: true });
  const streams: pino.StreamEntry[] = [{ stream: file, level: options.level }];
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
  return {
    logger: wrap(base),
    flush: () => {
      try {
        file.flushSync();
      } catch {
        // Nothing buffered, or the file is already closed.
      }
    },
  };
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
