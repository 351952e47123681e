/**
 * Host networking, the pure half: IPv4 subnet math, guest address
 * allocation, and plans (argv arrays for `ip`) that bring the host's bridge
 * and per-VM taps to the wanted state. src/sys/network runs these plans.
 *
 * Model: one Linux bridge (config `network.bridge`) carries the subnet's
 * first host address as the guests' gateway; every running VM has one tap
 * (`tapNameForVmId`, prefix `bgr-`) enslaved to it; each guest gets a static
 * address from the subnet (kernel `ip=` argument, see `guestKernelIpArg`).
 *
 * Reserved places for later work (not built yet; keep them here, as pure
 * planners, when they come):
 * - TAP POOL: pre-created idle taps handed out at VM start. It would add
 *   `planTapPool` here and a pool object beside `createHostNetwork`; tap
 *   names would then no longer derive from the VM id alone.
 * - NAT: an nft table `inet banger` masquerading the subnet out of the
 *   host's uplink. It would add `planNatRuleset(subnet, bridge)` returning
 *   the nft script, applied with `nft -f -` by src/sys/network.
 * - PER-VM DNS: `<vm>.vm` names answered by the daemon on the gateway
 *   address. It would add the zone records planner here; the responder
 *   lives in src/sys.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** One `ip` invocation; argv only. */
export type IpCommand = readonly string[];

export interface Subnet {
  /** Canonical CIDR, e.g. "10.77.0.0/24". */
  cidr: string;
  network: string;
  prefixLength: number;
  netmask: string;
  /** First host address; lives on the bridge. */
  gateway: string;
  /** Lowest address a guest may get (the one after the gateway). */
  firstGuest: string;
  /** Highest address a guest may get (the one before broadcast). */
  lastGuest: string;
  broadcast: string;
}

const IPV4_PATTERN = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** True for dotted-quad IPv4 without leading zeros ("10.0.0.1", not "010.0.0.1"). */
export function isIpv4(value: string): boolean {
  return IPV4_PATTERN.test(value);
}

export function ipv4ToInt(ip: string): number {
  if (!isIpv4(ip)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `'${ip}' is not an IPv4 address`);
  }
  return ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function intToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}

/**
 * Parses "A.B.C.D/N". The address must be the network address (no host bits)
 * and the prefix at most /30, so there is room for a gateway and one guest.
 */
export function parseSubnet(cidr: string): Subnet {
  const invalid = (why: string) =>
    new BangerError(ErrorCode.CONFIG_INVALID, `subnet '${cidr}' ${why}`, {
      hint: "use an IPv4 CIDR such as 10.77.0.0/24",
    });
  const match = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr);
  if (!match) throw invalid("is not of the form A.B.C.D/N");
  const [, address, prefixText] = match as unknown as [string, string, string];
  if (!isIpv4(address)) throw invalid(`has an invalid address '${address}'`);
  const prefixLength = Number(prefixText);
  if (prefixLength < 1 || prefixLength > 30) throw invalid("needs a prefix length between /1 and /30");
  const size = 2 ** (32 - prefixLength);
  const base = ipv4ToInt(address);
  if (base % size !== 0) {
    const network = intToIpv4(base - (base % size));
    throw invalid(`has host bits set; did you mean ${network}/${prefixLength}?`);
  }
  return {
    cidr: `${address}/${prefixLength}`,
    network: address,
    prefixLength,
    netmask: intToIpv4(2 ** 32 - size),
    gateway: intToIpv4(base + 1),
    firstGuest: intToIpv4(base + 2),
    lastGuest: intToIpv4(base + size - 2),
    broadcast: intToIpv4(base + size - 1),
  };
}

/** True when `ip` lies within the subnet's guest range. */
export function isGuestAddress(subnet: Subnet, ip: string): boolean {
  if (!isIpv4(ip)) return false;
  const value = ipv4ToInt(ip);
  return value >= ipv4ToInt(subnet.firstGuest) && value <= ipv4ToInt(subnet.lastGuest);
}

/**
 * The lowest guest address not in `usedIps`. Entries that are not IPv4 or
 * lie outside the subnet are ignored (a VM from an older subnet config).
 */
export function allocateGuestIp(subnet: Subnet, usedIps: Iterable<string>): string {
  const used = new Set<number>();
  for (const ip of usedIps) {
    if (isIpv4(ip)) used.add(ipv4ToInt(ip));
  }
  const last = ipv4ToInt(subnet.lastGuest);
  for (let candidate = ipv4ToInt(subnet.firstGuest); candidate <= last; candidate++) {
    if (!used.has(candidate)) return intToIpv4(candidate);
  }
  throw new BangerError(ErrorCode.NETWORK_FAILED, `subnet ${subnet.cidr} has no free address`, {
    hint: "delete VMs you no longer need, or set a larger `network.subnet` in the config",
  });
}

/** "10.77.0.1/24": the gateway address as the bridge carries it. */
export function gatewayCidr(subnet: Subnet): string {
  return `${subnet.gateway}/${subnet.prefixLength}`;
}

