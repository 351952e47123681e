/**
 * The VM service's host network (bridge, taps, guest IPs), over the one
 * HostNetwork of the daemon; a start's tap comes from the TAP pool.
 */
import { allocateGuestIp } from "../../../core/network/index.ts";
import type { HostNetwork } from "../../../sys/network/index.ts";
import type { TapPool } from "../../network/index.ts";
import type { VmNetwork } from "../../vm/index.ts";

export function createVmNetwork(host: HostNetwork, pool: Pick<TapPool, "createTap">): VmNetwork {
  const { subnet } = host;
  return {
    gateway: subnet.gateway,
    prefixLength: subnet.prefixLength,
    allocateIp: (used) => allocateGuestIp(subnet, used),
    ensureBridge: (signal) => host.ensureBridge(signal),
    createTap: (tap, signal) => pool.createTap(tap, signal),
    deleteTap: (tap) => host.deleteTap(tap),
    forgetNeighbor: (ip) => host.forgetNeighbor(ip),
    removeLeftoverTaps: (owned) => host.removeLeftoverTaps(owned),
  };
}
