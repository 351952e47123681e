/**
 * The CLI side of the protocol: a JSON-RPC client over the daemon's Unix
 * socket, with progress notifications, cancellation and byte streams.
 */
import { connect as netConnect, type Socket } from "node:net";
import {
  BangerError,
  ErrorCode,
  type ExecSignal,
  isErrorCode,
  MAX_FRAME_BYTES,
  type MethodName,
  type ParamsOf,
  type ProgressParams,
  type RequestId,
  type ResultOf,
  type RpcFailure,
  type StreamChannel,
  streamNotifications,
} from "../../protocol/index.ts";

export interface CallOptions {
  onProgress?: (event: ProgressParams) => void;
  /**
   * Bytes the daemon sends on a channel; `null` marks its end. A returned
   * promise is backpressure: the client reads no more from the daemon until
   * it settles, so the daemon (and the guest behind it) wait for a slow
   * consumer instead of filling the CLI's memory.
   */
  onStream?: (ch: StreamChannel, data: Buffer | null) => void | Promise<void>;
  /** Aborting sends `$/cancel`; the call still settles with the daemon's reply. */
  signal?: AbortSignal;
}

export interface PendingCall<M extends MethodName> {
  id: RequestId;
  result: Promise<ResultOf<M>>;
  /** Sends bytes to the daemon on `ch`; resolves when the socket can take more. */
  write(ch: StreamChannel, data: Buffer): Promise<void>;
  end(ch: StreamChannel): void;
  cancel(): void;
  /** Sends `$/signal`: a signal for the request's guest process group (vm.exec). */
  signal(signal: ExecSignal): void;
  /** Sends `$/resize`: the new size of the request's PTY (vm.exec with a tty). */
  resize(cols: number, rows: number): void;
}

/** What commands use of a client; tests give them a fake. */
export interface DaemonClient {
  readonly closed: boolean;
  call<M extends MethodName>(method: M, params?: ParamsOf<M>, options?: CallOptions): Promise<ResultOf<M>>;
  start<M extends MethodName>(method: M, params?: ParamsOf<M>, options?: CallOptions): PendingCall<M>;
  close(): void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  options: CallOptions;
}

export class RpcClient implements DaemonClient {
  readonly #socket: Socket;
  readonly #pending = new Map<RequestId, Pending>();
  #nextId = 1;
  #buffer = "";
  #closed = false;
  /** Stream consumers still taking their last chunk; the socket is paused while any are. */
  #stalled = 0;
  /** Bumped when a cancel lifts every stall, so the stalls it lifted release nothing later. */
  #stallEpoch = 0;
  /** Calls cancelled here: their stream bytes are dropped until their reply. */
  readonly #cancelled = new Set<RequestId>();

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.#onData(chunk));
    socket.on("close", () => this.#onClose());
    socket.on("error", () => {});
  }

  static connect(socketPath: string): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const socket = netConnect(socketPath);
      const onError = (error: Error) => reject(error);
      socket.once("error", onError);
      socket.once("connect", () => {
        socket.off("error", onError);
        resolve(new RpcClient(socket));
      });
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  call<M extends MethodName>(
    method: M,
    params?: ParamsOf<M>,
    options: CallOptions = {},
  ): Promise<ResultOf<M>> {
    return this.start(method, params, options).result;
  }

