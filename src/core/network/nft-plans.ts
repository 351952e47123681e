/**
 * The firewall: two nft tables of banger's own, planned as one script that
 * `nft -f -` applies atomically (one kernel transaction; a failure changes
 * nothing). Other tables are never touched.
 *
 * `inet banger` (routed traffic):
 * - postrouting: masquerade of the guest subnet out of any device but the
 *   bridge (the uplink is whatever the default route says);
 * - forward: frames between guests that br_netfilter hands to this hook
 *   are left to the bridge table; replies into guests, nothing unsolicited
 *   into them; from guests, the egress policy (denied VMs, and VMs limited
 *   to the addresses their allowed names resolved to), then accept;
 * - input: from the bridge only replies and DNS to the gateway, so guests
 *   reach no other service of the daemon's namespace; DNS on the gateway
 *   only from the bridge and loopback (never an open resolver).
 * `bridge banger` (frames between bridge ports, which `inet` never sees):
 * - prerouting: a frame from a tap must carry that tap's VM's MAC and IPv4
 *   address (IPv4 and ARP; other ether types are dropped), so a `.vm` name
 *   can be trusted;
 * - forward: with `vm_to_vm = false`, nothing from one tap to another.
 *
 * The script carries a signature of its inputs as the inet table's comment.
 * `planFirewallApply` recreates both tables only when the signature found
 * differs, so a restart keeps the learned egress addresses and the drop
 * counters, and there is exactly one copy of every rule after any number
 * of restarts. Per-VM set elements are rewritten in the same transaction.
 */
import { createHash } from "node:crypto";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { isIpv4, type Subnet, validateInterfaceName } from "./ipv4.ts";

export const FIREWALL_TABLE = "banger";
/** Tap names all start with this; nft matches it as a wildcard. */
const TAP_WILDCARD = "bgr-*";

/** Where a VM may send traffic past the gateway. */
export type EgressPolicy =
  | { mode: "allow" }
  | { mode: "deny" }
  /** Only addresses that the daemon's DNS returned for these names (exact, or `*.suffix`). */
  | { mode: "list"; domains: readonly string[] };

export interface FirewallInputs {
  bridge: string;
  subnet: Subnet;
  vmToVm: boolean;
}

export interface FirewallVm {
  tap: string;
  mac: string;
  ip: string;
  egress: EgressPolicy;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Hex digest of everything the table structure depends on. */
export function firewallSignature(inputs: FirewallInputs): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ v: 3, b: inputs.bridge, s: inputs.subnet.cidr, x: inputs.vmToVm }));
  return hash.digest("hex").slice(0, 16);
}

/** The two tables with their sets and chains, empty of elements. */
export function planFirewallTables(inputs: FirewallInputs): string {
  const bridge = quoted(validateInterfaceName(inputs.bridge));
  const { cidr, gateway } = inputs.subnet;
  const guests = `ip saddr ${cidr}`;
  return `table inet ${FIREWALL_TABLE} {
  comment "banger:${firewallSignature(inputs)}"
  set vm_denied { type ipv4_addr; }
  set vm_limited { type ipv4_addr; }
  set egress_allowed { type ipv4_addr . ipv4_addr; flags timeout; }
  set egress_dropped { type ipv4_addr; size 65535; flags dynamic; counter; }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ${guests} oifname != ${bridge} masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname ${bridge} oifname ${bridge} accept
    oifname ${bridge} ct state established,related accept
    oifname ${bridge} drop
    iifname ${bridge} ip saddr != ${cidr} drop
    iifname ${bridge} ip saddr @vm_denied update @egress_dropped { ip saddr } drop
    iifname ${bridge} ip saddr @vm_limited ip saddr . ip daddr != @egress_allowed update @egress_dropped { ip saddr } drop
    iifname ${bridge} accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ip daddr ${gateway} meta l4proto { tcp, udp } th dport 53 iifname != { ${bridge}, "lo" } drop
    iifname ${bridge} ct state established,related accept
    iifname ${bridge} ip daddr ${gateway} meta l4proto { tcp, udp } th dport 53 accept
    iifname ${bridge} drop
  }
}
table bridge ${FIREWALL_TABLE} {
  set vm_ports { type ifname . ether_addr . ipv4_addr; }
  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
    iifname "${TAP_WILDCARD}" ether type ip iifname . ether saddr . ip saddr != @vm_ports drop
    iifname "${TAP_WILDCARD}" ether type arp iifname . ether saddr . arp saddr ip != @vm_ports drop
    iifname "${TAP_WILDCARD}" ether type != { ip, arp } drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
${inputs.vmToVm ? "" : `    iifname "${TAP_WILDCARD}" oifname "${TAP_WILDCARD}" drop\n`}  }
}
`;
}

