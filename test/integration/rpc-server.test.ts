import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RpcClient } from "../../src/cli/rpc/client.ts";
import { createRpcServer, type HandlerTable, type RpcServer } from "../../src/daemon/rpc/server.ts";
import { BangerError, BUILD_VERSION, ErrorCode, PROTOCOL_VERSION } from "../../src/protocol/index.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const FRAME_LIMIT = 256 * 1024;

function testHandlers(events: string[]): HandlerTable {
  return {
    "daemon.hello": (params) => ({
      protocol: PROTOCOL_VERSION,
      build: BUILD_VERSION,
      pid: process.pid,
      compatible: params.protocol === PROTOCOL_VERSION,
      runningVms: 0,
    }),
    "daemon.ping": () => ({ pong: true as const, time: new Date().toISOString() }),
    // Streams three progress events, then waits for cancel.
    "image.build-default": async (_params, ctx) => {
      for (let step = 1; step <= 3; step++)
        ctx.progress({ step: "image.rootfs", message: `step ${step}`, current: step, total: 3 });
      await new Promise<void>((_resolve, reject) => {
        ctx.signal.addEventListener("abort", () => {
          events.push("aborted");
          reject(new BangerError(ErrorCode.CANCELLED, "build cancelled"));
        });
      });
      throw new Error("unreachable");
    },
    // Echoes stdin to stdout, uppercased on stderr, and reports the byte count.
    "vm.exec": async (params, ctx) => {
      const hash = createHash("sha256");
      let bytes = 0;
      if (params.argv[0] === "generate") {
        const size = Number(params.argv[1]);
        const block = Buffer.alloc(1024 * 1024, 0x61);
        for (let sent = 0; sent < size; sent += block.length) {
          const piece = block.subarray(0, Math.min(block.length, size - sent));
          await ctx.streams.write("stdout", piece);
        }
        ctx.streams.end("stdout");
        return { exitCode: 0, signal: null };
      }
      for await (const chunk of ctx.streams.incoming("stdin")) {
        const buffer = chunk as Buffer;
        bytes += buffer.length;
        hash.update(buffer);
        await ctx.streams.write("stdout", buffer);
        await ctx.streams.write("stderr", Buffer.from(buffer.toString("utf8").toUpperCase()));
      }
      ctx.streams.end("stdout");
      ctx.streams.end("stderr");
      return { exitCode: bytes % 256, signal: null };
    },
    // Reads the tcp channel only after a delay, as a proxy does while it connects.
    "vm.proxy": async (_params, ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      for await (const chunk of ctx.streams.incoming("tcp")) await ctx.streams.write("tcp", chunk as Buffer);
      ctx.streams.end("tcp");
      return { closed: true as const };
    },
    "vm.show": (params) => {
      if (params.name === "boom") throw new Error("kaboom");
      throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${params.name}'`);
    },
  };
}

async function helloClient(socket: string): Promise<RpcClient> {
  const client = await RpcClient.connect(socket);
  await client.call("daemon.hello", { protocol: PROTOCOL_VERSION, build: BUILD_VERSION });
  return client;
}

/** Sends raw lines and collects parsed replies until `count` arrive or the socket closes. */
function rawExchange(
  socket: string,
  payload: string,
  count: number,
): Promise<{ replies: Record<string, unknown>[]; closed: boolean }> {
  return new Promise((resolve) => {
    const conn = connect(socket);
    const replies: Record<string, unknown>[] = [];
    let buffer = "";
    let closed = false;
    conn.setEncoding("utf8");
    conn.on("data", (chunk: string) => {
      buffer += chunk;
      let index = buffer.indexOf("\n");
      while (index !== -1) {
        replies.push(JSON.parse(buffer.slice(0, index)));
        buffer = buffer.slice(index + 1);
        index = buffer.indexOf("\n");
      }
      if (replies.length >= count) {
        conn.destroy();
        resolve({ replies, closed });
      }
    });
    conn.on("error", () => {});
    conn.on("close", () => {
      closed = true;
      resolve({ replies, closed });
    });
    conn.write(payload);
  });
}

