/**
 * The DNS answers banger gives itself, from a snapshot of its VMs:
 * - the zone `<domain>` (config `network.domain`, default `vm`): A for
 *   `<name>.<domain>`, SOA and NS for the apex, NODATA (with the SOA) for
 *   other types of a known name, NXDOMAIN for unknown names;
 * - the reverse zone of the guest subnet: PTR for VM addresses, NXDOMAIN
 *   for other guest addresses;
 * - every other name is for the upstream resolvers (`forward`), unless the
 *   asking VM's egress policy does not allow it (NXDOMAIN).
 *
 * Queries are checked before they are decoded (`checkQuery`): exactly one
 * question and no answer or authority records, so a hostile packet costs a
 * header read. What cannot be decoded is answered FORMERR when its id can
 * be read, and dropped otherwise.
 */
import dnsPacket, { type Answer, type Packet, type Question } from "dns-packet";
import { nameAllowed } from "./egress.ts";
import { ipv4ToInt, isIpv4, type Subnet } from "./ipv4.ts";
import type { EgressPolicy } from "./nft-plans.ts";

export interface ZoneRecord {
  /** The VM's name, one DNS label. */
  name: string;
  ip: string;
}

export interface Zone {
  domain: string;
  subnet: Subnet;
  byName: ReadonlyMap<string, string>;
  byAddress: ReadonlyMap<string, string>;
  /**
   * The fast path's table: each VM name in wire format (length-prefixed
   * lowercase labels and the root's zero byte, as latin1 text) to the bytes
   * of its A record as they follow the question in a reply.
   */
  answers: ReadonlyMap<string, Buffer>;
}

/** TTL of banger's own records: short, VMs come and go. */
const ZONE_TTL_SECONDS = 5;
/** A TCP DNS message is at most this long (its length prefix is 16 bits). */
const MAX_DNS_MESSAGE = 65_535;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
type Rcode = keyof typeof RCODE;

export function buildZone(options: { domain: string; subnet: Subnet; records: readonly ZoneRecord[] }): Zone {
  const byName = new Map<string, string>();
  const byAddress = new Map<string, string>();
  const answers = new Map<string, Buffer>();
  const domain = options.domain.toLowerCase();
  for (const record of options.records) {
    if (!isIpv4(record.ip)) continue;
    const fqdn = `${record.name.toLowerCase()}.${domain}`;
    byName.set(fqdn, record.ip);
    byAddress.set(record.ip, fqdn);
    const wire = wireName(fqdn);
    if (wire !== undefined) answers.set(wire, answerRecord(record.ip));
  }
  return { domain, subnet: options.subnet, byName, byAddress, answers };
}

/** "web.vm" -> "\x03web\x02vm\x00", or undefined for a name DNS cannot carry. */
function wireName(fqdn: string): string | undefined {
  const labels = fqdn.split(".");
  if (fqdn.length > 253 || labels.some((label) => label.length === 0 || label.length > 63)) return undefined;
  return `${labels.map((label) => String.fromCharCode(label.length) + label).join("")}\0`;
}

/** An A record whose owner is a pointer to the question's name (offset 12). */
function answerRecord(ip: string): Buffer {
  const record = Buffer.alloc(16);
  let at = record.writeUInt16BE(0xc00c, 0);
  at = record.writeUInt16BE(1, at); // A
  at = record.writeUInt16BE(1, at); // IN
  at = record.writeUInt32BE(ZONE_TTL_SECONDS, at);
  at = record.writeUInt16BE(4, at);
  for (const octet of ip.split(".")) at = record.writeUInt8(Number(octet), at);
  return record;
}

export type QueryCheck =
  | { ok: true; packet: Packet; question: Question }
  /** Answer this (FORMERR or REFUSED) and stop. */
  | { ok: false; reply: Buffer }
  /** Not even a header: say nothing. */
  | { ok: false; reply: undefined };

