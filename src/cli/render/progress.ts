/**
 * Renders the daemon's `$/progress` events. On a TTY: one line rewritten in
 * place per step. Otherwise: one plain line per event. The daemon decides
 * the steps and their messages; this only displays them, adding the time a
 * finished step took. Lines of the CLI's own (starting the daemon,
 * cancelling) carry no step.
 */
import { clearLine, cursorTo } from "node:readline";
import type { ProgressEvent, ProgressStep } from "../../protocol/index.ts";

export type ProgressLine = Pick<ProgressEvent, "message" | "status" | "current" | "total"> & {
  step?: ProgressStep;
};

export interface ProgressRenderer {
  onProgress(event: ProgressLine): void;
  /** Ends the in-place line so later output starts on a fresh line. */
  finish(): void;
}

export function createProgressRenderer(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  quiet: boolean,
  now: () => number = () => performance.now(),
): ProgressRenderer {
  if (quiet) return { onProgress() {}, finish() {} };
  const tty = stream.isTTY === true;
  const startedAt = new Map<ProgressStep, number>();
  let open = false;
  let lastLine = "";
  return {
    onProgress(event) {
      const counter =
        event.current !== undefined && event.total !== undefined ? ` (${event.current}/${event.total})` : "";
      const finished = event.status === "done" || event.status === "failed";
      let elapsed = "";
      if (event.step !== undefined) {
        const began = startedAt.get(event.step);
        if (began === undefined) startedAt.set(event.step, now());
        else if (finished) elapsed = ` [${formatElapsed(now() - began)}]`;
      }
      const mark = event.status === "failed" ? "✗" : event.status === "done" ? "✓" : "…";
      const text = `${mark} ${event.message}${counter}${elapsed}`;
      if (tty) {
        cursorTo(stream, 0);
        clearLine(stream, 0);
        stream.write(text);
        open = true;
        if (finished) {
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

/** "850 ms", "12.3 s", "2m 05s". */
export function formatElapsed(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, "0")}s`;
}