  start<M extends MethodName>(method: M, params?: ParamsOf<M>, options: CallOptions = {}): PendingCall<M> {
    const id = this.#nextId++;
    const result = new Promise<ResultOf<M>>((resolve, reject) => {
      if (this.#closed) {
        reject(daemonGone());
        return;
      }
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, options });
    });
    this.#send({ jsonrpc: "2.0", id, method, params: params ?? {} });
    // A cancel must reach its reply even while a consumer is stuck (a stopped terminal, a dead
    // program): the stalls are lifted and the call's later bytes are dropped, not delivered.
    const cancel = () => {
      this.#cancelled.add(id);
      this.#liftStalls();
      this.#send({ jsonrpc: "2.0", method: "$/cancel", params: { id } });
    };
    if (options.signal) {
      if (options.signal.aborted) cancel();
      else options.signal.addEventListener("abort", cancel, { once: true });
      void result.then(
        () => options.signal?.removeEventListener("abort", cancel),
        () => options.signal?.removeEventListener("abort", cancel),
      );
    }
    return {
      id,
      result,
      write: async (ch, data) => {
        for (const notification of streamNotifications(id, ch, data)) {
          if (!this.#send(notification))
            await new Promise<void>((resolve) => this.#socket.once("drain", resolve));
        }
      },
      end: (ch) => {
        this.#send({ jsonrpc: "2.0", method: "$/stream", params: { id, ch, end: true } });
      },
      cancel,
      signal: (signal) => {
        this.#send({ jsonrpc: "2.0", method: "$/signal", params: { id, signal } });
      },
      resize: (cols, rows) => {
        this.#send({ jsonrpc: "2.0", method: "$/resize", params: { id, cols, rows } });
      },
    };
  }

  close(): void {
    this.#socket.end();
    this.#socket.destroy();
  }

  #send(message: object): boolean {
    if (this.#closed) return true;
    return this.#socket.write(`${JSON.stringify(message)}\n`);
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    if (this.#buffer.length > MAX_FRAME_BYTES * 2) {
      this.close();
      return;
    }
    let newline = this.#buffer.indexOf("\n");
    while (newline !== -1) {
      const line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line.trim() !== "") this.#onLine(line);
      newline = this.#buffer.indexOf("\n");
    }
  }

  #onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (message.method === "$/progress") {
      const params = message.params as ProgressParams;
      this.#pending.get(params.id)?.options.onProgress?.(params);
      return;
    }
    if (message.method === "$/stream") {
      const params = message.params as { id: RequestId; ch: StreamChannel; data?: string; end?: boolean };
      const onStream = this.#pending.get(params.id)?.options.onStream;
      if (!onStream || this.#cancelled.has(params.id)) return;
      if (params.data) this.#deliver(onStream(params.ch, Buffer.from(params.data, "base64")));
      if (params.end) this.#deliver(onStream(params.ch, null));
      return;
    }
    const id = message.id as RequestId | null;
    if (id === null || id === undefined) {
      const failure = message as unknown as RpcFailure;
      if (failure.error) {
        // An error without an id ends the connection's usefulness (e.g. oversize frame).
        for (const pending of this.#pending.values()) pending.reject(errorFromWire(failure.error));
        this.#pending.clear();
      }
      return;
    }
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    this.#cancelled.delete(id);
    if ("error" in message) pending.reject(errorFromWire((message as unknown as RpcFailure).error));
    else pending.resolve(message.result);
  }

  /** Pauses reading while a consumer's promise is pending (lines already read are still delivered). */
  #deliver(taken: void | Promise<void>): void {
    if (!taken) return;
    this.#stalled += 1;
    if (this.#stalled === 1) this.#socket.pause();
    const epoch = this.#stallEpoch;
    const release = () => {
      if (epoch !== this.#stallEpoch) return;
      this.#stalled -= 1;
      if (this.#stalled === 0 && !this.#closed) this.#socket.resume();
    };
    taken.then(release, release);
  }

  #liftStalls(): void {
    if (this.#stalled === 0) return;
    this.#stallEpoch += 1;
    this.#stalled = 0;
    if (!this.#closed) this.#socket.resume();
  }

  #onClose(): void {
    this.#closed = true;
    this.#cancelled.clear();
    for (const pending of this.#pending.values()) pending.reject(daemonGone());
    this.#pending.clear();
  }
}

function errorFromWire(error: RpcFailure["error"]): BangerError {
  const code = isErrorCode(error.data?.code) ? error.data.code : ErrorCode.INTERNAL;
  return new BangerError(code, error.message, { hint: error.data?.hint, data: error.data?.details });
}

function daemonGone(): BangerError {
  return new BangerError(ErrorCode.DAEMON_UNAVAILABLE, "the connection to bangerd closed", {
    hint: "the daemon may have stopped; `banger daemon logs` shows why",
  });
}
