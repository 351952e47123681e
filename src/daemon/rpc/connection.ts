/**
 * One client connection of the RPC server: framing, the handshake, dispatch
 * to handlers, byte streams in both directions, and flow control (the
 * contracts in server.ts). One concern, kept whole: its pause reasons,
 * read-ahead and pending-write accounting interlock, so splitting it would
 * spread one state machine over several files.
 */

import { randomUUID } from "node:crypto";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { cancelled, drained, errorMessage } from "../../core/async/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  CancelParams,
  ErrorCode,
  isBangerError,
  JSONRPC_INVALID_PARAMS,
  JSONRPC_INVALID_REQUEST,
  JSONRPC_METHOD_NOT_FOUND,
  JSONRPC_PARSE_ERROR,
  JSONRPC_SERVER_ERROR,
  MAX_FRAME_BYTES,
  type MethodName,
  methods,
  type RequestId,
  ResizeParams,
  SignalParams,
  type StreamChannel,
  StreamParams,
  streamNotifications,
  type WireErrorData,
} from "../../protocol/index.ts";
import { LineSplitter } from "./lines.ts";

import {
  type ControlListeners,
  type FrameBudget,
  type Handler,
  type HandlerContext,
  RPC_LIMITS,
  type RpcServerOptions,
} from "./types.ts";

/** Longest excerpt of an error message that reaches a log line. */
const LOGGED_MESSAGE_CHARS = 300;

/** Methods an incompatible client may still call (to inspect or stop the daemon). */
const ALLOWED_WHEN_INCOMPATIBLE = new Set<string>(["daemon.ping", "daemon.status", "daemon.shutdown"]);

export class Connection {
  readonly #socket: Socket;
  readonly #options: RpcServerOptions;
  readonly #logger: Logger;
  readonly #splitter: LineSplitter;
  readonly #inflight = new Map<
    RequestId,
    { controller: AbortController; incoming: Map<StreamChannel, PassThrough>; control: ControlListeners }
  >();
  #helloDone = false;
  #compatible = true;
  readonly #budget: FrameBudget;
  /** Partial-frame bytes this connection has counted against the budget. */
  #heldFrameBytes = 0;
  /** Reasons the socket is paused: full incoming stream buffers, and a client that is not reading. */
  readonly #pausedBy = new Set<object>();
  readonly #writePressure = {};
  readonly #maxPendingWrite: number;
  /** A single reply may be a whole frame; only a backlog well past that means the client stopped reading. */
  readonly #closeAtPendingWrite: number;
  readonly #streamBufferBytes: number;
  /** Bytes accepted into each full incoming stream since it was last drained. */
  readonly #readAhead = new Map<PassThrough, number>();

