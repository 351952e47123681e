/**
 * Byte streams between the CLI and a daemon call, always with backpressure
 * (the next chunk is read only once the daemon's socket took the last):
 * our stdin forwarded on a channel, uploads of a local stream, downloads on
 * `stdout` into a local program or our own stdout (the client reads no
 * further until they drain), and byte progress on a TTY.
 */
import { spawn } from "node:child_process";
import { clearLine, cursorTo } from "node:readline";
import { drained } from "../core/async/index.ts";
import { BangerError, ErrorCode, type MethodName, type StreamChannel } from "../protocol/index.ts";
import type { InputStream, OutputStream } from "./context.ts";
import type { PendingCall } from "./rpc/client.ts";

/**
 * Forwards `input` on the call's `channel` as it arrives, pausing it until
 * the socket takes each chunk, and ends the channel at its end; returns the
 * undo (stops forwarding and pauses `input`).
 */
export function forwardInput<M extends MethodName>(
  input: InputStream,
  call: Pick<PendingCall<M>, "write" | "end">,
  channel: StreamChannel,
): () => void {
  const onData = (chunk: Buffer | string) => {
    input.pause();
    void call.write(channel, asBuffer(chunk)).finally(() => input.resume());
  };
  const onEnd = () => call.end(channel);
  input.on("data", onData);
  input.once("end", onEnd);
  input.once("error", onEnd);
  input.resume();
  return () => {
    input.off("data", onData);
    input.off("end", onEnd);
    input.off("error", onEnd);
    input.pause();
  };
}

function asBuffer(chunk: Buffer | string): Buffer {
  return typeof chunk === "string" ? Buffer.from(chunk) : chunk;
}

/**
 * Writes a downloaded chunk; when `stream` buffers more than it wants, the
 * returned promise settles once it drains (or breaks), which an `onStream`
 * handler returns so the client stops reading from the daemon meanwhile.
 */
export function writeDownloaded(stream: NodeJS.WritableStream, chunk: Buffer): void | Promise<void> {
  if (stream.write(chunk)) return;
  return drained(stream);
}

/** Shows "label 12.0 MiB / 100.0 MiB" on a TTY, rewritten at most every 100 ms. */
export function byteProgress(stream: OutputStream, label: string, total?: number) {
  const tty = stream.isTTY === true;
  let last = 0;
  let shown = false;
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  const draw = (bytes: number) => {
    cursorTo(stream, 0);
    clearLine(stream, 0);
    stream.write(`${label} ${mib(bytes)}${total ? ` / ${mib(total)}` : ""}`);
    shown = true;
  };
  return {
    update(bytes: number) {
      if (!tty) return;
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      draw(bytes);
    },
    finish(bytes: number) {
      if (!tty) return;
      draw(bytes);
      if (shown) stream.write("\n");
    },
  };
}

/** Sends `source` on the call's stdin channel, then ends it; resolves with the byte count. */
export async function upload<M extends MethodName>(
  call: PendingCall<M>,
  source: AsyncIterable<Buffer | string>,
  onBytes?: (total: number) => void,
): Promise<number> {
  let total = 0;
  try {
    for await (const chunk of source) {
      const buffer = asBuffer(chunk);
      await call.write("stdin", buffer);
      total += buffer.length;
      onBytes?.(total);
    }
  } finally {
    call.end("stdin");
  }
  return total;
}

/** A local program fed by a download: write chunks to it, then `end()` waits for its exit. */
export function localSink(argv: readonly string[], options: { cwd?: string } = {}) {
  const [command, ...args] = argv as [string, ...string[]];
  const child = spawn(command, args, { cwd: options.cwd, stdio: ["pipe", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString("utf8")).slice(-4096);
  });
  child.stdin.on("error", () => {});
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve(code));
  });
  return {
    /** Feeds the program; a returned promise means wait (see `writeDownloaded`). */
    write(chunk: Buffer): void | Promise<void> {
      return writeDownloaded(child.stdin, chunk);
    },
    async end(): Promise<void> {
      child.stdin.end();
      const code = await exited;
      if (code !== 0) {
        throw new BangerError(
          ErrorCode.WORKSPACE_FAILED,
          `${command} failed: ${stderr.trim().split("\n").slice(-2).join("; ") || `exit ${code}`}`,
        );
      }
    },
    abort() {
      child.kill("SIGKILL");
    },
  };
}
