/**
 * The serial console's bounded writer. The VMM serves its console on a Unix
 * socket (QEMU `-chardev socket,server=on,wait=off`); the daemon connects
 * and drains it into console.log through a `RotatingFile`, so a guest that
 * floods its console fills at most `maxBytes` × (files + 1) of disk. While
 * no daemon is connected (between a crash and the next reconcile) QEMU
 * drops the output instead of blocking the guest. The drain ends by itself
 * when the VMM closes the socket (it exited).
 *
 * Firecracker has no console socket: its serial console is its stdout. That
 * stdout is a FIFO in the VM directory (`openConsoleFifo`), which the daemon
 * drains the same way; a daemon that restarts opens the FIFO again
 * (`drainConsoleFifo`). The VMM holds the only write end, so the drain ends
 * by itself at end of file, when the VMM exits. While no daemon holds it the
 * VMM's writes fail with EPIPE (Firecracker, and QEMU in the test double,
 * ignore SIGPIPE) and the output is dropped, as with QEMU's socket.
 */
import { closeSync, constants, openSync } from "node:fs";
import { connect, Socket } from "node:net";
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
  return drainInto(socket, options);
}

type FifoDrainOptions = Omit<ConsoleDrainOptions, "socketPath" | "connectTimeoutMs"> & { fifoPath: string };

/**
 * Makes the console FIFO (`mkfifo`, replacing any old one), starts draining
 * it, and returns the write end (a descriptor) for the VMM's stdout. The
 * caller closes `writerFd` (closeSync) once the VMM has its own copy.
 */
export async function openConsoleFifo(
  options: FifoDrainOptions & { mkfifo(path: string): Promise<void> },
): Promise<{ drain: ConsoleDrain; writerFd: number }> {
  await options.mkfifo(options.fifoPath);
  const drain = drainConsoleFifo(options);
  try {
    // Never blocks: the drain already holds the FIFO open for reading.
    return { drain, writerFd: openSync(options.fifoPath, constants.O_WRONLY | constants.O_NONBLOCK) };
  } catch (error) {
    drain.close();
    throw error;
  }
}

/**
 * Drains an existing console FIFO. Non-blocking, so opening never waits for
 * a writer; the caller opens (or has) the write end before the event loop
 * turns, or the drain sees end of file at once.
 */
export function drainConsoleFifo(options: FifoDrainOptions): ConsoleDrain {
  const fd = openSync(options.fifoPath, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    // The socket owns the descriptor from here on and closes it when destroyed.
    return drainInto(new Socket({ fd, readable: true, writable: false }), options);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

function drainInto(socket: Socket, options: Omit<ConsoleDrainOptions, "socketPath">): ConsoleDrain {
  const file = new RotatingFile({ path: options.logFile, maxBytes: options.maxBytes, files: options.files });
  const ended = new Promise<void>((resolve) => {
    socket.on("close", () => {
      file.close();
      resolve();
    });
  });
  socket.on("data", (chunk: Buffer) => {
    try {
      // In slices of at most the cap, so no file outgrows it (a pipe read can be 64 KiB).
      for (let start = 0; start < chunk.length; start += options.maxBytes) {
        file.write(chunk.subarray(start, start + options.maxBytes));
      }
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
