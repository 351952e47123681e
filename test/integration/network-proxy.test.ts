/**
 * Published-port relays on loopback (no guest needed): TCP carries 10 MB
 * both ways with half-close, UDP answers come back to their sender, a busy
 * host port is a clear error naming it, and close ends live connections.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { startPortProxy } from "../../src/sys/network/index.ts";
import { freePort } from "../helpers/free-port.ts";

describe("published-port relays", () => {
  it("relays 10 MB both ways over TCP, passing the half-close on", async () => {
    const echo = createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    const target = (echo.address() as AddressInfo).port;
    const port = await freePort();
    const proxy = await startPortProxy({
      protocol: "tcp",
      listen: { host: "127.0.0.1", port },
      target: { host: "127.0.0.1", port: target },
      logger: silentLogger,
    });
    try {
      const payload = Buffer.alloc(10 * 1024 * 1024, 7);
      for (let i = 0; i < payload.length; i += 4099) payload[i] = i % 251;
      const socket = connect({ host: "127.0.0.1", port });
      const hash = createHash("sha256");
      let received = 0;
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length;
        hash.update(chunk);
      });
      socket.end(payload);
      await once(socket, "close");
      assert.equal(received, payload.length);
      assert.equal(hash.digest("hex"), createHash("sha256").update(payload).digest("hex"));
    } finally {
      await proxy.close();
      await new Promise((resolve) => echo.close(resolve));
    }
  });

  /**
   * The guest sends `payload` (random bytes, so a read buffer reused while a
   * write still points into it would show) as `send` says; the client reads
   * nothing for half a second, then a little at a time. Resolves with what
   * arrived, or rejects when nothing moved for 10 s (a stalled relay).
   */
  async function toSlowClient(payload: Buffer, send: (socket: Socket) => void) {
    const guest = createServer(send);
    await new Promise<void>((resolve) => guest.listen(0, "127.0.0.1", resolve));
    const port = await freePort();
    const proxy = await startPortProxy({
      protocol: "tcp",
      listen: { host: "127.0.0.1", port },
      target: { host: "127.0.0.1", port: (guest.address() as AddressInfo).port },
      logger: silentLogger,
    });
    try {
      const socket = connect({ host: "127.0.0.1", port });
      socket.pause();
      await new Promise((resolve) => setTimeout(resolve, 500)); // the relay's writes to us queue up
      const hash = createHash("sha256");
      let received = 0;
      let lastSeen = -1;
      const stalled = setInterval(() => {
        if (received === lastSeen) socket.destroy(new Error(`stalled after ${received} bytes`));
        lastSeen = received;
      }, 10_000);
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length;
        hash.update(chunk);
        socket.pause(); // and again, a little at a time
        setImmediate(() => socket.resume());
      });
      socket.resume();
      try {
        await once(socket, "close");
      } finally {
        clearInterval(stalled);
      }
      return { received, same: hash.digest("hex") === createHash("sha256").update(payload).digest("hex") };
    } finally {
      await proxy.close();
      await new Promise((resolve) => guest.close(resolve));
    }
  }

  it("hands a client that reads slowly the guest's bytes intact and in order", async () => {
    const payload = randomBytes(24 * 1024 * 1024);
    assert.deepEqual(await toSlowClient(payload, (socket) => socket.end(payload)), {
      received: payload.length,
      same: true,
    });
  });

  it("keeps relaying to a slow client when the guest sends in small pieces", async () => {
    // Small reads make small queued writes, which never emit 'drain'.
    const payload = randomBytes(4 * 1024 * 1024);
    const sendInPieces = (socket: Socket) => {
      let offset = 0;
      const next = () => {
        if (offset >= payload.length) return void socket.end();
        socket.write(payload.subarray(offset, offset + 1500), () => setImmediate(next));
        offset += 1500;
      };
      next();
    };
    assert.deepEqual(await toSlowClient(payload, sendInPieces), { received: payload.length, same: true });
  });

  it("relays UDP datagrams and sends each answer back to its sender", async () => {
    const echo = createSocket("udp4");
    echo.on("message", (message, remote) =>
      echo.send(Buffer.concat([Buffer.from("re:"), message]), remote.port, remote.address),
    );
    await new Promise<void>((resolve) => echo.bind(0, "127.0.0.1", resolve));
    const port = await freePort();
    const proxy = await startPortProxy({
      protocol: "udp",
      listen: { host: "127.0.0.1", port },
      target: { host: "127.0.0.1", port: echo.address().port },
      logger: silentLogger,
    });
    try {
      for (const word of ["one", "two"]) {
        const client = createSocket("udp4");
        const reply = once(client, "message");
        client.send(word, port, "127.0.0.1");
        const [message] = (await reply) as [Buffer];
        assert.equal(message.toString(), `re:${word}`);
        client.close();
      }
    } finally {
      await proxy.close();
      echo.close();
    }
  });

  it("names a busy host port, and close ends live connections", async () => {
    const target = createServer((socket) => socket.on("error", () => undefined));
    await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
    const port = await freePort();
    const options = {
      protocol: "tcp" as const,
      listen: { host: "127.0.0.1", port },
      target: { host: "127.0.0.1", port: (target.address() as AddressInfo).port },
      logger: silentLogger,
    };
    const proxy = await startPortProxy(options);
    await assert.rejects(
      startPortProxy(options),
      (error: unknown) =>
        error instanceof BangerError &&
        error.code === ErrorCode.NETWORK_FAILED &&
        error.message === `host port 127.0.0.1:${port}/tcp is in use` &&
        error.hint !== undefined,
    );
    const socket = connect({ host: "127.0.0.1", port });
    await once(socket, "connect");
    const closed = once(socket, "close");
    await proxy.close();
    await closed;
    await new Promise((resolve) => target.close(resolve));
  });
});