/** Validates and decodes one query message. */
export function checkQuery(message: Buffer): QueryCheck {
  if (message.length < 12) return { ok: false, reply: undefined };
  const id = message.readUInt16BE(0);
  const flags = message.readUInt16BE(2);
  if ((flags & 0x8000) !== 0) return { ok: false, reply: undefined }; // a response: never answer one
  const opcode = (flags >> 11) & 0xf;
  const counts = [4, 6, 8, 10].map((offset) => message.readUInt16BE(offset));
  const [questions, answers, authorities, additionals] = counts as [number, number, number, number];
  const formerr = { ok: false as const, reply: bareReply(id, flags, "FORMERR") };
  if (message.length > MAX_DNS_MESSAGE) return formerr;
  if (opcode !== 0) return { ok: false, reply: bareReply(id, flags, "REFUSED") };
  if (questions !== 1 || answers !== 0 || authorities !== 0 || additionals > 1) return formerr;
  let packet: Packet;
  try {
    packet = dnsPacket.decode(message);
  } catch {
    return formerr;
  }
  const question = packet.questions?.[0];
  if (question === undefined || typeof question.name !== "string") return formerr;
  return { ok: true, packet, question };
}

/**
 * The common case without decoding: a plain query (one question, no other
 * records, so no EDNS) for the A record of a VM name, answered straight
 * from the wire bytes with one lookup in `zone.answers`. Anything else
 * (another type, a name outside the zone, a compression pointer, an
 * additional record) returns undefined and takes the full path.
 *
 * The question's name is the bytes between the header and the last four
 * (type and class); it is looked up as it stands, lowercased. Only a
 * well-formed name can equal a table key: lowercasing leaves length bytes
 * (below 64) and the root's zero alone and maps no other byte onto them,
 * so a match is the same labels up to ASCII case.
 */
export function fastZoneAnswer(zone: Zone, message: Buffer): Buffer | undefined {
  const length = message.length;
  if (length < 17 || length > 12 + 255 + 4) return undefined;
  const flags = message.readUInt16BE(2);
  if ((flags & 0xf800) !== 0) return undefined; // a response, or an opcode other than QUERY
  if (message.readUInt16BE(4) !== 1 || message.readUInt32BE(6) !== 0 || message.readUInt16BE(10) !== 0) {
    return undefined;
  }
  if (message.readUInt32BE(length - 4) !== 0x0001_0001) return undefined; // type A, class IN
  const record = zone.answers.get(message.toString("latin1", 12, length - 4).toLowerCase());
  if (record === undefined) return undefined;
  const reply = Buffer.allocUnsafe(length + record.length);
  message.copy(reply, 0, 0, length);
  record.copy(reply, length);
  reply.writeUInt16BE(0x8000 | 0x0400 | (flags & 0x0100) | 0x0080, 2); // QR, AA, RD as asked, RA, NOERROR
  reply.writeUInt16BE(1, 6); // one answer; the query had no authority or additional records
  return reply;
}

export type ZoneDecision =
  | { kind: "answer"; reply: Buffer }
  /** Not banger's name: ask the upstream resolvers. */
  | { kind: "forward" };

/**
 * What to do with a checked query from `client` (a guest address, or
 * loopback). `egress` is the asking VM's policy, when the asker is a VM.
 */
export function answerQuery(options: {
  zone: Zone;
  packet: Packet;
  question: Question;
  egress?: EgressPolicy | undefined;
}): ZoneDecision {
  const { zone, packet, question } = options;
  const name = question.name.toLowerCase().replace(/\.$/, "");
  if (name === zone.domain || name.endsWith(`.${zone.domain}`)) {
    return { kind: "answer", reply: zoneAnswer(zone, packet, question, name) };
  }
  const reverse = reverseAddress(name);
  if (reverse !== undefined && inSubnet(zone.subnet, reverse)) {
    const fqdn = zone.byAddress.get(reverse);
    if (question.type === "PTR" && fqdn !== undefined) {
      return answer(packet, "NOERROR", [
        { name: question.name, type: "PTR", ttl: ZONE_TTL_SECONDS, data: fqdn },
      ]);
    }
    return answer(packet, fqdn === undefined ? "NXDOMAIN" : "NOERROR", [], soaOf(zone));
  }
  if (options.egress !== undefined && !nameAllowed(options.egress, name)) {
    return answer(packet, "NXDOMAIN", []);
  }
  return { kind: "forward" };
}

