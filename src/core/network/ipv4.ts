/**
 * IPv4 arithmetic for the guest subnet: parsing a CIDR, the gateway and
 * guest range, address allocation, the kernel `ip=` argument, and the
 * interface-name rule every plan applies to device names.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

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
