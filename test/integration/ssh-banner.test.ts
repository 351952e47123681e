/** waitForSshBanner and openTcp against real sockets on the host's loopback. */
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { ErrorCode } from "../../src/protocol/index.ts";
import { openTcp, waitForSshBanner } from "../../src/sys/ssh/index.ts";
import { rejectsWithCode } from "../helpers/assert.ts";

const servers: Server[] = [];

/**
 * A loopback server; its sockets ignore errors, because the prober closes
 * with the server's reply still unread and the kernel then resets the
 * connection, which is not what these tests are about.
 */
async function listen(onConnection: (socket: Socket) => void): Promise<number> {
  const server = createServer((socket) => {
    socket.on("error", () => undefined);
    onConnection(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

/** A loopback port nothing listens on (bound once, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

after(async () => {
  for (const server of servers) await new Promise((resolve) => server.close(resolve));
});

describe("waitForSshBanner", () => {
  it("retries until the server speaks SSH", async () => {
    let connections = 0;
    const port = await listen((socket) => {
      connections += 1;
      if (connections <= 2) socket.destroy();
      else socket.end("SSH-2.0-OpenSSH_9.2p1\r\n");
    });
    await waitForSshBanner({
      host: "127.0.0.1",
      port,
      deadlineMs: 20_000,
      intervalMs: 10,
      stillAlive: async () => true,
    });
    assert.equal(connections, 3);
  });

  it("gives up at once when the VM is no longer alive", async () => {
    let asked = 0;
    await rejectsWithCode(
      waitForSshBanner({
        host: "127.0.0.1",
        port: await closedPort(),
        deadlineMs: 60_000,
        stillAlive: async () => ++asked < 3,
      }),
      ErrorCode.BOOT_FAILED,
      /VM stopped before sshd on 127\.0\.0\.1:\d+ answered/,
    );
    assert.equal(asked, 3);
  });

  it("fails at the deadline, saying how long it waited, when the server never sends SSH-", async () => {
    const port = await listen((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n"));
    await rejectsWithCode(
      waitForSshBanner({
        host: "127.0.0.1",
        port,
        deadlineMs: 300,
        intervalMs: 20,
        stillAlive: async () => true,
      }),
      ErrorCode.BOOT_FAILED,
      /did not answer within \d+\.\d s \(last: unexpected banner 'HTTP'\)/,
    );
  });

  it("stops with CANCELLED when aborted", async () => {
    const controller = new AbortController();
    const waiting = waitForSshBanner({
      host: "127.0.0.1",
      port: await closedPort(),
      deadlineMs: 60_000,
      signal: controller.signal,
      stillAlive: async () => {
        controller.abort();
        return true;
      },
    });
    await rejectsWithCode(waiting, ErrorCode.CANCELLED);
  });
});

describe("openTcp", () => {
  it("returns a connected socket", async () => {
    const port = await listen((socket) => socket.pipe(socket));
    const socket = await openTcp("127.0.0.1", port);
    const echoed = new Promise<string>((resolve) => socket.once("data", (chunk) => resolve(String(chunk))));
    socket.write("ping");
    assert.equal(await echoed, "ping");
    socket.destroy();
  });

  it("reports a refused port as GUEST_UNREACHABLE naming it", async () => {
    const port = await closedPort();
    await rejectsWithCode(
      openTcp("127.0.0.1", port),
      ErrorCode.GUEST_UNREACHABLE,
      new RegExp(`127\\.0\\.0\\.1:${port}: ECONNREFUSED`),
    );
  });

  it("rejects with CANCELLED for an aborted signal", async () => {
    await rejectsWithCode(openTcp("127.0.0.1", 1, AbortSignal.abort()), ErrorCode.CANCELLED);
  });
});
