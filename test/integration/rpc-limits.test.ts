/**
 * The RPC server's limits (ARCHITECTURE.md "Limits") over a real Unix
 * socket: ids of every JSON type, the connection cap, the idle timeout, the
 * shared partial-frame budget, bounded incoming streams with backpressure,
 * a client that never reads, and log lines that never carry the input.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { createRpcServer, type HandlerTable, type RpcServer } from "../../src/daemon/rpc/server.ts";
import { BangerError, BUILD_VERSION, ErrorCode, PROTOCOL_VERSION } from "../../src/protocol/index.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const STREAM_BUFFER = 256 * 1024;

const hello = (id: number | string = "h") =>
  `${JSON.stringify({ jsonrpc: "2.0", id, method: "daemon.hello", params: { protocol: PROTOCOL_VERSION, build: BUILD_VERSION } })}\n`;

/** A raw connection that parses every reply line. */
class RawClient {
  readonly socket: Socket;
  readonly replies: Record<string, unknown>[] = [];
  closed: Promise<void>;
  #buffer = "";
  #waiters: Array<() => void> = [];

  constructor(path: string) {
    this.socket = connect(path);
    this.socket.setEncoding("utf8");
    this.socket.on("error", () => {});
    this.socket.on("data", (chunk: string) => {
      this.#buffer += chunk;
      for (let index = this.#buffer.indexOf("\n"); index !== -1; index = this.#buffer.indexOf("\n")) {
        this.replies.push(JSON.parse(this.#buffer.slice(0, index)));
        this.#buffer = this.#buffer.slice(index + 1);
      }
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => this.socket.on("close", () => resolve()));
    this.socket.on("close", () => {
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Waits until `count` replies arrived (or the socket closed). */
  async until(count: number): Promise<Record<string, unknown>[]> {
    while (this.replies.length < count && !this.socket.destroyed && !this.socket.closed) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return this.replies;
  }

  send(line: string): void {
    this.socket.write(line);
  }
}

const codeOf = (reply: Record<string, unknown> | undefined) =>
  (reply?.error as { data?: { code?: string } } | undefined)?.data?.code;

describe("RPC server limits", () => {
  const dir = makeTempDir();
  const socket = join(dir.path, "limits.sock");
  const logger = createMemoryLogger();
  let server: RpcServer;
  const stdinSeen: { maxBuffered: number; bytes: number; sha: string }[] = [];
  let releaseStdin: () => void = () => {};
  let stdinRead = new Promise<void>((resolve) => {
    releaseStdin = resolve;
  });
  let aborted = 0;
  let cancelled = 0;

  const handlers: HandlerTable = {
    "daemon.hello": () => ({
      protocol: PROTOCOL_VERSION,
      build: BUILD_VERSION,
      pid: process.pid,
      compatible: true,
      runningVms: 0,
    }),
    "daemon.ping": () => ({ pong: true as const, time: new Date().toISOString() }),
    // Reads stdin only once released, slowly, recording how much the server buffered meanwhile.
    "vm.exec": async (_params, ctx) => {
      const stdin = ctx.streams.incoming("stdin");
      await Promise.race([
        stdinRead,
        new Promise<never>((_resolve, reject) =>
          ctx.signal.addEventListener("abort", () => {
            cancelled++;
            reject(new BangerError(ErrorCode.CANCELLED, "cancelled"));
          }),
        ),
      ]);
      const hash = createHash("sha256");
      let bytes = 0;
      let maxBuffered = 0;
      for await (const chunk of stdin as Readable) {
        const held = stdin.readableLength + (stdin as unknown as { writableLength: number }).writableLength;
        maxBuffered = Math.max(maxBuffered, held + (chunk as Buffer).length);
        bytes += (chunk as Buffer).length;
        hash.update(chunk as Buffer);
        await new Promise((resolve) => setImmediate(resolve));
      }
      stdinSeen.push({ maxBuffered, bytes, sha: hash.digest("hex") });
      return { exitCode: 0, signal: null };
    },
    // Floods progress without waiting, then waits for the connection to go away.
    "image.build-default": async (_params, ctx) => {
      for (let index = 0; index < 20_000; index++)
        ctx.progress({ step: "image.rootfs", message: `${"p".repeat(200)} ${index}` });
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        ctx.signal.addEventListener("abort", () => resolve());
      });
      aborted++;
      throw new BangerError(ErrorCode.CANCELLED, "gone");
    },
    "vm.show": (params) => {
      throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${params.name}'`);
    },
  };

  let connectionCap = 6;
  before(async () => {
    server = createRpcServer({
      socketPath: socket,
      handlers,
      logger,
      socketMode: 0o600,
      maxFrameBytes: 768 * 1024,
      maxBufferedFrameBytes: 1024 * 1024,
      maxPendingWriteBytes: 16 * 1024,
      streamBufferBytes: STREAM_BUFFER,
      idleTimeoutMs: 300,
      maxConnections: () => connectionCap,
      onHello: () => ({ compatible: true }),
    });
    await server.listen();
  });
  after(async () => {
    await server.close();
    dir.cleanup();
  });

  it("answers a request id of every JSON type; ids that cannot pair a reply get INVALID_REQUEST with id null", async () => {
    const client = new RawClient(socket);
    client.send(hello(1));
    const ids: unknown[] = [null, { a: 1 }, true, false, [1], 7, "seven", 0, ""];
    for (const id of ids) client.send(`${JSON.stringify({ jsonrpc: "2.0", id, method: "daemon.ping" })}\n`);
    const replies = await client.until(1 + ids.length);
    const rejected = replies.filter((reply) => codeOf(reply) === ErrorCode.PARSE_ERROR);
    assert.equal(rejected.length, 5);
    for (const reply of rejected) {
      assert.equal(reply.id, null);
      assert.equal((reply.error as { code: number }).code, -32600);
    }
    const answered = replies.filter((reply) => reply.result !== undefined).map((reply) => reply.id);
    assert.deepEqual(answered.sort(), [0, 1, 7, "", "seven"].sort());
    client.socket.destroy();
  });

  it("refuses connections over the cap with RESOURCE_EXHAUSTED and accepts again below it", async () => {
    connectionCap = 4;
    const held = Array.from({ length: 4 }, () => new RawClient(socket));
    for (const client of held) client.send(hello());
    await Promise.all(held.map((client) => client.until(1)));
    const extra = new RawClient(socket);
    const [refusal] = await extra.until(1);
    assert.equal(codeOf(refusal), ErrorCode.RESOURCE_EXHAUSTED);
    await extra.closed;
    held[0]!.socket.destroy();
    await held[0]!.closed;
    await new Promise((resolve) => setImmediate(resolve));
    const again = new RawClient(socket);
    again.send(hello());
    again.send(`${JSON.stringify({ jsonrpc: "2.0", id: 2, method: "daemon.ping" })}\n`);
    const replies = await again.until(2);
    assert.equal((replies[1]?.result as { pong?: boolean } | undefined)?.pong, true);
    for (const client of [...held, again]) client.socket.destroy();
    connectionCap = 64;
  });

  it("closes idle connections, but not one with a request in flight", async () => {
    const idle = new RawClient(socket);
    const busy = new RawClient(socket);
    busy.send(hello());
    busy.send(
      `${JSON.stringify({ jsonrpc: "2.0", id: 9, method: "vm.exec", params: { name: "x", argv: ["cat"] } })}\n`,
    );
    await busy.until(1);
    await idle.closed;
    // Two more idle periods pass while the exec waits for stdin.
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.equal(busy.socket.destroyed, false);
    busy.socket.destroy();
  });

  it("bounds what a connection's stdin holds and still delivers every byte", async () => {
    stdinRead = new Promise<void>((resolve) => {
      releaseStdin = resolve;
    });
    const client = new RawClient(socket);
    client.send(hello());
    client.send(
      `${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "vm.exec", params: { name: "x", argv: ["cat"], stdin: true } })}\n`,
    );
    const total = 16 * 1024 * 1024;
    const block = Buffer.alloc(32 * 1024);
    const hash = createHash("sha256");
    let sent = 0;
    let index = 0;
    let blocked = false;
    const writeMore = () => {
      blocked = false;
      while (sent < total) {
        block.fill(index++ % 251);
        hash.update(block);
        sent += block.length;
        const frame = `${JSON.stringify({ jsonrpc: "2.0", method: "$/stream", params: { id: 1, ch: "stdin", data: block.toString("base64") } })}\n`;
        if (!client.socket.write(frame)) {
          blocked = true;
          client.socket.once("drain", writeMore);
          return;
        }
      }
      client.socket.write(
        `${JSON.stringify({ jsonrpc: "2.0", method: "$/stream", params: { id: 1, ch: "stdin", end: true } })}\n`,
      );
    };
    writeMore();
    // The handler reads nothing until the client is held back (or, without backpressure, has sent it all).
    while (sent < total && !(blocked && sent > STREAM_BUFFER))
      await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseStdin();
    const replies = await client.until(2);
    assert.equal((replies[1]?.result as { exitCode?: number } | undefined)?.exitCode, 0);
    const seen = stdinSeen.at(-1)!;
    assert.equal(seen.bytes, total);
    assert.equal(seen.sha, hash.digest("hex"));
    // The buffer plus its read-ahead, give or take a chunk in flight.
    assert.ok(seen.maxBuffered <= 2 * STREAM_BUFFER + 2 * block.length, `buffered ${seen.maxBuffered}`);
    client.socket.destroy();
  });

  it("still reads a $/cancel that a client sends behind stdin nobody reads", async () => {
    stdinRead = new Promise<void>(() => {});
    const before = cancelled;
    const client = new RawClient(socket);
    client.send(hello());
    client.send(
      `${JSON.stringify({ jsonrpc: "2.0", id: 2, method: "vm.exec", params: { name: "x", argv: ["cat"], stdin: true } })}\n`,
    );
    await client.until(1);
    // Like the CLI: write while the socket takes more, then cancel.
    const frame = `${JSON.stringify({ jsonrpc: "2.0", method: "$/stream", params: { id: 2, ch: "stdin", data: Buffer.alloc(32 * 1024).toString("base64") } })}\n`;
    while (client.socket.write(frame));
    client.send(`${JSON.stringify({ jsonrpc: "2.0", method: "$/cancel", params: { id: 2 } })}\n`);
    while (cancelled === before) await new Promise((resolve) => setTimeout(resolve, 10));
    const replies = await client.until(2);
    assert.equal(codeOf(replies[1]), ErrorCode.CANCELLED);
    client.socket.destroy();
  });

  it("closes a connection whose client never reads its replies, aborting its requests", async () => {
    const before = aborted;
    const client = new RawClient(socket);
    client.socket.pause();
    client.send(hello());
    client.send(`${JSON.stringify({ jsonrpc: "2.0", id: 5, method: "image.build-default", params: {} })}\n`);
    while (aborted === before) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(logger.lines.some((line) => line.msg.includes("not reading")));
    client.socket.resume();
    await client.closed;
  });

  it("bounds partial frames held across connections", async () => {
    const first = new RawClient(socket);
    const second = new RawClient(socket);
    first.send("x".repeat(600 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 50));
    second.send("y".repeat(600 * 1024));
    const [refusal] = await second.until(1);
    assert.equal(codeOf(refusal), ErrorCode.LIMIT_EXCEEDED);
    await second.closed;
    // The first connection still holds its partial frame and is served once it ends.
    first.send(`\n${hello()}`);
    const replies = await first.until(2);
    assert.equal(codeOf(replies[0]), ErrorCode.PARSE_ERROR);
    assert.equal((replies[1]?.result as { compatible?: boolean } | undefined)?.compatible, true);
    first.socket.destroy();
  });

  it("logs a failed request's method and size, never its whole input", async () => {
    const client = new RawClient(socket);
    const name = "n".repeat(512 * 1024);
    client.send(hello());
    client.send(`${JSON.stringify({ jsonrpc: "2.0", id: 3, method: "vm.show", params: { name } })}\n`);
    const replies = await client.until(2);
    assert.equal(codeOf(replies[1]), ErrorCode.VM_NOT_FOUND, JSON.stringify(replies).slice(0, 500));
    const line = logger.lines.findLast((entry) => entry.msg === "request failed");
    assert.ok(line);
    assert.equal(line.fields.method, "vm.show");
    assert.ok(Number(line.fields.bytes) > 512 * 1024);
    assert.ok(JSON.stringify(line).length < 2000, `log line of ${JSON.stringify(line).length} chars`);
    client.socket.destroy();
  });
});
