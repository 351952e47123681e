/**
 * The DNS feature: banger's resolver for guests and the host, listening on
 * the gateway (the bridge is made first, so its address exists) and on
 * 127.0.0.1, UDP and TCP, port `network.dns_port`.
 *
 * Per query: hostile or malformed messages are answered FORMERR or dropped
 * (core/network `checkQuery`); askers other than guests, loopback and this
 * namespace's own addresses get REFUSED (never an open resolver; the
 * firewall also drops DNS to the gateway from anywhere but the bridge and
 * loopback); the `vm` zone and the guest reverse
 * zone are answered from an in-memory snapshot of the VMs, rebuilt after
 * every create, start, stop and delete (`invalidate`), so a name exists from
 * the moment its VM is created until it is deleted; a VM whose egress is a
 * list gets NXDOMAIN for other names; everything else goes through the TTL
 * cache to the upstreams, SERVFAIL when none answers. A list VM's answers
 * are added to its allowed addresses before the answer is sent, so its
 * first connection is already let through.
 *
 * The common query, A for a VM name, is answered synchronously in the
 * listener's message callback (`answerNow`): no promise, no decode, no
 * store read, no log line; only the snapshot lookup (core/network
 * `fastZoneAnswer`) and an allocation of the reply.
 */
import dnsPacket, { type Packet } from "dns-packet";
import type { Logger } from "../../core/log/index.ts";
import {
  addressesOf,
  answerQuery,
  buildZone,
  checkQuery,
  type DnsCache,
  fastZoneAnswer,
  ipv4ToInt,
  isIpv4,
  refused,
  type Subnet,
  servfail,
  type Zone,
  type ZoneRecord,
} from "../../core/network/index.ts";
import type {
  DnsClient,
  DnsListenAddress,
  DnsServer,
  DnsServerOptions,
  Upstream,
} from "../../sys/dns/index.ts";
import type { HostFeature } from "./feature.ts";
import type { NetworkSettings } from "./settings.ts";

export interface DnsDeps {
  domain: string;
  subnet: Subnet;
  port: number;
  /** Makes the bridge (and so the gateway address) exist. */
  ensureBridge(signal?: AbortSignal): Promise<void>;
  startServer(options: DnsServerOptions): Promise<DnsServer>;
  upstream: Upstream;
  cache: DnsCache;
  records(): readonly ZoneRecord[];
  /** True when the store holds any VM: a daemon without one starts no DNS server (the VM hook starts it). */
  anyVm(): boolean;
  /** True for an address of this namespace (a local process asking). */
  isLocalAddress(address: string): boolean;
  settings: Pick<NetworkSettings, "policyOf">;
  /** Points the host's resolver at this server for the zone, where it can (systemd-resolved). */
  routeHost(): Promise<{ ok: boolean; detail: string }>;
  /** Lets `source` reach `addresses` for `ttlSeconds`. */
  allowEgress(source: string, addresses: readonly string[], ttlSeconds: number): Promise<void>;
  logger: Logger;
}

export interface DnsFeature extends HostFeature {
  /** Answers one query as the listeners do (tests, bench). */
  handle(message: Buffer, client: DnsClient): Promise<Buffer | undefined>;
  /** The synchronous fast path the listeners try first; undefined means "ask `handle`". */
  answerNow(message: Buffer, address: string): Buffer | undefined;
  /** Starts the server now, VM or not (a create, a VM start); a failure is logged. */
  up(signal: AbortSignal): Promise<void>;
  /** The VM list changed (create, start, stop, delete): the zone is rebuilt at the next query. */
  invalidate(): void;
  /** The addresses listened on, or empty when down. */
  readonly listening: readonly string[];
  /** Whether this daemon has started the server (and so made the bridge). */
  readonly started: boolean;
  /** How the host resolves the zone, as of the last ensure. */
  readonly hostRouting: { ok: boolean; detail: string };
}

/**
 * A query the snapshot cannot answer rebuilds a snapshot older than this
 * (belt and braces for a change no invalidation reported); answered names
 * never touch the store.
 */
const ZONE_MAX_AGE_MS = 2000;
/** Egress allowances last at least this long, so a cached answer's short TTL does not cut a connection. */
const MIN_ALLOW_SECONDS = 30;

