/**
 * A QMP (QEMU Machine Protocol) client over QEMU's Unix control socket:
 * connect with retry (the socket appears shortly after QEMU starts), read
 * the greeting, negotiate capabilities, then run commands one at a time.
 * Asynchronous `{"event": ...}` lines are delivered to a callback and never
 * mistaken for replies.
 */
import { createConnection, type Socket } from "node:net";
import { cancelled, sleep, throwIfAborted } from "../../core/async/index.ts";

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package?: string };
  capabilities: string[];
}

export interface QmpStatus {
  running: boolean;
  /** QEMU's run state: "running", "paused", "shutdown", "internal-error", ... */
  status: string;
}

export interface QmpConnectOptions {
  socketPath: string;
  /** How long to keep retrying a missing or refusing socket, and to wait for the greeting. */
  timeoutMs?: number | undefined;
  retryIntervalMs?: number | undefined;
  signal?: AbortSignal | undefined;
  onEvent?: ((event: QmpEvent) => void) | undefined;
}

/** A failed QMP exchange. `errorClass` is QMP's error class when QEMU answered with an error. */
export class QmpError extends Error {
  readonly errorClass: string | undefined;

  constructor(message: string, options: { errorClass?: string | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "QmpError";
    this.errorClass = options.errorClass;
  }
}

export interface QmpClient {
  readonly greeting: QmpGreeting;
  /** Runs one command; resolves with its `return` value or rejects with QmpError carrying QEMU's `desc`. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  /** Presses the ACPI power button (`system_powerdown`); the guest decides whether to shut down. */
  powerdown(): Promise<void>;
  /** Asks QEMU to exit at once (`quit`). Resolves even if QEMU closes the socket before replying. */
  quit(): Promise<void>;
  status(): Promise<QmpStatus>;
  /** Resolves once the connection is closed, by either side. */
  readonly closed: Promise<void>;
  close(): void;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRY_MS = 50;
const RETRYABLE = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

/** Connects, reads the greeting and runs `qmp_capabilities`. */
export async function connectQmp(options: QmpConnectOptions): Promise<QmpClient> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const socket = await connectWithRetry(options, deadline);
  const connection = new QmpConnection(socket, options.onEvent);
  try {
    const greeting = await connection.greeting(deadline, options.signal);
    await withDeadline(connection.execute("qmp_capabilities"), deadline, "qmp_capabilities");
    return connection.client(greeting);
  } catch (error) {
    connection.close();
    throw error;
  }
}

async function connectWithRetry(options: QmpConnectOptions, deadline: number): Promise<Socket> {
  const interval = options.retryIntervalMs ?? DEFAULT_RETRY_MS;
  for (;;) {
    throwIfAborted(options.signal, "QMP connect");
    try {
      return await openSocket(options.socketPath);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (!RETRYABLE.has(code))
        throw new QmpError(`QMP: cannot connect to ${options.socketPath}`, { cause: error });
      if (Date.now() >= deadline) {
        throw new QmpError(`QMP: ${options.socketPath} did not accept a connection in time (${code})`, {
          cause: error,
        });
      }
      await sleep(interval, options.signal);
    }
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

interface Pending {
  id: number;
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/** One socket: splits lines, routes events to the callback and replies to the oldest pending command. */
class QmpConnection {
  readonly #socket: Socket;
  readonly #onEvent: ((event: QmpEvent) => void) | undefined;
  readonly #pending: Pending[] = [];
  readonly #closed: Promise<void>;
  #buffer = "";
  #nextId = 1;
  #isClosed = false;
  #greeting: QmpGreeting | undefined;
  #greetingWaiter: ((greeting: QmpGreeting) => void) | undefined;
  #closeWaiters: ((error: Error) => void)[] = [];

  constructor(socket: Socket, onEvent: ((event: QmpEvent) => void) | undefined) {
    this.#socket = socket;
    this.#onEvent = onEvent;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.#onData(chunk));
    socket.on("error", () => {});
    this.#closed = new Promise((resolve) => {
      socket.once("close", () => {
        this.#isClosed = true;
        const error = new QmpError("QMP: connection closed");
        for (const pending of this.#pending.splice(0)) pending.reject(error);
        for (const waiter of this.#closeWaiters.splice(0)) waiter(error);
        resolve();
      });
    });
  }

  greeting(deadline: number, signal: AbortSignal | undefined): Promise<QmpGreeting> {
    if (this.#greeting) return Promise.resolve(this.#greeting);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => finish(new QmpError("QMP: no greeting before the deadline")),
        Math.max(0, deadline - Date.now()),
      );
      const onAbort = () => finish(cancelled(signal, "QMP connect"));
      const finish = (outcome: QmpGreeting | Error) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#greetingWaiter = undefined;
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#greetingWaiter = finish;
      this.#closeWaiters.push(finish);
    });
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#isClosed) return Promise.reject(new QmpError(`QMP: connection closed before ${command}`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.push({ id, command, resolve, reject });
      const message =
        args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.#socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  client(greeting: QmpGreeting): QmpClient {
    const execute = <T>(command: string, args?: Record<string, unknown>) =>
      this.execute(command, args) as Promise<T>;
    return {
      greeting,
      execute,
      powerdown: async () => {
        await execute("system_powerdown");
      },
      quit: async () => {
        try {
          await execute("quit");
        } catch (error) {
          if (!(error instanceof QmpError && error.errorClass === undefined && this.#isClosed)) throw error;
        }
      },
      status: async () => {
        const reply = await execute<{ running?: unknown; status?: unknown }>("query-status");
        return { running: reply.running === true, status: String(reply.status ?? "unknown") };
      },
      closed: this.#closed,
      close: () => this.close(),
    };
  }

  close(): void {
    this.#socket.destroy();
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const newline = this.#buffer.indexOf("\n");
      if (newline < 0) return;
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line.length > 0) this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ("QMP" in message) {
      this.#greeting = message.QMP as QmpGreeting;
      this.#greetingWaiter?.(this.#greeting);
      return;
    }
    if (typeof message.event === "string") {
      this.#onEvent?.(message as unknown as QmpEvent);
      return;
    }
    if (!("return" in message) && !("error" in message)) return;
    const index = this.#pending.findIndex((pending) => pending.id === message.id);
    const [pending] = this.#pending.splice(Math.max(index, 0), 1);
    if (!pending) return;
    if ("return" in message) {
      pending.resolve(message.return);
      return;
    }
    const error = (message.error ?? {}) as { class?: unknown; desc?: unknown };
    const desc = typeof error.desc === "string" ? error.desc : "unknown error";
    const errorClass = typeof error.class === "string" ? error.class : "GenericError";
    pending.reject(new QmpError(`QMP ${pending.command}: ${desc}`, { errorClass }));
  }
}

function withDeadline<T>(promise: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new QmpError(`QMP: no reply to ${what} before the deadline`)),
      Math.max(0, deadline - Date.now()),
    );
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
