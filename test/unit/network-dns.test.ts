import assert from "node:assert/strict";
import { describe, it } from "node:test";
import dnsPacket, { type Packet } from "dns-packet";
import { silentLogger } from "../../src/core/log/index.ts";
import {
  answerQuery,
  buildZone,
  checkQuery,
  createDnsCache,
  createDnsFrameReader,
  fastZoneAnswer,
  frameDnsMessage,
  parseEgressPolicy,
  parseResolvConf,
  parseSubnet,
} from "../../src/core/network/index.ts";
import { createDnsFeature } from "../../src/daemon/network/dns.ts";

const subnet = parseSubnet("10.77.0.0/24");
const zone = buildZone({
  domain: "vm",
  subnet,
  records: [
    { name: "web", ip: "10.77.0.2" },
    { name: "db", ip: "10.77.0.3" },
  ],
});

function query(name: string, type: "A" | "AAAA" | "PTR" | "SOA" | "MX" = "A", id = 42): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: "IN" }],
  });
}

function ask(
  name: string,
  type?: "A" | "AAAA" | "PTR" | "SOA" | "MX",
  egress?: ReturnType<typeof parseEgressPolicy>,
) {
  const check = checkQuery(query(name, type));
  assert.ok(check.ok);
  const decision = answerQuery({ zone, packet: check.packet, question: check.question, egress });
  return decision.kind === "answer" ? dnsPacket.decode(decision.reply) : undefined;
}

const rcode = (packet: Packet) => (packet.flags ?? 0) & 0xf;

describe("DNS answers from a zone snapshot", () => {
  it("answers A for a VM name, case-insensitively, authoritatively", () => {
    const reply = ask("WEB.vm");
    assert.ok(reply);
    assert.equal(rcode(reply), 0);
    assert.ok(((reply.flags ?? 0) & dnsPacket.AUTHORITATIVE_ANSWER) !== 0);
    assert.deepEqual(
      reply.answers?.map((answer) => [answer.type, "data" in answer ? answer.data : undefined]),
      [["A", "10.77.0.2"]],
    );
    assert.equal(reply.id, 42);
  });

  it("answers NXDOMAIN with the SOA for an unknown name, NODATA for another type of a known one", () => {
    const missing = ask("nope.vm");
    assert.equal(missing && rcode(missing), 3);
    assert.equal(missing?.authorities?.[0]?.type, "SOA");
    const aaaa = ask("web.vm", "AAAA");
    assert.equal(aaaa && rcode(aaaa), 0);
    assert.equal(aaaa?.answers?.length, 0);
    assert.equal(ask("vm", "SOA")?.answers?.[0]?.type, "SOA");
  });

  it("answers PTR for VM addresses and NXDOMAIN for other addresses of the subnet", () => {
    const ptr = ask("3.0.77.10.in-addr.arpa", "PTR");
    assert.deepEqual(
      ptr?.answers?.map((answer) => ("data" in answer ? answer.data : undefined)),
      ["db.vm"],
    );
    const free = ask("9.0.77.10.in-addr.arpa", "PTR");
    assert.equal(free && rcode(free), 3);
    assert.equal(ask("7.100.51.198.in-addr.arpa", "PTR"), undefined, "other reverse names are forwarded");
  });

  it("forwards other names, unless the asking VM's egress list or deny does not allow them", () => {
    assert.equal(ask("example.com"), undefined);
    const policy = parseEgressPolicy("*.debian.org");
    assert.equal(ask("deb.debian.org", "A", policy), undefined);
    const blocked = ask("example.com", "A", policy);
    assert.equal(blocked && rcode(blocked), 3);
    assert.ok(ask("web.vm", "A", policy)?.answers?.length, "the vm zone is always answered");
    const deny = parseEgressPolicy("deny");
    const denied = ask("deb.debian.org", "A", deny);
    assert.equal(denied && rcode(denied), 3, "deny: no name goes upstream");
    assert.ok(ask("web.vm", "A", deny)?.answers?.length);
    assert.equal(ask("deb.debian.org", "A", parseEgressPolicy("allow")), undefined);
  });
});

