/**
 * Renders the daemon's `$/progress` events. On a TTY: one line rewritten in
 * place per step. Otherwise: one plain line per event. The daemon decides
 * the steps; this only displays them.
 */
import { clearLine, cursorTo } from "node:readline";
import type { ProgressParams } from "../../protocol/index.ts";

export interface ProgressRenderer {
  onProgress(event: ProgressParams): void;
  /** Ends the in-place line so later output starts on a fresh line. */
  finish(): void;
}

export function createProgressRenderer(stream: NodeJS.WriteStream, quiet: boolean): ProgressRenderer {
  if (quiet) return { onProgress() {}, finish() {} };
  const tty = stream.isTTY === true;
  let open = false;
  let lastLine = "";
  return {
    onProgress(event) {
      const counter =
        event.current !== undefined && event.total !== undefined ? ` (${event.current}/${event.total})` : "";
      const text = `${event.status === "failed" ? "✗" : event.status === "done" ? "✓" : "…"} ${event.message}${counter}`;
      if (tty) {
        cursorTo(stream, 0);
        clearLine(stream, 0);
        stream.write(text);
        open = true;
        if (event.status === "done" || event.status === "failed") {
          stream.write("\n");
          open = false;
        }
      } else if (text !== lastLine) {
        stream.write(`${text}\n`);
      }
      lastLine = text;
    },
    finish() {
      if (open) stream.write("\n");
      open = false;
    },
  };
}
