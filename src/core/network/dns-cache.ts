/**
 * The forwarder's answer cache: bounded (oldest entry evicted first), keyed
 * by name, type and class, kept for the smallest TTL of the answer (the SOA
 * minimum for a negative answer) and never longer than `maxTtlSeconds`.
 * Hits are rewritten to the asker's id with the TTLs that remain. SERVFAIL
 * and truncated answers are not cached. The clock is injected.
 */
import dnsPacket, { type Answer, type Packet, type Question } from "dns-packet";

export interface DnsCacheOptions {
  maxEntries: number;
  maxTtlSeconds: number;
  nowMs(): number;
}

interface Entry {
  packet: Packet;
  storedAtMs: number;
  expiresAtMs: number;
}

export interface DnsCache {
  /** The cached answer re-encoded for `query`, or undefined. */
  get(query: Packet, question: Question): Buffer | undefined;
  put(question: Question, response: Packet): void;
  readonly size: number;
}

const NEGATIVE_TTL_FALLBACK = 30;

export function createDnsCache(options: DnsCacheOptions): DnsCache {
  const entries = new Map<string, Entry>();
  const keyOf = (question: Question) =>
    `${question.name.toLowerCase().replace(/\.$/, "")}|${question.type}|${question.class ?? "IN"}`;

  return {
    get size() {
      return entries.size;
    },
    get(query, question) {
      const key = keyOf(question);
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      const now = options.nowMs();
      if (now >= entry.expiresAtMs) {
        entries.delete(key);
        return undefined;
      }
      const elapsed = Math.floor((now - entry.storedAtMs) / 1000);
      const age = (records: Answer[] | undefined) =>
        (records ?? []).map((record) =>
          "ttl" in record && typeof record.ttl === "number"
            ? { ...record, ttl: Math.max(0, record.ttl - elapsed) }
            : record,
        );
      return dnsPacket.encode({
        ...entry.packet,
        id: query.id ?? 0,
        questions: query.questions ?? [],
        answers: age(entry.packet.answers),
        authorities: age(entry.packet.authorities),
        additionals: [],
      });
    },
    put(question, response) {
      const rcode = (response.flags ?? 0) & 0xf;
      const truncated = ((response.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE) !== 0;
      if (truncated || (rcode !== 0 && rcode !== 3)) return;
      const ttl = Math.min(cacheTtl(response), options.maxTtlSeconds);
      if (ttl <= 0) return;
      const key = keyOf(question);
      entries.delete(key);
      while (entries.size >= options.maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest === undefined) break;
        entries.delete(oldest);
      }
      const now = options.nowMs();
      entries.set(key, { packet: response, storedAtMs: now, expiresAtMs: now + ttl * 1000 });
    },
  };
}

/** The smallest answer TTL; for an empty answer the SOA's minimum (RFC 2308). */
function ttlOf(record: Answer): number | undefined {
  return "ttl" in record && typeof record.ttl === "number" ? record.ttl : undefined;
}

function cacheTtl(response: Packet): number {
  const ttls = (response.answers ?? []).map(ttlOf).filter((ttl): ttl is number => ttl !== undefined);
  if (ttls.length > 0) return Math.min(...ttls);
  const soa = (response.authorities ?? []).find((record) => record.type === "SOA");
  if (soa !== undefined && soa.type === "SOA") return Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0);
  return NEGATIVE_TTL_FALLBACK;
}