/** Deletes both tables; a missing table is fine (the empty `table` line creates it first). */
export function planFirewallTeardown(): string {
  return `table inet ${FIREWALL_TABLE} {}
delete table inet ${FIREWALL_TABLE}
table bridge ${FIREWALL_TABLE} {}
delete table bridge ${FIREWALL_TABLE}
`;
}

/**
 * The whole wanted state in one script: the tables (recreated only when
 * `currentSignature` differs from the wanted one), then each per-VM set
 * flushed and refilled with `vms`.
 */
export function planFirewallApply(options: {
  inputs: FirewallInputs;
  currentSignature: string | undefined;
  vms: readonly FirewallVm[];
}): string {
  const { inputs, vms } = options;
  const rebuild = options.currentSignature !== firewallSignature(inputs);
  const tables = rebuild ? planFirewallTeardown() + planFirewallTables(inputs) : "";
  const flush = ["bridge banger vm_ports", "inet banger vm_denied", "inet banger vm_limited"]
    .map((set) => `flush set ${set}\n`)
    .join("");
  return tables + flush + vms.map((vm) => planVmElements(vm, "add")).join("");
}

/** Adds or deletes one VM's elements (its port triple and its egress membership). */
export function planVmElements(vm: FirewallVm, op: "add" | "delete"): string {
  const tap = quoted(validateInterfaceName(vm.tap));
  if (!MAC.test(vm.mac)) invalid(`'${vm.mac}' is not a MAC address`);
  if (!isIpv4(vm.ip)) invalid(`'${vm.ip}' is not an IPv4 address`);
  const mac = vm.mac.toLowerCase();
  let script = `${op} element bridge ${FIREWALL_TABLE} vm_ports { ${tap} . ${mac} . ${vm.ip} }\n`;
  const set = egressSet(vm.egress);
  if (set !== undefined) script += `${op} element inet ${FIREWALL_TABLE} ${set} { ${vm.ip} }\n`;
  return script;
}

/** Moves a running VM from one egress policy to another (`vm set --egress`). */
export function planEgressChange(ip: string, from: EgressPolicy, to: EgressPolicy): string {
  if (!isIpv4(ip)) invalid(`'${ip}' is not an IPv4 address`);
  const before = egressSet(from);
  const after = egressSet(to);
  if (before === after) return "";
  let script = "";
  if (before !== undefined) script += `delete element inet ${FIREWALL_TABLE} ${before} { ${ip} }\n`;
  if (after !== undefined) script += `add element inet ${FIREWALL_TABLE} ${after} { ${ip} }\n`;
  return script;
}

/** Lets `source` reach `addresses` for `ttlSeconds` (an allowed name's DNS answer). */
export function planEgressAllow(source: string, addresses: readonly string[], ttlSeconds: number): string {
  if (!isIpv4(source)) invalid(`'${source}' is not an IPv4 address`);
  const ttl = Math.max(1, Math.floor(ttlSeconds));
  const elements = addresses
    .filter(isIpv4)
    .map((address) => `${source} . ${address} timeout ${ttl}s`)
    .join(", ");
  return elements === "" ? "" : `add element inet ${FIREWALL_TABLE} egress_allowed { ${elements} }\n`;
}

/** The signature in `nft list table inet banger` output, if the table is banger's. */
export function parseFirewallSignature(listing: string): string | undefined {
  return /^\s*comment "banger:([0-9a-f]{16})"/m.exec(listing)?.[1];
}

/** Dropped-packet counts per guest address from `nft -j list set inet banger egress_dropped`. */
export function parseDropCounts(json: string): Map<string, number> {
  const counts = new Map<string, number>();
  const parsed = JSON.parse(json) as { nftables?: unknown[] };
  for (const entry of parsed.nftables ?? []) {
    const elements = (entry as { set?: { elem?: unknown[] } }).set?.elem ?? [];
    for (const element of elements) {
      const elem = (element as { elem?: { val?: unknown; counter?: { packets?: unknown } } }).elem;
      if (typeof elem?.val === "string" && typeof elem.counter?.packets === "number") {
        counts.set(elem.val, elem.counter.packets);
      }
    }
  }
  return counts;
}

/** Number of rules in an `nft -j list table ...` listing (doctor). */
export function countRules(json: string): number {
  const parsed = JSON.parse(json) as { nftables?: unknown[] };
  return (parsed.nftables ?? []).filter(
    (entry) => typeof entry === "object" && entry !== null && "rule" in entry,
  ).length;
}

function egressSet(policy: EgressPolicy): string | undefined {
  if (policy.mode === "deny") return "vm_denied";
  if (policy.mode === "list") return "vm_limited";
  return undefined;
}

function quoted(name: string): string {
  return `"${name}"`;
}

function invalid(message: string): never {
  throw new BangerError(ErrorCode.INVALID_PARAMS, `firewall: ${message}`);
}
