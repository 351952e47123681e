/**
 * Plans for `ip`: the bridge and the taps. Each step says what it means for
 * the executor, so nothing has to be guessed from argv positions:
 * - `undo`: the exact command that reverses the step, run in reverse order
 *   when a later step of the same plan fails;
 * - `tolerate`: stderr that still means the goal holds (another process got
 *   there first, or the device to delete is already gone).
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { isIpv4, validateInterfaceName } from "./ipv4.ts";

/** One command of a network plan; argv only. */
export interface NetworkStep {
  readonly argv: readonly string[];
  readonly undo?: readonly string[];
  readonly tolerate?: RegExp;
}

/** `ip` says one of these when the device does not exist. */
export const MISSING_DEVICE = /does not exist|Cannot find device|No such device/i;

/** `ip addr add` of an address the device already has. */
const ADDRESS_PRESENT = /already assigned|File exists/i;

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
export function planShowDevice(device: string): readonly string[] {
  return ["ip", "-j", "-d", "addr", "show", "dev", validateInterfaceName(device)];
}

/** Lists tun/tap devices. */
export function planListTunDevices(): readonly string[] {
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
export function planEnsureBridge(inputs: EnsureBridgeInputs): NetworkStep[] {
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
  const steps: NetworkStep[] = [];
  if (current === undefined) steps.push({ argv: ["ip", "link", "add", "name", bridge, "type", "bridge"] });
  const hasAddress = (current?.addr_info ?? []).some(
    (entry) => entry.family === "inet" && entry.local === address && entry.prefixlen === prefixLength,
  );
  if (!hasAddress) {
    steps.push({
      argv: ["ip", "addr", "add", `${address}/${prefixLength}`, "dev", bridge],
      tolerate: ADDRESS_PRESENT,
    });
  }
  if (!(current?.flags ?? []).includes("UP"))
    steps.push({ argv: ["ip", "link", "set", "dev", bridge, "up"] });
  return steps;
}

/**
 * Create a persistent tap, enslave it to the bridge and set it up. The
 * bridge is created by `planEnsureBridge` and outlives its taps, so the
 * bridge steps carry no undo; a tap's creation is undone by deleting it.
 */
export function planCreateTap(inputs: { tap: string; bridge: string }): NetworkStep[] {
  const tap = validateInterfaceName(inputs.tap);
  const bridge = validateInterfaceName(inputs.bridge);
  return [
    { argv: ["ip", "tuntap", "add", "dev", tap, "mode", "tap"], undo: ["ip", "link", "del", "dev", tap] },
    { argv: ["ip", "link", "set", "dev", tap, "master", bridge, "up"] },
  ];
}

/**
 * Forgets the bridge's neighbour entry for a guest address. An address is
 * reused by the next VM with another MAC; a stale entry the kernel still
 * holds REACHABLE would send that VM's traffic to the old MAC for up to a
 * minute. No entry, or no bridge, is success.
 */
export function planForgetNeighbor(inputs: { ip: string; bridge: string }): NetworkStep[] {
  const bridge = validateInterfaceName(inputs.bridge);
  if (!isIpv4(inputs.ip)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `'${inputs.ip}' is not an IPv4 address`);
  }
  return [{ argv: ["ip", "neigh", "flush", "to", inputs.ip, "dev", bridge], tolerate: MISSING_DEVICE }];
}

/** Deleting a device that is already gone is success. */
export function planDeleteDevice(device: string): NetworkStep[] {
  return [{ argv: ["ip", "link", "del", "dev", validateInterfaceName(device)], tolerate: MISSING_DEVICE }];
}
