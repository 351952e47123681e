/**
 * The serial console's bounded writer. The VMM serves its console on a Unix
 * socket (QEMU `-chardev socket,server=on,wait=off`); the daemon connects
 * and drains it into console.log through a `RotatingFile`, so a guest that
 * floods its console fills at most `maxBytes` × (files + 1) of disk. While
 * no daemon is connected (between a crash and the next reconcile) QEMU
 * drops the output instead of blocking the guest. The drain ends by itself
 * when the VMM closes the socket (it exited).
 */
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../../core/log/index.ts";
import { RotatingFile } from "../log/rotating.ts";

export interface ConsoleDrainOptions {
  socketPath: string;
  logFile: string;
  maxBytes: number;
  files: number;
  logger: Logger;
  /** How long to keep retrying the first connect (the VMM may not have created the socket yet). */
  connectTimeoutMs?: number | undefined;
}

export interface ConsoleDrain {
  /** Ends the drain (the VMM keeps running; its output is dropped until the next drain). */
  close(): void;
  /** Resolves when the drain has ended, for whatever reason. */
  readonly ended: Promise<void>;
}

/** Connects to the console socket and starts draining; rejects if it cannot connect in time. */
export async function drainConsole(options: ConsoleDrainOptions): Promise<ConsoleDrain> {
  const socket = await connectWithRetry(options.socketPath, options.connectTimeoutMs ?? 5000);
  const file = new RotatingFile({ path: options.logFile, maxBytes: options.maxBytes, files: options.files });
  const ended = new Promise<void>((resolve) => {
    socket.on("close", () => {
      file.close();
      resolve();
    });
  });
  socket.on("data", (chunk: Buffer) => {
    try {
      file.write(chunk);
    } catch (error) {
      options.logger.warn("cannot write the console log; dropping its output", {
        file: options.logFile,
        err: String(error),
      });
      socket.destroy();
    }
  });
  socket.on("error", (error) => options.logger.debug("console socket error", { err: error.message }));
  return { close: () => socket.destroy(), ended };
}

async function connectWithRetry(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = connect(path);
        socket.once("connect", () => {
          socket.off("error", reject);
          resolve(socket);
        });
        socket.once("error", reject);
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code !== "ENOENT" && code !== "ECONNREFUSED") || Date.now() >= deadline) throw error;
      await sleep(20);
    }
  }
}
