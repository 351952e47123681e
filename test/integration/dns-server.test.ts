/**
 * The DNS listeners (src/sys/dns) with the daemon's DNS feature on loopback,
 * real UDP and TCP sockets: VM names are answered on the synchronous fast
 * path, everything else through `handle`; a fast path that throws, hostile
 * datagrams and oversize TCP lengths leave the server answering.
 */
import assert from "node:assert/strict";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { silentLogger } from "../../src/core/log/index.ts";
import {
  createDnsCache,
  createDnsFrameReader,
  frameDnsMessage,
  parseSubnet,
} from "../../src/core/network/index.ts";
import { createDnsFeature } from "../../src/daemon/network/dns.ts";
import { type DnsServerOptions, startDnsServer } from "../../src/sys/dns/index.ts";
import { freePort } from "../helpers/free-port.ts";

function query(name: string, id: number, type: "A" | "AAAA" = "A"): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
  });
}

/** Replies in arrival order; `next` waits for one, or gives undefined after `ms` or once `ended`. */
function replyQueue(ended: () => boolean = () => false) {
  const replies: Buffer[] = [];
  let wake: (() => void) | undefined;
  return {
    push(...messages: Buffer[]) {
      replies.push(...messages);
      wake?.();
    },
    async next(ms = 2000): Promise<Buffer | undefined> {
      if (replies.length === 0 && !ended()) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, ms);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      wake = undefined;
      return replies.shift();
    },
  };
}

/** Sends datagrams from one socket; `next` waits for the next reply, or undefined after `ms`. */
function udpClient(port: number) {
  const socket: UdpSocket = createSocket("udp4");
  const replies = replyQueue();
  socket.on("message", (message: Buffer) => replies.push(message));
  return {
    send: (message: Buffer) => socket.send(message, port, "127.0.0.1"),
    next: replies.next,
    close: () => socket.close(),
  };
}

/** The daemon's DNS feature on 127.0.0.1:port with one VM, `web` at 10.77.0.2; counts what reached `handle`. */
async function startFeature(port: number, options: { failFastPath?: boolean } = {}) {
  const slow: string[] = [];
  const dns = createDnsFeature({
    domain: "vm",
    subnet: parseSubnet("10.77.0.0/24"),
    port,
    ensureBridge: async () => undefined,
    startServer: (server: DnsServerOptions) =>
      startDnsServer({
        ...server,
        listen: [{ host: "127.0.0.1", port }],
        answerNow: options.failFastPath
          ? () => {
              throw new Error("fast path broken on purpose");
            }
          : (message, address) => server.answerNow?.(message, address),
        handle: (message, client) => {
          slow.push(client.transport);
          return server.handle(message, client);
        },
      }),
    upstream: { forward: async () => undefined },
    cache: createDnsCache({ maxEntries: 10, maxTtlSeconds: 60, nowMs: () => 0 }),
    records: () => [{ name: "web", ip: "10.77.0.2" }],
    routeHost: async () => ({ ok: false, detail: "not in this test" }),
    isLocalAddress: () => false,
    anyVm: () => true,
    settings: { policyOf: () => undefined },
    allowEgress: async () => undefined,
    logger: silentLogger,
  });
  await dns.up(new AbortController().signal);
  assert.deepEqual(dns.listening, [`127.0.0.1:${port}`]);
  return { dns, slow };
}

const answerOf = (reply: Buffer | undefined) => {
  assert.ok(reply, "an answer came back");
  const packet = dnsPacket.decode(reply);
  return {
    id: packet.id,
    rcode: (packet.flags ?? 0) & 0xf,
    data: (packet.answers ?? []).map((answer) => ("data" in answer ? String(answer.data) : "")),
  };
};

