/**
 * The CLI client reads no further from the daemon while an `onStream`
 * consumer is still taking a chunk: a download into a slow local program
 * makes the daemon wait instead of piling the bytes up in the CLI.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RpcClient } from "../../src/cli/rpc/client.ts";
import { sleep } from "../../src/core/async/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const CHUNK = Buffer.alloc(48 * 1024, 0x61).toString("base64");
const TOTAL_CHUNKS = 1024; // 48 MiB

/** A daemon stand-in: answers any request with TOTAL_CHUNKS stream chunks (waiting for drain), then a result. */
function streamingServer(path: string) {
  const state = { sent: 0, blocked: false, socket: undefined as Socket | undefined };
  const server = createServer((socket) => {
    state.socket = socket;
    socket.setEncoding("utf8");
    socket.once("data", async (line: string) => {
      const { id } = JSON.parse(line.split("\n")[0]!) as { id: number };
      for (let n = 0; n < TOTAL_CHUNKS; n++) {
        const frame = JSON.stringify({
          jsonrpc: "2.0",
          method: "$/stream",
          params: { id, ch: "stdout", data: CHUNK },
        });
        state.sent += 1;
        if (!socket.write(`${frame}\n`)) {
          state.blocked = true;
          await once(socket, "drain");
          state.blocked = false;
        }
      }
      socket.write(`${JSON.stringify({ jsonrpc: "2.0", id, result: { done: true } })}\n`);
    });
  });
  server.listen(path);
  return { server, state };
}

describe("rpc client download backpressure", () => {
  it("stops reading while a consumer holds a chunk, and delivers everything once it lets go", async () => {
    const dir = makeTempDir();
    const { server, state } = streamingServer(join(dir.path, "d.sock"));
    try {
      await once(server, "listening");
      const client = await RpcClient.connect(join(dir.path, "d.sock"));
      let received = 0;
      let letGo: () => void = () => {};
      const held = new Promise<void>((resolve) => {
        letGo = resolve;
      });
      const result = client.call("vm.cp.out", { name: "x", path: "/" } as never, {
        onStream: (_ch, data) => {
          if (!data) return;
          received += 1;
          return received === 1 ? held : undefined;
        },
      });
      while (!state.blocked) await sleep(10);
      // Had the client kept reading, the server would drain and send the rest within this wait.
      await sleep(400);
      assert.ok(state.blocked, "the server was never made to wait");
      assert.ok(state.sent < TOTAL_CHUNKS / 4, `the server got ${state.sent} of ${TOTAL_CHUNKS} chunks out`);
      const receivedWhileHeld = received;
      assert.ok(
        receivedWhileHeld < TOTAL_CHUNKS / 4,
        `the client took ${receivedWhileHeld} chunks while held`,
      );
      letGo();
      assert.deepEqual(await result, { done: true });
      assert.equal(received, TOTAL_CHUNKS);
      client.close();
    } finally {
      state.socket?.destroy();
      server.close();
      dir.cleanup();
    }
  });

  it("a cancel lifts the stall and drops the call's later bytes, so the reply still arrives", async () => {
    const dir = makeTempDir();
    const { server, state } = streamingServer(join(dir.path, "d.sock"));
    try {
      await once(server, "listening");
      const client = await RpcClient.connect(join(dir.path, "d.sock"));
      const abort = new AbortController();
      let received = 0;
      const result = client.call("vm.cp.out", { name: "x", path: "/" } as never, {
        signal: abort.signal,
        onStream: (_ch, data) => {
          if (!data) return;
          received += 1;
          return received === 1 ? new Promise<void>(() => {}) : undefined;
        },
      });
      while (!state.blocked) await sleep(10);
      abort.abort();
      assert.deepEqual(await result, { done: true });
      assert.equal(received, 1, "what arrives after the cancel is dropped, not delivered");
      client.close();
    } finally {
      state.socket?.destroy();
      server.close();
      dir.cleanup();
    }
  });
});
