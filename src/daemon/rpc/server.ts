/**
 * The JSON-RPC server: one JSON object per line over a Unix socket.
 *
 * Contracts:
 * - Every connection starts with `daemon.hello`; any other request first is
 *   answered HANDSHAKE_REQUIRED.
 * - A malformed line gets a PARSE_ERROR reply, an unknown method
 *   METHOD_NOT_FOUND, bad params INVALID_PARAMS with per-field messages; an
 *   oversize frame closes that connection. None of them affects other clients.
 * - `$/cancel` aborts the handler's AbortSignal; a closed connection aborts
 *   every handler still running for it.
 * - Handlers return data; errors that are not BangerErrors reach the client
 *   as INTERNAL with a correlation id that is also logged.
 */
import { randomUUID } from "node:crypto";
import { chmod, chown, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import type { z } from "zod";
import { cancelled, errorMessage } from "../../core/async/index.ts";
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
  type MethodTable,
  methods,
  type Progress,
  type RequestId,
  type ResultOf,
  STREAM_CHUNK_BYTES,
  type StreamChannel,
  StreamParams,
  type WireErrorData,
} from "../../protocol/index.ts";
import { LineSplitter } from "./lines.ts";

/** The byte channels of one request, in both directions. */
export interface RequestStreams {
  /** Sends bytes to the client on `ch`; resolves once the socket can take more. */
  write(ch: StreamChannel, data: Buffer): Promise<void>;
  /** Tells the client `ch` has ended. */
  end(ch: StreamChannel): void;
  /** Bytes the client sends on `ch` (stdin, tcp), ending when the client ends it. */
  incoming(ch: StreamChannel): Readable;
}

export interface HandlerContext {
  requestId: RequestId;
  signal: AbortSignal;
  logger: Logger;
  progress: Progress;
  streams: RequestStreams;
}

export type Handler<M extends MethodName> = (
  params: z.infer<MethodTable[M]["params"]>,
  ctx: HandlerContext,
) => Promise<ResultOf<M>> | ResultOf<M>;

export type HandlerTable = { [M in MethodName]?: Handler<M> };

export interface RpcServerOptions {
  socketPath: string;
  handlers: HandlerTable;
  logger: Logger;
  /** 0o600, or 0o660 with a group. */
  socketMode: number;
  socketGid?: number | undefined;
  maxFrameBytes?: number;
  /** Decides, from the client's hello, whether the connection may continue. */
  onHello(params: { protocol: number; build: string }): { compatible: boolean };
}

export interface RpcServer {
  listen(): Promise<void>;
  /** Stops accepting, aborts in-flight handlers, closes every connection. */
  close(): Promise<void>;
  readonly connectionCount: number;
}

/** Methods an incompatible client may still call (to inspect or stop the daemon). */
const ALLOWED_WHEN_INCOMPATIBLE = new Set<string>(["daemon.ping", "daemon.status", "daemon.shutdown"]);

export function createRpcServer(options: RpcServerOptions): RpcServer {
  const connections = new Set<Connection>();
  let server: Server | undefined;
  let nextConnection = 0;

  return {
    async listen() {
      await rm(options.socketPath, { force: true });
      server = createServer((socket) => {
        const connection = new Connection(socket, options, ++nextConnection);
        connections.add(connection);
        socket.on("close", () => {
          connection.abortAll();
          connections.delete(connection);
        });
      });
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        // A restrictive umask closes the window between bind and chmod.
        const previousUmask = process.umask(0o177);
        server!.listen(options.socketPath, () => {
          process.umask(previousUmask);
          resolve();
        });
      });
      if (options.socketGid !== undefined)
        await chown(options.socketPath, process.getuid?.() ?? 0, options.socketGid);
      await chmod(options.socketPath, options.socketMode);
    },
    async close() {
      const closing = server
        ? new Promise<void>((resolve) => server!.close(() => resolve()))
        : Promise.resolve();
      for (const connection of connections) connection.destroy();
      await closing;
      await rm(options.socketPath, { force: true });
    },
    get connectionCount() {
      return connections.size;
    },
  };
}

class Connection {
  readonly #socket: Socket;
  readonly #options: RpcServerOptions;
  readonly #logger: Logger;
  readonly #splitter: LineSplitter;
  readonly #inflight = new Map<
    RequestId,
    { controller: AbortController; incoming: Map<StreamChannel, PassThrough> }
  >();
  #helloDone = false;
  #compatible = true;

  constructor(socket: Socket, options: RpcServerOptions, id: number) {
    this.#socket = socket;
    this.#options = options;
    this.#logger = options.logger.child({ conn: id });
    this.#splitter = new LineSplitter(options.maxFrameBytes ?? MAX_FRAME_BYTES);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#logger.debug("connection error", { err: error.message }));
  }