/** The A addresses of a response with the smallest TTL among them (egress allowances). */
export function addressesOf(response: Packet): { addresses: string[]; ttl: number } {
  const records = (response.answers ?? []).filter(
    (record): record is Answer & { type: "A"; data: string } => record.type === "A",
  );
  const ttl = records.reduce((least, record) => Math.min(least, record.ttl ?? 0), Number.POSITIVE_INFINITY);
  return { addresses: records.map((record) => record.data), ttl: Number.isFinite(ttl) ? ttl : 0 };
}

/** SERVFAIL for a query (every upstream failed or timed out). */
export function servfail(packet: Packet): Buffer {
  return encodeReply(packet, "SERVFAIL", []);
}

/** REFUSED for a query from outside the guest subnet and loopback (never an open resolver). */
export function refused(packet: Packet): Buffer {
  return encodeReply(packet, "REFUSED", []);
}

function zoneAnswer(zone: Zone, packet: Packet, question: Question, name: string): Buffer {
  if (name === zone.domain) {
    if (question.type === "SOA") return encodeReply(packet, "NOERROR", [soaOf(zone)]);
    if (question.type === "NS") {
      return encodeReply(packet, "NOERROR", [
        { name: zone.domain, type: "NS", ttl: ZONE_TTL_SECONDS, data: `ns.${zone.domain}` },
      ]);
    }
    return encodeReply(packet, "NOERROR", [], soaOf(zone));
  }
  const ip = zone.byName.get(name);
  if (ip === undefined) return encodeReply(packet, "NXDOMAIN", [], soaOf(zone));
  if (question.type === "A" || (question.type as string) === "ANY") {
    return encodeReply(packet, "NOERROR", [
      { name: question.name, type: "A", ttl: ZONE_TTL_SECONDS, data: ip },
    ]);
  }
  return encodeReply(packet, "NOERROR", [], soaOf(zone));
}

function answer(packet: Packet, rcode: Rcode, answers: Answer[], authority?: Answer): ZoneDecision {
  return { kind: "answer", reply: encodeReply(packet, rcode, answers, authority) };
}

function soaOf(zone: Zone): Answer {
  return {
    name: zone.domain,
    type: "SOA",
    ttl: ZONE_TTL_SECONDS,
    data: {
      mname: `ns.${zone.domain}`,
      rname: `hostmaster.${zone.domain}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: ZONE_TTL_SECONDS,
    },
  };
}

function encodeReply(packet: Packet, rcode: Rcode, answers: Answer[], authority?: Answer): Buffer {
  const recursionDesired = ((packet.flags ?? 0) & dnsPacket.RECURSION_DESIRED) !== 0;
  return dnsPacket.encode({
    type: "response",
    id: packet.id ?? 0,
    flags:
      dnsPacket.AUTHORITATIVE_ANSWER |
      dnsPacket.RECURSION_AVAILABLE |
      (recursionDesired ? dnsPacket.RECURSION_DESIRED : 0) |
      RCODE[rcode],
    questions: packet.questions ?? [],
    answers,
    authorities: authority === undefined ? [] : [authority],
  });
}

/** A header-only reply, for queries that cannot be decoded. */
function bareReply(id: number, queryFlags: number, rcode: Rcode): Buffer {
  const reply = Buffer.alloc(12);
  reply.writeUInt16BE(id, 0);
  reply.writeUInt16BE(0x8000 | (queryFlags & 0x7900) | 0x0080 | RCODE[rcode], 2);
  return reply;
}

/** "4.3.2.1.in-addr.arpa" -> "1.2.3.4". */
function reverseAddress(name: string): string | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (match === null) return undefined;
  const address = [match[4], match[3], match[2], match[1]].join(".");
  return isIpv4(address) ? address : undefined;
}

function inSubnet(subnet: Subnet, address: string): boolean {
  const value = ipv4ToInt(address);
  return value >= ipv4ToInt(subnet.network) && value <= ipv4ToInt(subnet.broadcast);
}
