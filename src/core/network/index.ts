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
 *   tolerated errors;
 * - nft-plans.ts: the firewall (NAT, isolation, anti-spoofing, egress) as
 *   one atomic nft script;
 * - dns-zone.ts: answers for the `vm` zone and the guest reverse zone from a
 *   snapshot of the VMs, query checks, the egress name filter;
 * - ports.ts: `--publish` and port-forward specs, guest listening sockets;
 * - egress.ts: the egress policy text and the name filter;
 * - dns-cache.ts: the forwarder's bounded TTL cache; resolv-conf.ts: its upstreams;
 * - dns-frames.ts: DNS over TCP length-prefixed framing;
 * - tap-pool.ts: pool tap names, their `ip` plans, what to adopt at start.
 */
export * from "./dns-cache.ts";
export * from "./dns-frames.ts";
export * from "./dns-zone.ts";
export * from "./egress.ts";
export * from "./ip-plans.ts";
export * from "./ipv4.ts";
export * from "./nft-plans.ts";
export * from "./ports.ts";
export * from "./resolv-conf.ts";
export * from "./tap-pool.ts";