  constructor(socket: Socket, options: RpcServerOptions, id: number, budget: FrameBudget) {
    this.#socket = socket;
    this.#options = options;
    this.#budget = budget;
    this.#logger = options.logger.child({ conn: id });
    this.#splitter = new LineSplitter(options.maxFrameBytes ?? MAX_FRAME_BYTES);
    this.#maxPendingWrite = options.maxPendingWriteBytes ?? RPC_LIMITS.maxPendingWriteBytes;
    this.#closeAtPendingWrite = Math.max(4 * this.#maxPendingWrite, 2 * this.#splitter.maxFrameBytes);
    this.#streamBufferBytes = options.streamBufferBytes ?? RPC_LIMITS.streamBufferBytes;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#logger.debug("connection error", { err: error.message }));
    socket.on("drain", () => this.#unpause(this.#writePressure));
    socket.setTimeout(options.idleTimeoutMs ?? RPC_LIMITS.idleTimeoutMs, () => {
      if (this.#inflight.size > 0) return;
      this.#logger.debug("closing idle connection");
      socket.destroy();
    });
  }

  abortAll(): void {
    for (const { controller, incoming } of this.#inflight.values()) {
      controller.abort(cancelled(undefined, "request of a disconnected client"));
      for (const stream of incoming.values()) stream.end();
    }
  }

  /** Returns this connection's partial frame to the shared budget. */
  releaseFrame(): void {
    this.#budget.held -= this.#heldFrameBytes;
    this.#heldFrameBytes = 0;
  }

  #pause(reason: object): void {
    this.#pausedBy.add(reason);
    this.#socket.pause();
  }

  #unpause(reason: object): void {
    if (!this.#pausedBy.delete(reason)) return;
    if (this.#pausedBy.size === 0 && !this.#socket.destroyed) this.#socket.resume();
  }

  /** An incoming channel's buffer: bounded, pausing the socket while full. */
  #incomingStream(): PassThrough {
    // A PassThrough buffers on both sides; each side gets half of the channel's budget.
    const stream = new PassThrough({ highWaterMark: Math.ceil(this.#streamBufferBytes / 2) });
    stream.on("drain", () => this.#readAhead.delete(stream));
    stream.on("drain", () => this.#unpause(stream));
    stream.on("close", () => {
      this.#readAhead.delete(stream);
      this.#unpause(stream);
    });
    stream.on("error", () => this.#unpause(stream));
    return stream;
  }

  destroy(): void {
    this.abortAll();
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    const lines = this.#splitter.push(chunk);
    if (lines === "oversize") {
      this.#closeForFrame(
        `frame larger than ${this.#splitter.maxFrameBytes} bytes`,
        "oversize frame; closing connection",
      );
      return;
    }
    const pending = this.#splitter.pendingBytes;
    this.#budget.held += pending - this.#heldFrameBytes;
    this.#heldFrameBytes = pending;
    if (pending > 0 && this.#budget.held > this.#budget.limit) {
      this.#closeForFrame(
        `the daemon holds ${this.#budget.limit} bytes of unfinished frames; this partial frame of ${pending} bytes does not fit`,
        "frame budget exhausted; closing the connection holding a partial frame",
      );
      return;
    }
    for (const line of lines) {
      if (line.trim() === "") continue;
      this.#onLine(line);
    }
  }

  #closeForFrame(message: string, logMessage: string): void {
    this.#logger.warn(logMessage, {
      limit: this.#splitter.maxFrameBytes,
      held: this.#budget.held,
      budget: this.#budget.limit,
    });
    this.releaseFrame();
    this.#splitter.reset();
    this.#replyError(null, JSONRPC_INVALID_REQUEST, message, {
      code: ErrorCode.LIMIT_EXCEEDED,
      hint: "send smaller requests; stream large inputs through stdin",
    });
    this.#socket.end();
    this.#socket.destroySoon();
  }

