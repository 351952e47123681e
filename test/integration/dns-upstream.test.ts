/**
 * The forwarder to the upstream resolvers (src/sys/dns/upstream.ts) against
 * small DNS servers on loopback addresses: a silent server is given its
 * timeout and the next one asked; a reply under another id (a spoof) is
 * ignored; the client's id comes back; a truncated UDP answer to a TCP
 * asker is fetched again over TCP; no answer at all is undefined (the
 * caller's SERVFAIL).
 */
import assert from "node:assert/strict";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server } from "node:net";
import { after, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { createDnsFrameReader, frameDnsMessage } from "../../src/core/network/index.ts";
import { createUpstream } from "../../src/sys/dns/index.ts";
import { freePort } from "../helpers/free-port.ts";

const SILENT = "127.0.0.2";
const ANSWERING = "127.0.0.3";

function query(id: number): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name: "www.example.test" }],
  });
}

function answer(message: Buffer, options: { id?: number; truncated?: boolean; data?: string } = {}): Buffer {
  const packet = dnsPacket.decode(message);
  return dnsPacket.encode({
    type: "response",
    id: options.id ?? packet.id ?? 0,
    flags: dnsPacket.RECURSION_AVAILABLE | (options.truncated ? dnsPacket.TRUNCATED_RESPONSE : 0),
    questions: packet.questions ?? [],
    answers: options.truncated
      ? []
      : [{ type: "A", name: "www.example.test", ttl: 60, data: options.data ?? "198.51.100.1" }],
  });
}

describe("the upstream forwarder", async () => {
  const port = await freePort();
  const sockets: UdpSocket[] = [];
  const servers: Server[] = [];
  const udp = (host: string, onQuery: (message: Buffer, reply: (bytes: Buffer) => void) => void) =>
    new Promise<void>((resolve) => {
      const socket = createSocket("udp4");
      sockets.push(socket);
      socket.on("message", (message, remote) =>
        onQuery(message, (bytes) => socket.send(bytes, remote.port, remote.address)),
      );
      socket.bind(port, host, () => resolve());
    });
  let truncate = false;
  await udp(SILENT, () => undefined);
  await udp(ANSWERING, (message, reply) => {
    const id = message.readUInt16BE(0);
    reply(answer(message, { id: (id + 1) % 65_536, data: "203.0.113.66" })); // a spoof: wrong id
    reply(answer(message, { truncated: truncate }));
  });
  await new Promise<void>((resolve) => {
    const server = createServer((socket) => {
      const frames = createDnsFrameReader();
      socket.on("data", (chunk: Buffer) => {
        for (const message of frames.push(chunk).messages)
          socket.write(frameDnsMessage(answer(message, { data: "198.51.100.2" })));
      });
    });
    servers.push(server);
    server.listen(port, ANSWERING, () => resolve());
  });
  after(() => {
    for (const socket of sockets) socket.close();
    for (const server of servers) server.close();
  });

  const forward = (list: string[], transport: "udp" | "tcp" = "udp") =>
    createUpstream({ servers: () => list, timeoutMs: 300, port }).forward(query(4242), transport);
  const addresses = (reply: Buffer | undefined) => {
    assert.ok(reply, "an answer");
    const packet = dnsPacket.decode(reply);
    return {
      id: packet.id,
      data: (packet.answers ?? []).map((record) => ("data" in record ? String(record.data) : "")),
    };
  };

  it("asks the next server after one's timeout, ignores replies under another id, and restores the client's id", async () => {
    assert.deepEqual(addresses(await forward([SILENT, ANSWERING])), { id: 4242, data: ["198.51.100.1"] });
  });

  it("fetches a truncated answer again over TCP for a TCP asker, and keeps it for a UDP one", async () => {
    truncate = true;
    try {
      assert.deepEqual(addresses(await forward([ANSWERING], "tcp")), { id: 4242, data: ["198.51.100.2"] });
      const udpReply = await forward([ANSWERING], "udp");
      assert.ok(
        udpReply && (udpReply.readUInt16BE(2) & 0x0200) !== 0,
        "TC set, for the asker to retry over TCP",
      );
    } finally {
      truncate = false;
    }
  });

  it("gives undefined when no server answers, or there is none", async () => {
    assert.equal(await forward([SILENT]), undefined);
    assert.equal(await forward([]), undefined);
  });
});