  abortAll(): void {
    for (const { controller, incoming } of this.#inflight.values()) {
      controller.abort(cancelled(undefined, "request of a disconnected client"));
      for (const stream of incoming.values()) stream.end();
    }
  }

  destroy(): void {
    this.abortAll();
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    const lines = this.#splitter.push(chunk);
    if (lines === "oversize") {
      this.#logger.warn("oversize frame; closing connection", { limit: this.#splitter.maxFrameBytes });
      this.#send({
        jsonrpc: "2.0",
        id: null,
        error: {
          code: JSONRPC_INVALID_REQUEST,
          message: `frame larger than ${this.#splitter.maxFrameBytes} bytes`,
          data: { code: ErrorCode.INVALID_PARAMS },
        },
      });
      this.#socket.end();
      this.#socket.destroySoon();
      return;
    }
    for (const line of lines) {
      if (line.trim() === "") continue;
      this.#onLine(line);
    }
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
    void this.#onRequest(id, method, record.params);
  }

  #onNotification(method: string, params: unknown): void {
    if (method === "$/cancel") {
      const parsed = CancelParams.safeParse(params);
      if (parsed.success) {
        this.#inflight.get(parsed.data.id)?.controller.abort(cancelled(undefined, "request"));
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
        target = new PassThrough();
        request.incoming.set(parsed.data.ch, target);
      }
      if (parsed.data.data) target.write(Buffer.from(parsed.data.data, "base64"));
      if (parsed.data.end) target.end();
    }
  }

  async #onRequest(id: RequestId, method: string, rawParams: unknown): Promise<void> {
    if (this.#inflight.has(id)) {
      this.#replyError(id, JSONRPC_INVALID_REQUEST, `request id ${id} is already in use`, {
        code: ErrorCode.INVALID_PARAMS,
      });
      return;
    }
    if (!Object.hasOwn(methods, method)) {
      this.#replyError(id, JSONRPC_METHOD_NOT_FOUND, `unknown method '${method}'`, {
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
    this.#inflight.set(id, { controller, incoming });
    // Made on first use: most requests never log, and a child logger costs more than the ping it serves.
    let requestLogger: Logger | undefined;
    const requestLog = (): Logger => {
      requestLogger ??= this.#logger.child({ req: id, method: name });
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
      streams: {
        write: (ch, data) => this.#writeStream(id, ch, data),
        end: (ch) => this.#send({ jsonrpc: "2.0", method: "$/stream", params: { id, ch, end: true } }),
        incoming: (ch) => {
          let stream = incoming.get(ch);
          if (!stream) {
            stream = new PassThrough();
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
        req: id,
        method: name,
        ms: Math.round(performance.now() - started),
      });
    } catch (error) {
      this.#replyFailure(id, error, requestLog());
    } finally {
      this.#inflight.delete(id);
      for (const stream of incoming.values()) stream.end();
    }
  }

  async #writeStream(id: RequestId, ch: StreamChannel, data: Buffer): Promise<void> {
    for (let offset = 0; offset < data.length; offset += STREAM_CHUNK_BYTES) {
      const piece = data.subarray(offset, offset + STREAM_CHUNK_BYTES);
      const flushed = this.#send({
        jsonrpc: "2.0",
        method: "$/stream",
        params: { id, ch, data: piece.toString("base64") },
      });
      if (!flushed && !this.#socket.destroyed) {
        await new Promise<void>((resolve) => {
          const done = () => {
            this.#socket.off("drain", done);
            this.#socket.off("close", done);
            resolve();
          };
          this.#socket.on("drain", done);
          this.#socket.on("close", done);
        });
      }
    }
  }

  #replyFailure(id: RequestId, error: unknown, logger: Logger): void {
    if (isBangerError(error)) {
      const data: WireErrorData = { code: error.code };
      if (error.hint) data.hint = error.hint;
      if (error.data) data.details = error.data;
      logger.info("request failed", { code: error.code, err: error.message });
      this.#replyError(id, JSONRPC_SERVER_ERROR, error.message, data);
      return;
    }
    const correlation = randomUUID().slice(0, 8);
    logger.error("internal error", {
      correlation,
      err: errorMessage(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
    this.#replyError(id, JSONRPC_SERVER_ERROR, `internal error (correlation id ${correlation})`, {
      code: ErrorCode.INTERNAL,
      hint: `this is a bug in banger; search \`banger daemon logs\` for ${correlation}`,
    });
  }

  #replyError(id: RequestId | null, code: number, message: string, data: WireErrorData): void {
    this.#send({ jsonrpc: "2.0", id, error: { code, message, data } });
  }

  /** Returns false when the socket buffer is full (the caller should wait for drain). */
  #send(message: object): boolean {
    if (this.#socket.destroyed || !this.#socket.writable) return true;
    return this.#socket.write(`${JSON.stringify(message)}\n`);
  }
}
