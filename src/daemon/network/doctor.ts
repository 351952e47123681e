/**
 * Doctor checks of the host network: the firewall tables and their rule
 * count, ip_forward, the bridge and its address, the DNS server answering,
 * `.vm` name resolution on the host, and other tables whose forward chain
 * drops by policy (Docker's iptables-nft, ufw), which would drop guest
 * traffic that banger's own table accepts.
 */
import dnsPacket from "dns-packet";
import type { Subnet } from "../../core/network/index.ts";
import type { DoctorCheck } from "../../protocol/index.ts";
import type { Firewall, IpForward } from "../../sys/network/index.ts";
import type { DnsFeature } from "./dns.ts";
import type { NatFeature } from "./nat.ts";

export interface NetworkDoctorDeps {
  bridge: string;
  subnet: Subnet;
  domain: string;
  firewall: Firewall;
  ipForward: IpForward;
  nat: NatFeature;
  dns: DnsFeature;
  /** The bridge's IPv4 addresses as "a.b.c.d/n", or undefined when it does not exist. */
  bridgeAddresses(): Promise<string[] | undefined>;
}

const WAITING = "not set up yet: banger sets up the host network at the first VM start";

export async function networkDoctorChecks(deps: NetworkDoctorDeps): Promise<DoctorCheck[]> {
  if (!deps.nat.started) {
    // A daemon without VMs leaves its namespace alone; only what would block the first VM matters.
    return [{ name: "network", status: "ok", detail: WAITING }, await checkForwardPolicies(deps)];
  }
  return [
    await checkFirewall(deps),
    await checkIpForward(deps),
    await checkBridge(deps),
    await checkDns(deps),
    await checkResolved(deps),
    await checkForwardPolicies(deps),
  ];
}

async function checkFirewall(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  const rules = await deps.firewall.ruleCount().catch((error: unknown) => error as Error);
  if (rules instanceof Error || rules === undefined) {
    return {
      name: "firewall",
      status: "fail",
      detail: `nft table inet banger is missing${deps.nat.down ? `: ${deps.nat.down}` : ""}`,
      hint: "the daemon creates it at start; check `nft list ruleset` works as the daemon's user, then restart the daemon",
    };
  }
  return { name: "firewall", status: "ok", detail: `tables inet/bridge banger with ${rules} rules` };
}

async function checkIpForward(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  const value = await deps.ipForward.read().catch(() => "unreadable");
  return value === "1"
    ? { name: "ip-forward", status: "ok", detail: "net.ipv4.ip_forward = 1" }
    : {
        name: "ip-forward",
        status: "fail",
        detail: `net.ipv4.ip_forward = ${value}: guests cannot reach the uplink`,
        hint: "restart the daemon as root, or run `sysctl -w net.ipv4.ip_forward=1`",
      };
}

async function checkBridge(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  const want = `${deps.subnet.gateway}/${deps.subnet.prefixLength}`;
  const addresses = await deps.bridgeAddresses().catch(() => undefined);
  if (addresses === undefined) {
    return {
      name: "bridge",
      status: "warn",
      detail: `${deps.bridge} does not exist yet`,
      hint: "it is made at daemon start and at the first VM start",
    };
  }
  return addresses.includes(want)
    ? { name: "bridge", status: "ok", detail: `${deps.bridge} carries ${want}` }
    : {
        name: "bridge",
        status: "fail",
        detail: `${deps.bridge} lacks the gateway ${want} (has ${addresses.join(", ") || "none"})`,
        hint: "start a VM, or restart the daemon, to add it",
      };
}

async function checkDns(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  if (deps.dns.listening.length === 0) {
    return {
      name: "dns",
      status: "fail",
      detail: "the DNS server is not listening",
      hint: "see bangerd.log for why (port 53 taken? set `network.dns_port`)",
    };
  }
  const query = dnsPacket.encode({ type: "query", id: 1, questions: [{ type: "SOA", name: deps.domain }] });
  const reply = await deps.dns.handle(query, { address: "127.0.0.1", transport: "udp" });
  const answered = reply !== undefined && dnsPacket.decode(reply).answers?.[0]?.type === "SOA";
  return answered
    ? {
        name: "dns",
        status: "ok",
        detail: `answering for .${deps.domain} on ${deps.dns.listening.join(", ")}`,
      }
    : {
        name: "dns",
        status: "fail",
        detail: "the DNS server did not answer its own zone",
        hint: "see bangerd.log",
      };
}

async function checkResolved(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  const routing = deps.dns.hostRouting;
  return routing.ok
    ? { name: "host-dns", status: "ok", detail: routing.detail }
    : {
        name: "host-dns",
        status: "warn",
        detail: routing.detail,
        hint: `resolve .${deps.domain} names with \`dig @${deps.subnet.gateway} NAME.${deps.domain}\`, or add "nameserver ${deps.subnet.gateway}" for the ${deps.domain} domain in your resolver`,
      };
}

async function checkForwardPolicies(deps: NetworkDoctorDeps): Promise<DoctorCheck> {
  let json: { nftables?: unknown[] };
  try {
    json = JSON.parse(await deps.firewall.ruleset()) as { nftables?: unknown[] };
  } catch (error) {
    return { name: "forward-policy", status: "warn", detail: `cannot read the ruleset: ${String(error)}` };
  }
  const dropping = (json.nftables ?? [])
    .map(
      (entry) =>
        (
          entry as {
            chain?: { family?: string; table?: string; name?: string; hook?: string; policy?: string };
          }
        ).chain,
    )
    .filter((chain) => chain?.hook === "forward" && chain.policy === "drop" && chain.table !== "banger")
    .map((chain) => `${chain?.family} ${chain?.table} ${chain?.name}`);
  if (dropping.length === 0)
    return {
      name: "forward-policy",
      status: "ok",
      detail: "no other table drops forwarded traffic by policy",
    };
  return {
    name: "forward-policy",
    status: "warn",
    detail: `forward chains that drop by policy: ${dropping.join("; ")}; guest traffic to the uplink may be dropped there`,
    hint: `allow the bridge in them, e.g. \`iptables -I FORWARD -i ${deps.bridge} -j ACCEPT\` and \`iptables -I FORWARD -o ${deps.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\` (Docker: the DOCKER-USER chain; ufw: \`ufw route allow in on ${deps.bridge}\`)`,
  };
}
