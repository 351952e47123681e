/**
 * Host networking executors: they run the plans of src/core/network.
 * - host.ts: the bridge and the taps (`ip`);
 * - nft.ts: the firewall tables (`nft -f -`); ip-forward.ts: the sysctl;
 * - resolved.ts: systemd-resolved routing of the `.vm` zone to the gateway;
 * - proxy.ts: published ports (TCP and UDP relays to guests);
 * - local-addresses.ts: whether an address is one of this namespace's;
 * - counters.ts: a link's byte counters (idle detection);
 * - steps.ts: the step runner (undo on failure, tolerated errors) and the
 *   error mapping shared by every network executor.
 */
export * from "./counters.ts";
export * from "./host.ts";
export * from "./ip-forward.ts";
export * from "./local-addresses.ts";
export * from "./nft.ts";
export * from "./proxy.ts";
export * from "./resolved.ts";
