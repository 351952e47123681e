/**
 * The TAP pool, the pure half: names, the `ip` plans of a pool tap, and
 * what a daemon does with the pool taps it finds at start.
 *
 * A pool tap is a persistent tap named `bgp-<n>`, attached to the bridge
 * and left down (the kernel renames only a device that is down). A VM start
 * claims one by renaming it to the VM's tap name and setting it up in one
 * netlink request, instead of creating a tap and attaching it. The `bgp-`
 * prefix is outside the VMs' `bgr-`, so VM reconcile never counts a pool
 * tap as a VM's leftover, and a claimed tap is an ordinary VM tap.
 */
import type { IpLinkInfo, NetworkStep } from "./ip-plans.ts";
import { validateInterfaceName } from "./ipv4.ts";

export const POOL_TAP_PREFIX = "bgp-";

/** `ip` says this when renaming onto a name another device has. */
export const NAME_TAKEN = /File exists|already exists/i;

function poolTapName(index: number): string {
  return `${POOL_TAP_PREFIX}${index}`;
}

/** The lowest-numbered pool name not in `used`. */
export function nextPoolTapName(used: ReadonlySet<string>): string {
  let index = 0;
  while (used.has(poolTapName(index))) index++;
  return poolTapName(index);
}

/** A pool tap: created, attached to the bridge, left down; undone by deleting it. */
export function planCreatePoolTap(inputs: { tap: string; bridge: string }): NetworkStep[] {
  const tap = validateInterfaceName(inputs.tap);
  const bridge = validateInterfaceName(inputs.bridge);
  return [
    { argv: ["ip", "tuntap", "add", "dev", tap, "mode", "tap"], undo: ["ip", "link", "del", "dev", tap] },
    { argv: ["ip", "link", "set", "dev", tap, "master", bridge] },
  ];
}

/**
 * A VM claims a pool tap: renamed to the VM's tap name, (re)attached to the
 * bridge and set up, in one request (the kernel applies the name before the
 * master and the flags), so no tap is ever left half-claimed, and one that
 * lost its bridge meanwhile is attached again.
 */
export function planClaimPoolTap(inputs: { poolTap: string; tap: string; bridge: string }): NetworkStep[] {
  return [
    {
      argv: [
        "ip",
        "link",
        "set",
        "dev",
        validateInterfaceName(inputs.poolTap),
        "name",
        validateInterfaceName(inputs.tap),
        "master",
        validateInterfaceName(inputs.bridge),
        "up",
      ],
    },
  ];
}

export interface PoolReconcilePlan {
  /** Pool taps in a state a VM can claim, kept (at most the pool's size). */
  adopt: string[];
  /** Pool taps to delete: detached, on another bridge, up, or beyond the size. */
  remove: string[];
}

/**
 * What to do with the pool taps a daemon finds at start (`found`: the
 * `ip -j link show type tun` entries; others than `bgp-` are ignored). A
 * tap is adopted when it is attached to `bridge` and down, as the pool
 * leaves it; the lowest-numbered first, up to `size`.
 */
export function planPoolReconcile(inputs: {
  found: readonly IpLinkInfo[];
  bridge: string;
  size: number;
}): PoolReconcilePlan {
  const pool = inputs.found
    .filter((entry) => entry.ifname.startsWith(POOL_TAP_PREFIX))
    .sort((a, b) => sortKey(a.ifname) - sortKey(b.ifname) || a.ifname.localeCompare(b.ifname));
  const adopt: string[] = [];
  const remove: string[] = [];
  for (const entry of pool) {
    const usable =
      entry.master === inputs.bridge &&
      !(entry.flags ?? []).includes("UP") &&
      Number.isFinite(poolIndex(entry.ifname));
    if (usable && adopt.length < inputs.size) adopt.push(entry.ifname);
    else remove.push(entry.ifname);
  }
  return { adopt, remove };
}

/** Pool names in their numeric order, names banger would not make last. */
function sortKey(name: string): number {
  const index = poolIndex(name);
  return Number.isFinite(index) ? index : Number.MAX_SAFE_INTEGER;
}

/** The number of a pool tap name, or NaN when it is not one banger would make. */
function poolIndex(name: string): number {
  const suffix = name.slice(POOL_TAP_PREFIX.length);
  return /^(0|[1-9]\d{0,3})$/.test(suffix) ? Number(suffix) : Number.NaN;
}