describe("the fast path for VM names", () => {
  it("answers a plain A query for a VM name exactly as the full path does", () => {
    const message = query("Web.VM", "A", 77);
    const fast = fastZoneAnswer(zone, message);
    assert.ok(fast);
    const check = checkQuery(message);
    assert.ok(check.ok);
    const slow = answerQuery({ zone, packet: check.packet, question: check.question });
    assert.equal(slow.kind, "answer");
    const [a, b] = [
      dnsPacket.decode(fast),
      dnsPacket.decode(slow.kind === "answer" ? slow.reply : Buffer.alloc(0)),
    ];
    assert.deepEqual([a.id, a.flags, a.questions, a.answers], [b.id, b.flags, b.questions, b.answers]);
  });

  it("leaves everything else to the full path", () => {
    assert.equal(fastZoneAnswer(zone, query("nope.vm")), undefined);
    assert.equal(fastZoneAnswer(zone, query("web.vm", "AAAA")), undefined);
    assert.equal(fastZoneAnswer(zone, query("example.com")), undefined);
    const withOpt = dnsPacket.encode({
      type: "query",
      id: 1,
      questions: [{ type: "A", name: "web.vm" }],
      additionals: [
        {
          type: "OPT",
          name: ".",
          udpPayloadSize: 4096,
          extendedRcode: 0,
          ednsVersion: 0,
          flags: 0,
          flag_do: false,
          options: [],
        },
      ],
    });
    assert.equal(fastZoneAnswer(zone, withOpt), undefined);
    assert.equal(
      fastZoneAnswer(
        zone,
        Buffer.concat([query("web.vm").subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
      ),
      undefined,
    );
    assert.equal(fastZoneAnswer(zone, query("web.vm").subarray(0, 20)), undefined);
    const plain = query("web.vm");
    const oneLabel = Buffer.concat([
      plain.subarray(0, 12),
      Buffer.from("\x06web.vm\x00", "latin1"),
      plain.subarray(-4),
    ]);
    assert.equal(fastZoneAnswer(zone, oneLabel), undefined, "one label holding a dot is not web.vm");
    const classChaos = Buffer.from(plain);
    classChaos.writeUInt16BE(3, classChaos.length - 2);
    assert.equal(fastZoneAnswer(zone, classChaos), undefined);
  });

  it("answers names of a domain with several labels", () => {
    const deep = buildZone({
      domain: "Banger.Internal",
      subnet,
      records: [{ name: "web", ip: "10.77.0.2" }],
    });
    const fast = fastZoneAnswer(deep, query("web.banger.internal", "A", 5));
    assert.ok(fast);
    const answer = dnsPacket.decode(fast).answers?.[0];
    assert.deepEqual(
      [answer?.name, answer?.type, answer && "data" in answer ? answer.data : ""],
      ["web.banger.internal", "A", "10.77.0.2"],
    );
  });
});

describe("hostile DNS messages", () => {
  const header = (counts: [number, number, number, number], flags = 0x0100) => {
    const buffer = Buffer.alloc(12);
    buffer.writeUInt16BE(0xbeef, 0);
    buffer.writeUInt16BE(flags, 2);
    for (const [index, count] of counts.entries()) buffer.writeUInt16BE(count, 4 + index * 2);
    return buffer;
  };
  const formerr = (message: Buffer) => {
    const check = checkQuery(message);
    assert.equal(check.ok, false);
    assert.ok(!check.ok && check.reply, "a reply is sent");
    const reply = check.reply as Buffer;
    assert.equal(reply.readUInt16BE(0), message.readUInt16BE(0), "under the query's id");
    assert.equal(reply.readUInt16BE(2) & 0xf, 1, "FORMERR");
    assert.ok((reply.readUInt16BE(2) & 0x8000) !== 0, "marked as a response");
  };

  it("drops what has no header and never answers a response", () => {
    assert.deepEqual(checkQuery(Buffer.alloc(5)), { ok: false, reply: undefined });
    assert.deepEqual(checkQuery(header([1, 0, 0, 0], 0x8100)), { ok: false, reply: undefined });
  });

  it("answers FORMERR to truncated questions, compression loops, huge counts and oversize messages", () => {
    formerr(header([1, 0, 0, 0])); // no question bytes
    formerr(Buffer.concat([header([1, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])])); // pointer to itself
    formerr(Buffer.concat([header([1, 0, 0, 0]), Buffer.from([0xc0, 14, 0xc0, 12, 0, 1, 0, 1])])); // two-step loop
    formerr(Buffer.concat([header([1, 0, 0, 0]), Buffer.from([63, 1, 2])])); // label past the end
    formerr(header([65535, 65535, 65535, 65535]));
    formerr(Buffer.concat([header([2, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1, 0, 0, 1, 0, 1])]));
    formerr(Buffer.concat([query("web.vm").subarray(0, 12), Buffer.alloc(70_000)]));
  });

  it("refuses opcodes other than QUERY", () => {
    const check = checkQuery(header([1, 0, 0, 0], 0x2800)); // UPDATE
    assert.ok(!check.ok && check.reply);
    assert.equal((check.reply as Buffer).readUInt16BE(2) & 0xf, 5);
  });

  it("fuzz: random bytes and random cuts of a valid query never throw", () => {
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const valid = query("web.vm");
    for (let round = 0; round < 2000; round++) {
      const message = Buffer.from(valid.subarray(0, Math.floor(random() * (valid.length + 1))));
      for (let flip = 0; flip < 3 && message.length > 0; flip++) {
        message[Math.floor(random() * message.length)] = Math.floor(random() * 256);
      }
      const check = checkQuery(message);
      if (check.ok) answerQuery({ zone, packet: check.packet, question: check.question });
      fastZoneAnswer(zone, message);
    }
  });
});

describe("DNS over TCP framing", () => {
  const messages = [query("web.vm", "A", 1), query("db.vm", "AAAA", 2), Buffer.alloc(300, 7)];
  const stream = Buffer.concat(messages.map(frameDnsMessage));

  it("cuts whole messages out of a stream split at every possible place", () => {
    for (let first = 0; first <= stream.length; first++) {
      for (const second of [first, Math.min(stream.length, first + 1), Math.min(stream.length, first + 37)]) {
        const reader = createDnsFrameReader();
        const out = [
          stream.subarray(0, first),
          stream.subarray(first, second),
          stream.subarray(second),
        ].flatMap((chunk) => reader.push(Buffer.from(chunk)).messages);
        assert.deepEqual(out, messages, `cut at ${first} and ${second}`);
      }
    }
  });

  it("reads pipelined messages from one chunk and a stream fed one byte at a time", () => {
    assert.deepEqual(createDnsFrameReader().push(stream), { messages, broken: false });
    const reader = createDnsFrameReader();
    const out: Buffer[] = [];
    for (const byte of stream) out.push(...reader.push(Buffer.from([byte])).messages);
    assert.deepEqual(out, messages);
  });

  it("holds a partial message of the largest length until it is whole, and breaks on a zero length", () => {
    const reader = createDnsFrameReader();
    const none = { messages: [], broken: false };
    assert.deepEqual(reader.push(Buffer.from([0xff, 0xff, 1, 2, 3])), none);
    assert.deepEqual(reader.push(Buffer.alloc(65_535 - 4, 9)), none);
    const [whole] = reader.push(Buffer.from([9])).messages;
    assert.equal(whole?.length, 65_535);
    assert.deepEqual(reader.push(Buffer.from([0])), none, "the second byte of a length is awaited");
    assert.deepEqual(
      reader.push(Buffer.from([0])),
      { messages: [], broken: true },
      "a zero length breaks the stream",
    );
    assert.deepEqual(reader.push(stream), { messages: [], broken: true }, "nothing is read after it");
    const before = createDnsFrameReader().push(Buffer.concat([stream, Buffer.from([0, 0]), stream]));
    assert.deepEqual(before, { messages, broken: true }, "what came before a zero length is kept");
  });

  it("frames a message with its length, cutting what no length can carry", () => {
    assert.deepEqual(frameDnsMessage(Buffer.from([1, 2, 3])), Buffer.from([0, 3, 1, 2, 3]));
    const framed = frameDnsMessage(Buffer.alloc(70_000));
    assert.equal(framed.readUInt16BE(0), 65_535);
    assert.equal(framed.length, 65_537);
  });

  it("fuzz: random streams never throw and never hold more than one message", () => {
    let seed = 99;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 300; round++) {
      const reader = createDnsFrameReader();
      for (let chunk = 0; chunk < 20; chunk++) {
        const bytes = Buffer.from(
          Array.from({ length: Math.floor(random() * 600) }, () => Math.floor(random() * 256)),
        );
        const { messages: out, broken } = reader.push(bytes);
        for (const message of out) assert.ok(message.length > 0 && message.length <= 65_535);
        if (broken) break;
      }
    }
  });
});

describe("DNS cache", () => {
  const response = (ttl: number, rcodeValue = 0): Packet => ({
    type: "response",
    id: 1,
    flags: rcodeValue,
    questions: [{ type: "A", name: "example.com", class: "IN" }],
    answers: rcodeValue === 0 ? [{ type: "A", name: "example.com", ttl, data: "198.51.100.7" }] : [],
  });
  const question = { type: "A" as const, name: "example.com", class: "IN" as const };
  const asker = (id: number): Packet => ({ type: "query", id, questions: [question] });

  it("serves the answer under the asker's id with the TTL that remains, until it expires", () => {
    let now = 0;
    const cache = createDnsCache({ maxEntries: 10, maxTtlSeconds: 3600, nowMs: () => now });
    cache.put(question, response(60));
    now = 20_500;
    const hit = dnsPacket.decode(cache.get(asker(7), { ...question, name: "EXAMPLE.com." }) as Buffer);
    assert.equal(hit.id, 7);
    assert.equal(hit.answers?.[0] && "ttl" in hit.answers[0] ? hit.answers[0].ttl : -1, 40);
    now = 60_000;
    assert.equal(cache.get(asker(8), question), undefined);
  });

  it("caps TTLs, skips SERVFAIL, and evicts the oldest entry when full", () => {
    let now = 0;
    const cache = createDnsCache({ maxEntries: 2, maxTtlSeconds: 10, nowMs: () => now });
    cache.put(question, response(86_400));
    now = 10_000;
    assert.equal(cache.get(asker(1), question), undefined, "capped at 10 s");
    cache.put(question, response(60, 2));
    assert.equal(cache.size, 0);
    for (const name of ["a.test", "b.test", "c.test"]) cache.put({ ...question, name }, response(60));
    assert.equal(cache.size, 2);
    assert.equal(cache.get(asker(1), { ...question, name: "a.test" }), undefined);
    assert.ok(cache.get(asker(1), { ...question, name: "c.test" }));
  });
});

describe("resolv.conf upstreams", () => {
  it("takes IPv4 nameservers in order, without banger's own addresses, at most three", () => {
    const text =
      "# x\nnameserver 10.77.0.1\nnameserver 198.51.100.53\nnameserver ::1\nsearch lan\nnameserver 203.0.113.53\nnameserver 198.51.100.53\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n";
    assert.deepEqual(parseResolvConf(text, new Set(["10.77.0.1"])), [
      "198.51.100.53",
      "203.0.113.53",
      "192.0.2.1",
    ]);
  });
});

describe("the DNS feature's query path", () => {
  const policies = (map: Record<string, ReturnType<typeof parseEgressPolicy>>) => ({
    policyOf: (ip: string) => map[ip],
  });
  const upstreamAnswer = (message: Buffer) =>
    dnsPacket.encode({
      type: "response",
      id: message.readUInt16BE(0),
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: dnsPacket.decode(message).questions ?? [],
      answers: [{ type: "A", name: "deb.debian.org", ttl: 120, data: "198.51.100.9" }],
    });

  function feature(options: {
    upstream?: (message: Buffer) => Buffer | undefined;
    map?: Record<string, ReturnType<typeof parseEgressPolicy>>;
    records?: () => { name: string; ip: string }[];
  }) {
    const forwarded: string[] = [];
    const allowed: string[] = [];
    const dns = createDnsFeature({
      domain: "vm",
      subnet,
      port: 53,
      ensureBridge: async () => undefined,
      startServer: async () => {
        throw new Error("not in unit tests");
      },
      upstream: {
        forward: async (message) => {
          forwarded.push(dnsPacket.decode(message).questions?.[0]?.name ?? "");
          return options.upstream?.(message);
        },
      },
      cache: createDnsCache({ maxEntries: 100, maxTtlSeconds: 600, nowMs: () => 0 }),
      records: options.records ?? (() => [{ name: "web", ip: "10.77.0.2" }]),
      routeHost: async () => ({ ok: false, detail: "not in unit tests" }),
      isLocalAddress: (address) => address === "192.0.2.9",
      anyVm: () => true,
      settings: policies(options.map ?? {}),
      allowEgress: async (source, addresses, ttl) =>
        void allowed.push(`${source}>${addresses.join(",")}@${ttl}`),
      logger: silentLogger,
    });
    return { dns, forwarded, allowed };
  }

  it("follows the VM list from the moment of each invalidation, on the fast path and the full one", async () => {
    let vms = [{ name: "web", ip: "10.77.0.2" }];
    let reads = 0;
    const { dns } = feature({
      records: () => {
        reads++;
        return vms;
      },
    });
    const asked = async (name: string, type: "A" | "PTR" = "A") => {
      const fast = type === "A" ? dns.answerNow(query(name, type), "10.77.0.9") : undefined;
      const reply = fast ?? (await dns.handle(query(name, type), { address: "10.77.0.9", transport: "udp" }));
      const packet = dnsPacket.decode(reply as Buffer);
      return {
        rcode: rcode(packet),
        data: (packet.answers ?? []).map((answer) => ("data" in answer ? String(answer.data) : "")),
      };
    };
    assert.deepEqual(await asked("web.vm"), { rcode: 0, data: ["10.77.0.2"] });
    for (let i = 0; i < 100; i++) dns.answerNow(query("web.vm"), "10.77.0.9");
    assert.equal(reads, 1, "answered names never read the VM list again");

    vms = [...vms, { name: "db", ip: "10.77.0.3" }];
    dns.invalidate(); // a create
    assert.deepEqual(await asked("db.vm"), { rcode: 0, data: ["10.77.0.3"] });
    assert.deepEqual(await asked("3.0.77.10.in-addr.arpa", "PTR"), { rcode: 0, data: ["db.vm"] });

    vms = vms.filter((vm) => vm.name !== "web");
    dns.invalidate(); // a delete
    assert.deepEqual(await asked("web.vm"), { rcode: 3, data: [] });
    assert.deepEqual(await asked("2.0.77.10.in-addr.arpa", "PTR"), { rcode: 3, data: [] });
  });

  it("refuses askers other than guests, loopback and this namespace's addresses", async () => {
    const { dns, forwarded } = feature({ upstream: upstreamAnswer });
    const reply = await dns.handle(query("example.com"), { address: "198.51.100.20", transport: "udp" });
    assert.equal((dnsPacket.decode(reply as Buffer).flags ?? 0) & 0xf, 5, "REFUSED");
    assert.deepEqual(forwarded, []);
    const local = await dns.handle(query("web.vm"), { address: "192.0.2.9", transport: "tcp" });
    assert.equal(
      (dnsPacket.decode(local as Buffer).flags ?? 0) & 0xf,
      0,
      "an address of this namespace is the host asking",
    );
  });

  it("answers SERVFAIL when no upstream answers, and caches what one did", async () => {
    const failing = feature({});
    const fail = dnsPacket.decode(
      (await failing.dns.handle(query("x.test"), { address: "10.77.0.2", transport: "udp" })) as Buffer,
    );
    assert.equal((fail.flags ?? 0) & 0xf, 2);
    const working = feature({ upstream: upstreamAnswer });
    for (const id of [1, 2]) {
      const reply = await working.dns.handle(query("deb.debian.org", "A", id), {
        address: "127.0.0.1",
        transport: "udp",
      });
      assert.equal(dnsPacket.decode(reply as Buffer).id, id);
    }
    assert.deepEqual(working.forwarded, ["deb.debian.org"], "the second answer came from the cache");
  });

  it("allows a list VM the addresses its allowed names resolved to, also from the cache", async () => {
    const { dns, allowed } = feature({
      upstream: upstreamAnswer,
      map: { "10.77.0.5": parseEgressPolicy("*.debian.org") },
    });
    await dns.handle(query("deb.debian.org"), { address: "10.77.0.5", transport: "udp" });
    await dns.handle(query("deb.debian.org"), { address: "10.77.0.5", transport: "tcp" });
    await dns.handle(query("deb.debian.org"), { address: "10.77.0.6", transport: "udp" });
    assert.deepEqual(allowed, ["10.77.0.5>198.51.100.9@120", "10.77.0.5>198.51.100.9@120"]);
    const denied = await dns.handle(query("example.com"), { address: "10.77.0.5", transport: "udp" });
    assert.equal((dnsPacket.decode(denied as Buffer).flags ?? 0) & 0xf, 3);
  });
});