/** A TCP connection to the server; `next` waits for the next whole answer, or undefined after `ms` or a close. */
async function tcpClient(port: number) {
  const socket: Socket = connect({ host: "127.0.0.1", port });
  await once(socket, "connect");
  const reader = createDnsFrameReader();
  let closed = false;
  const replies = replyQueue(() => closed);
  socket.on("data", (chunk: Buffer) => replies.push(...reader.push(chunk).messages));
  socket.on("error", () => undefined);
  socket.on("close", () => {
    closed = true;
    replies.push();
  });
  return {
    socket,
    get closed() {
      return closed;
    },
    write: (bytes: Buffer) => new Promise<void>((resolve) => socket.write(bytes, () => resolve())),
    next: replies.next,
    close: () => socket.destroy(),
  };
}

describe("DNS listeners", () => {
  it("answers VM names over UDP without `handle`, everything else through it", async () => {
    const port = await freePort();
    const { dns, slow } = await startFeature(port);
    const client = udpClient(port);
    try {
      for (const [id, name] of [
        [1, "web.vm"],
        [2, "WEB.Vm"],
      ] as const) {
        client.send(query(name, id));
        assert.deepEqual(answerOf(await client.next()), { id, rcode: 0, data: ["10.77.0.2"] });
      }
      assert.deepEqual(slow, [], "VM names never reached the full path");
      client.send(query("nope.vm", 3));
      assert.deepEqual(answerOf(await client.next()), { id: 3, rcode: 3, data: [] });
      client.send(query("web.vm", 4, "AAAA"));
      assert.deepEqual(answerOf(await client.next()), { id: 4, rcode: 0, data: [] });
      client.send(query("example.com", 5));
      assert.deepEqual(answerOf(await client.next()), { id: 5, rcode: 2, data: [] }, "SERVFAIL: no upstream");
      assert.deepEqual(slow, ["udp", "udp", "udp"]);
    } finally {
      client.close();
      await dns.teardown();
    }
  });

  it("drops or FORMERRs hostile datagrams and keeps answering", async () => {
    const port = await freePort();
    const { dns } = await startFeature(port);
    const client = udpClient(port);
    try {
      const valid = query("web.vm", 9);
      const header = valid.subarray(0, 12);
      for (const hostile of [
        Buffer.alloc(3), // no header: dropped
        Buffer.concat([header, Buffer.from([0xc0, 12, 0, 1, 0, 1])]), // compression loop
        Buffer.concat([header, Buffer.from([63, 1, 2])]), // label past the end
        Buffer.from([0xbe, 0xef, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // huge counts
      ]) {
        client.send(hostile);
      }
      const rcodes: number[] = [];
      for (let reply = await client.next(500); reply !== undefined; reply = await client.next(500)) {
        rcodes.push(reply.readUInt16BE(2) & 0xf);
      }
      assert.deepEqual(rcodes, [1, 1, 1], "three FORMERRs, the headerless datagram dropped");
      client.send(valid);
      assert.deepEqual(answerOf(await client.next()), { id: 9, rcode: 0, data: ["10.77.0.2"] });
    } finally {
      client.close();
      await dns.teardown();
    }
  });

  it("falls back to `handle` when the fast path throws", async () => {
    const port = await freePort();
    const { dns, slow } = await startFeature(port, { failFastPath: true });
    const client = udpClient(port);
    try {
      client.send(query("web.vm", 11));
      assert.deepEqual(answerOf(await client.next()), { id: 11, rcode: 0, data: ["10.77.0.2"] });
      assert.deepEqual(slow, ["udp"]);
    } finally {
      client.close();
      await dns.teardown();
    }
  });

  it("answers over TCP and closes a connection that sends a zero length", async () => {
    const port = await freePort();
    const { dns } = await startFeature(port);
    try {
      const socket = connect({ host: "127.0.0.1", port });
      await once(socket, "connect");
      const message = query("web.vm", 21);
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(message.length);
      socket.write(Buffer.concat([prefix, message]));
      const [chunk] = (await once(socket, "data")) as [Buffer];
      assert.equal(chunk.readUInt16BE(0), chunk.length - 2);
      assert.deepEqual(answerOf(chunk.subarray(2)), { id: 21, rcode: 0, data: ["10.77.0.2"] });
      socket.write(Buffer.from([0, 0]));
      await once(socket, "close");
      const client = udpClient(port);
      client.send(query("web.vm", 22));
      assert.equal(answerOf(await client.next()).id, 22, "the server still answers");
      client.close();
    } finally {
      await dns.teardown();
    }
  });

  it("over TCP: answers VM names without `handle`, from frames cut anywhere or pipelined, in order", async () => {
    const port = await freePort();
    const { dns, slow } = await startFeature(port);
    const client = await tcpClient(port);
    try {
      for (const byte of frameDnsMessage(query("web.vm", 31))) await client.write(Buffer.from([byte]));
      assert.deepEqual(answerOf(await client.next()), { id: 31, rcode: 0, data: ["10.77.0.2"] });
      assert.deepEqual(slow, [], "the fast path answered over TCP");
      await client.write(
        Buffer.concat(
          [query("web.vm", 32), query("example.com", 33), query("WEB.vm", 34)].map(frameDnsMessage),
        ),
      );
      const answers = [await client.next(), await client.next(), await client.next()].map(answerOf);
      assert.deepEqual(answers, [
        { id: 32, rcode: 0, data: ["10.77.0.2"] },
        { id: 33, rcode: 2, data: [] },
        { id: 34, rcode: 0, data: ["10.77.0.2"] },
      ]);
      assert.deepEqual(slow, ["tcp", "tcp"], "behind a waiting answer, a VM name waits its turn");
    } finally {
      client.close();
      await dns.teardown();
    }
  });

  it("over TCP: survives short frames, the largest lengths, half-sent frames and garbage, and keeps answering", async () => {
    const port = await freePort();
    const { dns } = await startFeature(port);
    const clients: Awaited<ReturnType<typeof tcpClient>>[] = [];
    try {
      const short = await tcpClient(port);
      clients.push(short);
      await short.write(frameDnsMessage(Buffer.from([1, 2, 3, 4, 5])));
      await short.write(frameDnsMessage(query("web.vm", 41)));
      assert.equal(
        answerOf(await short.next()).id,
        41,
        "a headerless frame is dropped, the connection serves on",
      );

      const huge = await tcpClient(port);
      clients.push(huge);
      await huge.write(frameDnsMessage(Buffer.alloc(65_535, 1)));
      assert.deepEqual(answerOf(await huge.next()), { id: 0x0101, rcode: 1, data: [] }, "FORMERR");

      const halfSent = await tcpClient(port);
      clients.push(halfSent);
      await halfSent.write(Buffer.concat([Buffer.from([0xff, 0xff]), Buffer.alloc(1000, 7)]));
      halfSent.close();

      let seed = 7;
      const random = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return Math.floor((seed / 2 ** 31) * 256);
      };
      for (let round = 0; round < 20; round++) {
        const garbage = await tcpClient(port);
        clients.push(garbage);
        await garbage.write(Buffer.from(Array.from({ length: 2000 }, random)));
        garbage.close();
      }

      const zero = await tcpClient(port);
      clients.push(zero);
      await zero.write(Buffer.concat([frameDnsMessage(query("web.vm", 42)), Buffer.from([0, 0])]));
      assert.equal(answerOf(await zero.next()).id, 42);
      assert.equal(await zero.next(), undefined);
      assert.ok(zero.closed, "a zero length ends the connection, after the answer to what came before");

      const fresh = await tcpClient(port);
      clients.push(fresh);
      await fresh.write(frameDnsMessage(query("web.vm", 43)));
      assert.deepEqual(answerOf(await fresh.next()), { id: 43, rcode: 0, data: ["10.77.0.2"] });
      const udp = udpClient(port);
      udp.send(query("web.vm", 44));
      assert.equal(answerOf(await udp.next()).id, 44, "UDP still answers");
      udp.close();
    } finally {
      for (const client of clients) client.close();
      await dns.teardown();
    }
  });
});
