/** The VM service's host network (bridge, taps, guest IPs), built on src/sys/network. */
import type { Config } from "../../../core/config/index.ts";
import type { Logger } from "../../../core/log/index.ts";
import { allocateGuestIp, parseSubnet } from "../../../core/network/index.ts";
import { createHostNetwork } from "../../../sys/network/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { VmNetwork } from "../../vm/index.ts";

export function createVmNetwork(options: { runner: Runner; logger: Logger; config: Config }): VmNetwork {
  const subnet = parseSubnet(options.config.network.subnet);
  const host = createHostNetwork({
    runner: options.runner,
    logger: options.logger,
    bridge: options.config.network.bridge,
    subnet,
  });
  return {
    gateway: subnet.gateway,
    prefixLength: subnet.prefixLength,
    allocateIp: (used) => allocateGuestIp(subnet, used),
    ensureBridge: (signal) => host.ensureBridge(signal),
    createTap: (tap, signal) => host.createTap(tap, signal),
    deleteTap: (tap) => host.deleteTap(tap),
    removeLeftoverTaps: (owned) => host.removeLeftoverTaps(owned),
  };
}
