/**
 * Host networking, the pure half. src/sys/network runs these plans.
 *
 * Model: one Linux bridge (config `network.bridge`) carries the subnet's
 * first host address as the guests' gateway; every running VM has one tap
 * (prefix `bgr-`) enslaved to it; each guest gets a static address from the
 * subnet (kernel `ip=` argument, see `guestKernelIpArg`).
 *
 * - ipv4.ts: subnet math, address allocation, interface names;
 * - ip-plans.ts: `ip` plans for the bridge and taps, steps with undo and
 *   tolerated errors.
 */
export * from "./ip-plans.ts";
export * from "./ipv4.ts";