describe("RPC over a real Unix socket", () => {
  const dir = makeTempDir();
  const socket = join(dir.path, "t.sock");
  const events: string[] = [];
  const logger = createMemoryLogger();
  let server: RpcServer;

  before(async () => {
    server = createRpcServer({
      socketPath: socket,
      handlers: testHandlers(events),
      logger,
      socketMode: 0o600,
      maxFrameBytes: FRAME_LIMIT,
      onHello: (hello) => ({ compatible: hello.protocol === PROTOCOL_VERSION }),
    });
    await server.listen();
  });
  after(async () => {
    await server.close();
    dir.cleanup();
  });

  it("creates the socket owner-only", () => {
    assert.equal(statSync(socket).mode & 0o777, 0o600);
  });

  it("requires daemon.hello first", async () => {
    const client = await RpcClient.connect(socket);
    await assert.rejects(
      client.call("daemon.ping", {}),
      (error: BangerError) => error.code === ErrorCode.HANDSHAKE_REQUIRED,
    );
    await client.call("daemon.hello", { protocol: PROTOCOL_VERSION, build: BUILD_VERSION });
    assert.equal((await client.call("daemon.ping", {})).pong, true);
    client.close();
  });

  it("tells an incompatible client so and only lets it inspect or stop the daemon", async () => {
    const client = await RpcClient.connect(socket);
    const hello = await client.call("daemon.hello", { protocol: PROTOCOL_VERSION + 1, build: "9.9.9" });
    assert.equal(hello.compatible, false);
    await assert.rejects(
      client.call("vm.list", {}),
      (error: BangerError) => error.code === ErrorCode.VERSION_MISMATCH,
    );
    assert.equal((await client.call("daemon.ping", {})).pong, true);
    client.close();
  });

  it("streams progress, and $/cancel aborts the handler", async () => {
    const client = await helloClient(socket);
    const seen: number[] = [];
    const controller = new AbortController();
    const call = client.call(
      "image.build-default",
      {},
      {
        signal: controller.signal,
        onProgress: (event) => {
          seen.push(event.current ?? -1);
          if (event.current === 3) controller.abort();
        },
      },
    );
    await assert.rejects(call, (error: BangerError) => error.code === ErrorCode.CANCELLED);
    assert.deepEqual(seen, [1, 2, 3]);
    assert.ok(events.includes("aborted"));
    client.close();
  });

  it("carries a byte stream both ways for one request", async () => {
    const client = await helloClient(socket);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const ended: string[] = [];
    const call = client.start(
      "vm.exec",
      { name: "x", argv: ["cat"], stdin: true },
      {
        onStream: (ch, data) => {
          if (data === null) ended.push(ch);
          else if (ch === "stdout") out.push(data);
          else if (ch === "stderr") err.push(data);
        },
      },
    );
    const input = Buffer.from("hello stream\n".repeat(10000));
    await call.write("stdin", input);
    call.end("stdin");
    const result = await call.result;
    assert.equal(Buffer.concat(out).toString(), input.toString());
    assert.equal(Buffer.concat(err).toString(), input.toString().toUpperCase());
    assert.equal(result.exitCode, input.length % 256);
    assert.deepEqual(ended.sort(), ["stderr", "stdout"]);
    client.close();
  });

  it("keeps bytes that arrive before the handler reads its channel", async () => {
    const client = await helloClient(socket);
    const echoed: Buffer[] = [];
    const call = client.start(
      "vm.proxy",
      { name: "x", port: 22 },
      {
        onStream: (_ch, data) => {
          if (data) echoed.push(data);
        },
      },
    );
    await call.write("tcp", Buffer.from("SSH-2.0-early\r\n"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await call.write("tcp", Buffer.from("later"));
    call.end("tcp");
    await call.result;
    assert.equal(Buffer.concat(echoed).toString(), "SSH-2.0-early\r\nlater");
    client.close();
  });

  it("delivers a 10 MB stream intact", async () => {
    const client = await helloClient(socket);
    const hash = createHash("sha256");
    let bytes = 0;
    await client.call(
      "vm.exec",
      { name: "x", argv: ["generate", String(10 * 1024 * 1024)] },
      {
        onStream: (_ch, data) => {
          if (data) {
            bytes += data.length;
            hash.update(data);
          }
        },
      },
    );
    assert.equal(bytes, 10 * 1024 * 1024);
    assert.equal(
      hash.digest("hex"),
      createHash("sha256")
        .update(Buffer.alloc(10 * 1024 * 1024, 0x61))
        .digest("hex"),
    );
    client.close();
  });

  it("maps BangerErrors to their code and other errors to INTERNAL with a correlation id", async () => {
    const client = await helloClient(socket);
    await assert.rejects(client.call("vm.show", { name: "nope" }), (error: BangerError) => {
      assert.equal(error.code, ErrorCode.VM_NOT_FOUND);
      assert.match(error.message, /nope/);
      assert.ok(error.hint);
      return true;
    });
    await assert.rejects(client.call("vm.show", { name: "boom" }), (error: BangerError) => {
      assert.equal(error.code, ErrorCode.INTERNAL);
      const correlation = /correlation id (\w+)/.exec(error.message)?.[1];
      assert.ok(correlation);
      assert.ok(
        logger.lines.some((line) => line.fields.correlation === correlation && line.level === "error"),
      );
      return true;
    });
    client.close();
  });

  it("answers bad params with INVALID_PARAMS naming the field", async () => {
    const client = await helloClient(socket);
    await assert.rejects(
      client.call("vm.create", { name: "Bad_Name", cpus: 0 } as never),
      (error: BangerError) =>
        error.code === ErrorCode.INVALID_PARAMS && /name/.test(error.message) && /cpus/.test(error.message),
    );
    client.close();
  });

  it("answers a malformed line, a non-object and an unknown method, then still serves", async () => {
    const hello = JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "daemon.hello",
      params: { protocol: PROTOCOL_VERSION, build: "x" },
    });
    const payload = `${hello}\n{not json\n[1,2]\n${JSON.stringify({ jsonrpc: "2.0", id: 2, method: "no.such" })}\n${JSON.stringify({ jsonrpc: "2.0", id: 3, method: "daemon.ping" })}\n`;
    const { replies } = await rawExchange(socket, payload, 5);
    const codes = replies
      .map(
        (reply) =>
          `${reply.id}:${(reply.error as { data?: { code?: string } } | undefined)?.data?.code ?? "ok"}`,
      )
      .sort();
    assert.deepEqual(codes, ["1:ok", "2:METHOD_NOT_FOUND", "3:ok", "null:PARSE_ERROR", "null:PARSE_ERROR"]);
  });

  it("closes the connection on an oversize frame and keeps serving others", async () => {
    const { replies, closed } = await rawExchange(socket, "x".repeat(FRAME_LIMIT + 10), 1);
    assert.ok(closed || replies.length === 1);
    assert.match(String((replies[0]?.error as { message?: string } | undefined)?.message), /frame larger/);
    const client = await helloClient(socket);
    assert.equal((await client.call("daemon.ping", {})).pong, true);
    client.close();
  });

  it("serves 50 clients at once", async () => {
    const clients = await Promise.all(Array.from({ length: 50 }, () => helloClient(socket)));
    const results = await Promise.all(clients.map((client) => client.call("daemon.ping", {})));
    assert.equal(results.filter((result) => result.pong).length, 50);
    for (const client of clients) client.close();
  });

  it("aborts a client's in-flight handlers when it disconnects", async () => {
    const before = events.filter((event) => event === "aborted").length;
    const client = await helloClient(socket);
    const call = client.call("image.build-default", {}, { onProgress: () => {} });
    await new Promise((resolve) => setTimeout(resolve, 50));
    client.close();
    await assert.rejects(call);
    for (let i = 0; i < 50 && events.filter((event) => event === "aborted").length === before; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(events.filter((event) => event === "aborted").length, before + 1);
  });
});