  #onLine(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.#replyError(null, JSONRPC_PARSE_ERROR, "not valid JSON", { code: ErrorCode.PARSE_ERROR });
      return;
    }
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      this.#replyError(null, JSONRPC_INVALID_REQUEST, "a message must be a JSON object", {
        code: ErrorCode.PARSE_ERROR,
      });
      return;
    }
    const record = message as Record<string, unknown>;
    const method = record.method;
    const id = record.id;
    const hasId = typeof id === "number" || typeof id === "string";
    if (Object.hasOwn(record, "id") && !hasId) {
      // Only a string or a number can pair a reply with its request.
      if (typeof method === "string" || !("result" in record || "error" in record)) {
        this.#replyError(null, JSONRPC_INVALID_REQUEST, "a request id must be a string or a number", {
          code: ErrorCode.PARSE_ERROR,
          details: { idType: id === null ? "null" : Array.isArray(id) ? "array" : typeof id },
        });
      }
      return;
    }
    if (typeof method !== "string") {
      if (!("result" in record) && !("error" in record)) {
        this.#replyError(hasId ? id : null, JSONRPC_INVALID_REQUEST, "missing method", {
          code: ErrorCode.PARSE_ERROR,
        });
      }
      return;
    }
    if (!hasId) {
      this.#onNotification(method, record.params);
      return;
    }
    void this.#onRequest(id, method, record.params, Buffer.byteLength(line));
  }

  #onNotification(method: string, params: unknown): void {
    if (method === "$/cancel") {
      const parsed = CancelParams.safeParse(params);
      if (parsed.success) {
        this.#inflight.get(parsed.data.id)?.controller.abort(cancelled(undefined, "request"));
      }
      return;
    }
    if (method === "$/signal") {
      const parsed = SignalParams.safeParse(params);
      if (parsed.success) this.#inflight.get(parsed.data.id)?.control.signal?.(parsed.data.signal);
      return;
    }
    if (method === "$/resize") {
      const parsed = ResizeParams.safeParse(params);
      if (parsed.success) {
        const { cols, rows } = parsed.data;
        this.#inflight.get(parsed.data.id)?.control.resize?.({ cols, rows });
      }
      return;
    }
    if (method === "$/stream") {
      const parsed = StreamParams.safeParse(params);
      if (!parsed.success) return;
      const request = this.#inflight.get(parsed.data.id);
      if (!request) return;
      // Bytes may arrive before the handler asks for the channel: buffer them.
      let target = request.incoming.get(parsed.data.ch);
      if (!target) {
        target = this.#incomingStream();
        request.incoming.set(parsed.data.ch, target);
      }
      if (target.writableEnded) return;
      if (parsed.data.data) {
        const bytes = Buffer.from(parsed.data.data, "base64");
        // Over a full buffer, read ahead one more buffer's worth (a $/cancel may follow), then pause.
        if (!target.write(bytes)) {
          const ahead = (this.#readAhead.get(target) ?? 0) + bytes.length;
          this.#readAhead.set(target, ahead);
          if (ahead >= this.#streamBufferBytes) this.#pause(target);
        }
      }
      if (parsed.data.end) target.end();
    }
  }

  async #onRequest(id: RequestId, method: string, rawParams: unknown, bytes: number): Promise<void> {
    if (this.#inflight.has(id)) {
      this.#replyError(id, JSONRPC_INVALID_REQUEST, `request id ${id} is already in use`, {
        code: ErrorCode.INVALID_PARAMS,
      });
      return;
    }
    if (!Object.hasOwn(methods, method)) {
      this.#replyError(id, JSONRPC_METHOD_NOT_FOUND, `unknown method '${excerpt(method, 100)}'`, {
        code: ErrorCode.METHOD_NOT_FOUND,
        hint: "the CLI and daemon may be different versions; run `banger daemon status`",
      });
      return;
    }
    const name = method as MethodName;
    if (!this.#helloDone && name !== "daemon.hello") {
      this.#replyError(
        id,
        JSONRPC_INVALID_REQUEST,
        "the first request on a connection must be daemon.hello",
        {
          code: ErrorCode.HANDSHAKE_REQUIRED,
        },
      );
      return;
    }
    if (!this.#compatible && !ALLOWED_WHEN_INCOMPATIBLE.has(name)) {
      this.#replyError(id, JSONRPC_SERVER_ERROR, "client and daemon speak different protocol versions", {
        code: ErrorCode.VERSION_MISMATCH,
        hint: "stop the daemon with `banger daemon stop` so the CLI can start a matching one",
      });
      return;
    }
    const schema = methods[name].params;
    const parsed = schema.safeParse(rawParams);
    if (!parsed.success) {
      const fields = parsed.error.issues.map((issue) => ({
        path: issue.path.map(String).join(".") || "(params)",
        message: issue.message,
      }));
      const summary = fields.map((field) => `${field.path}: ${field.message}`).join("; ");
      this.#replyError(id, JSONRPC_INVALID_PARAMS, `invalid params for ${name}: ${summary}`, {
        code: ErrorCode.INVALID_PARAMS,
        details: { fields },
      });
      return;
    }
    const handler = this.#options.handlers[name] as Handler<MethodName> | undefined;
    if (name === "daemon.hello") {
      const hello = parsed.data as { protocol: number; build: string };
      this.#helloDone = true;
      this.#compatible = this.#options.onHello(hello).compatible;
    }
    if (!handler) {
      this.#replyError(id, JSONRPC_METHOD_NOT_FOUND, `method '${name}' is not available in this daemon`, {
        code: ErrorCode.METHOD_NOT_FOUND,
      });
      return;
    }
    const controller = new AbortController();
    const incoming = new Map<StreamChannel, PassThrough>();
    const control: ControlListeners = {};
    this.#inflight.set(id, { controller, incoming, control });
    // Made on first use: most requests never log, and a child logger costs more than the ping it serves.
    let requestLogger: Logger | undefined;
    const requestLog = (): Logger => {
      requestLogger ??= this.#logger.child({ req: excerpt(String(id), 64), method: name, bytes });
      return requestLogger;
    };
    const ctx: HandlerContext = {
      requestId: id,
      signal: controller.signal,
      get logger() {
        return requestLog();
      },
      progress: (event) => {
        this.#send({ jsonrpc: "2.0", method: "$/progress", params: { id, status: "running", ...event } });
      },
      control: {
        onSignal: (listener) => {
          control.signal = listener;
        },
        onResize: (listener) => {
          control.resize = listener;
        },
      },
      streams: {
        write: (ch, data) => this.#writeStream(id, ch, data),
        end: (ch) => this.#send({ jsonrpc: "2.0", method: "$/stream", params: { id, ch, end: true } }),
        incoming: (ch) => {
          let stream = incoming.get(ch);
          if (!stream) {
            stream = this.#incomingStream();
            incoming.set(ch, stream);
          }
          return stream;
        },
      },
    };
    const started = performance.now();
    try {
      const result = await handler(parsed.data, ctx);
      this.#send({ jsonrpc: "2.0", id, result });
      this.#logger.debug("request done", {
        req: excerpt(String(id), 64),
        method: name,
        bytes,
        ms: Math.round(performance.now() - started),
      });
    } catch (error) {
      this.#replyFailure(id, error, requestLog());
    } finally {
      this.#inflight.delete(id);
      // Nobody reads these any more: drop what they hold and let the socket flow again.
      for (const stream of incoming.values()) stream.destroy();
    }
  }

  async #writeStream(id: RequestId, ch: StreamChannel, data: Buffer): Promise<void> {
    for (const notification of streamNotifications(id, ch, data)) {
      if (!this.#send(notification) && !this.#socket.destroyed) await drained(this.#socket);
    }
  }

  #replyFailure(id: RequestId, error: unknown, logger: Logger): void {
    if (isBangerError(error)) {
      const data: WireErrorData = { code: error.code };
      if (error.hint) data.hint = error.hint;
      if (error.data) data.details = error.data;
      logger.info("request failed", { code: error.code, err: excerpt(error.message, LOGGED_MESSAGE_CHARS) });
      this.#replyError(id, JSONRPC_SERVER_ERROR, error.message, data);
      return;
    }
    const correlation = randomUUID().slice(0, 8);
    logger.error("internal error", {
      correlation,
      err: excerpt(errorMessage(error), LOGGED_MESSAGE_CHARS),
      stack: error instanceof Error ? excerpt(error.stack ?? "", 4 * LOGGED_MESSAGE_CHARS) : undefined,
    });
    this.#replyError(id, JSONRPC_SERVER_ERROR, `internal error (correlation id ${correlation})`, {
      code: ErrorCode.INTERNAL,
      hint: `this is a bug in banger; search \`banger daemon logs\` for ${correlation}`,
    });
  }

  #replyError(id: RequestId | null, code: number, message: string, data: WireErrorData): void {
    this.#send({ jsonrpc: "2.0", id, error: { code, message, data } });
  }

  /**
   * Returns false when the socket buffer is full (the caller should wait for
   * drain). A client that lets replies pile up is paused, then closed.
   */
  #send(message: object): boolean {
    if (this.#socket.destroyed || !this.#socket.writable) return true;
    const flushed = this.#socket.write(`${JSON.stringify(message)}\n`);
    const pending = this.#socket.writableLength;
    if (pending > this.#closeAtPendingWrite) {
      this.#logger.warn("client is not reading its replies; closing the connection", { pending });
      this.#socket.destroy();
      return true;
    }
    if (pending > this.#maxPendingWrite) this.#pause(this.#writePressure);
    return flushed;
  }
}

/** The start of `text`, with its full length when cut, for log lines and messages. */
function excerpt(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`;
}