export function createDnsFeature(deps: DnsDeps): DnsFeature {
  const logger = deps.logger.child({ feature: "dns" });
  const { subnet } = deps;
  let server: DnsServer | undefined;
  let started = false;
  /** Askers refused so far, each logged once (bounded). */
  const refusedAskers = new Set<string>();
  let zone: { value: Zone; builtAt: number } | undefined;
  const rebuildZone = (): Zone => {
    const value = buildZone({ domain: deps.domain, subnet, records: deps.records() });
    zone = { value, builtAt: performance.now() };
    return value;
  };
  /** The snapshot as it is (the fast path), built only after an invalidation. */
  const snapshot = (): Zone => zone?.value ?? rebuildZone();
  /** The snapshot for the full path: also rebuilt when older than ZONE_MAX_AGE_MS. */
  const currentZone = (): Zone =>
    zone === undefined || performance.now() - zone.builtAt > ZONE_MAX_AGE_MS ? rebuildZone() : zone.value;
  let hostRouting = { ok: false, detail: "the DNS server has not started" };
  const [firstGuest, lastGuest] = [ipv4ToInt(subnet.network), ipv4ToInt(subnet.broadcast)];
  const isGuest = (address: string) => {
    if (!isIpv4(address)) return false;
    const value = ipv4ToInt(address);
    return value >= firstGuest && value <= lastGuest;
  };
  const isLoopback = (address: string) => address.startsWith("127.") || address === "::1";
  const askerAllowed = (address: string) =>
    isLoopback(address) || isGuest(address) || deps.isLocalAddress(address);

  const answerNow = (message: Buffer, address: string): Buffer | undefined =>
    askerAllowed(address) ? fastZoneAnswer(snapshot(), message) : undefined;

  const allowFor = async (client: string, response: Packet) => {
    if (deps.settings.policyOf(client)?.mode !== "list") return;
    const { addresses, ttl } = addressesOf(response);
    if (addresses.length > 0) await deps.allowEgress(client, addresses, Math.max(ttl, MIN_ALLOW_SECONDS));
  };

  const handle = async (message: Buffer, client: DnsClient): Promise<Buffer | undefined> => {
    const allowed = askerAllowed(client.address);
    const fast = allowed ? fastZoneAnswer(snapshot(), message) : undefined;
    if (fast !== undefined) return fast;
    const check = checkQuery(message);
    if (!check.ok) return check.reply;
    const { packet, question } = check;
    if (!allowed) {
      if (refusedAskers.size < 100 && !refusedAskers.has(client.address)) {
        refusedAskers.add(client.address);
        logger.warn("refused DNS from outside the guest subnet and loopback", { client: client.address });
      }
      return refused(packet);
    }
    const decision = answerQuery({
      zone: currentZone(),
      packet,
      question,
      egress: deps.settings.policyOf(client.address),
    });
    if (decision.kind === "answer") return decision.reply;

    const cached = deps.cache.get(packet, question);
    if (cached !== undefined) {
      await allowFor(client.address, dnsPacket.decode(cached));
      return cached;
    }
    const reply = await deps.upstream.forward(message, client.transport);
    if (reply === undefined) return servfail(packet);
    let response: Packet;
    try {
      response = dnsPacket.decode(reply);
    } catch {
      logger.warn("an upstream sent an undecodable answer", { name: question.name });
      return servfail(packet);
    }
    deps.cache.put(question, response);
    await allowFor(client.address, response);
    return reply;
  };

  const guardedHandle = async (message: Buffer, client: DnsClient) => {
    try {
      return await handle(message, client);
    } catch (error) {
      logger.warn("dns query failed", { client: client.address, err: String(error) });
      const check = checkQuery(message);
      return check.ok ? servfail(check.packet) : check.reply;
    }
  };

  const up = async (signal: AbortSignal) => {
    if (server !== undefined) return;
    try {
      started = true;
      await deps.ensureBridge(signal);
      server = await deps.startServer({ listen: listen(), answerNow, handle: guardedHandle, logger });
      logger.info("dns listening", { on: server.bound, domain: deps.domain });
      hostRouting = await deps.routeHost();
      logger.info("host resolution of the zone", hostRouting);
    } catch (error) {
      logger.warn("the DNS server is not running", { err: String(error) });
    }
  };

  const listen = (): DnsListenAddress[] => [
    { host: subnet.gateway, port: deps.port },
    { host: "127.0.0.1", port: deps.port, optional: true },
  ];

  return {
    name: "dns",
    handle: guardedHandle,
    answerNow,
    invalidate() {
      zone = undefined;
    },
    get listening() {
      return server?.bound ?? [];
    },
    get started() {
      return started;
    },
    get hostRouting() {
      return hostRouting;
    },
    async ensure(signal) {
      if (deps.anyVm()) await up(signal);
    },
    up: (signal) => up(signal),
    async teardown() {
      const running = server;
      server = undefined;
      await running?.close();
    },
  };
}