/**
 * The kernel `ip=` argument the guest's setup script reads:
 * `ip=<addr>::<gw>:<netmask>:<hostname>:<dev>:off`.
 */
export function guestKernelIpArg(options: {
  subnet: Subnet;
  guestIp: string;
  hostname: string;
  device?: string;
}): string {
  const { subnet, guestIp, hostname } = options;
  if (!isGuestAddress(subnet, guestIp)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${guestIp} is not a guest address of ${subnet.cidr}`);
  }
  return `ip=${guestIp}::${subnet.gateway}:${subnet.netmask}:${hostname}:${options.device ?? "eth0"}:off`;
}

const IFNAME_PATTERN = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$/;

/** Linux interface names: 1-15 bytes, no '/', ':', whitespace; not "." or "..", no leading '-'. */
export function validateInterfaceName(name: string): string {
  if (!IFNAME_PATTERN.test(name) || name === "." || name === "..") {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `'${name}' is not a valid network interface name (1-15 of A-Z a-z 0-9 _ . -, not starting with '-')`,
    );
  }
  return name;
}

/** One entry of `ip -j [-d] addr show` / `ip -j link show`: only the fields banger reads. */
export interface IpLinkInfo {
  ifname: string;
  flags?: string[];
  master?: string;
  operstate?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}

/** Parses `ip -j` output; empty output (some `ip` versions print nothing for no match) is []. */
export function parseIpJson(text: string): IpLinkInfo[] {
  const trimmed = text.trim();
  if (trimmed === "") return [];
  const parsed: unknown = JSON.parse(trimmed);
  if (!Array.isArray(parsed)) throw new Error("ip -j: expected a JSON array");
  return parsed.filter(
    (entry): entry is IpLinkInfo =>
      typeof entry === "object" && entry !== null && typeof (entry as IpLinkInfo).ifname === "string",
  );
}

/** Reads the bridge's link and addresses (details on, to see its kind). */
export function planShowDevice(device: string): IpCommand {
  return ["ip", "-j", "-d", "addr", "show", "dev", validateInterfaceName(device)];
}

/** Lists tun/tap devices. */
export function planListTunDevices(): IpCommand {
  return ["ip", "-j", "link", "show", "type", "tun"];
}

export interface EnsureBridgeInputs {
  bridge: string;
  /** Address with prefix for the bridge, e.g. "10.77.0.1/24". */
  gatewayCidr: string;
  /** The bridge's entry from `planShowDevice`, or undefined when it does not exist. */
  current: IpLinkInfo | undefined;
}

/**
 * Only the steps still needed: create the bridge, add the gateway address,
 * set it up. An up-to-date bridge yields []. Other addresses on the bridge
 * are left alone. A device of that name that is not a bridge is an error.
 */
export function planEnsureBridge(inputs: EnsureBridgeInputs): IpCommand[] {
  const bridge = validateInterfaceName(inputs.bridge);
  const [address, prefixText] = inputs.gatewayCidr.split("/");
  if (address === undefined || !isIpv4(address) || !/^\d{1,2}$/.test(prefixText ?? "")) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `'${inputs.gatewayCidr}' is not an IPv4 address/prefix`);
  }
  const prefixLength = Number(prefixText);
  const { current } = inputs;
  const kind = current?.linkinfo?.info_kind;
  if (current !== undefined && kind !== undefined && kind !== "bridge") {
    throw new BangerError(
      ErrorCode.NETWORK_FAILED,
      `network device ${bridge} exists but is a ${kind}, not a bridge`,
      { hint: "set `network.bridge` in the config to a name no other device uses" },
    );
  }
  const steps: IpCommand[] = [];
  if (current === undefined) steps.push(["ip", "link", "add", "name", bridge, "type", "bridge"]);
  const hasAddress = (current?.addr_info ?? []).some(
    (entry) => entry.family === "inet" && entry.local === address && entry.prefixlen === prefixLength,
  );
  if (!hasAddress) steps.push(["ip", "addr", "add", `${address}/${prefixLength}`, "dev", bridge]);
  if (!(current?.flags ?? []).includes("UP")) steps.push(["ip", "link", "set", "dev", bridge, "up"]);
  return steps;
}

/** Create a persistent tap, enslave it to the bridge and set it up. */
export function planCreateTap(inputs: { tap: string; bridge: string }): IpCommand[] {
  const tap = validateInterfaceName(inputs.tap);
  const bridge = validateInterfaceName(inputs.bridge);
  return [
    ["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
    ["ip", "link", "set", "dev", tap, "master", bridge, "up"],
  ];
}

export function planDeleteTap(tap: string): IpCommand[] {
  return [["ip", "link", "del", "dev", validateInterfaceName(tap)]];
}

export function planDeleteBridge(bridge: string): IpCommand[] {
  return [["ip", "link", "del", "dev", validateInterfaceName(bridge)]];
}
