/**
 * Host networking (NAT and isolation, DNS, published ports) built from its
 * real adapters in src/sys: the firewall, ip_forward, the DNS listeners and
 * upstreams, the port relays, resolved routing and the settings files.
 */
import { join } from "node:path";
import type { Config } from "../../../core/config/index.ts";
import type { Logger } from "../../../core/log/index.ts";
import { type Layout, vmPaths } from "../../../core/paths/index.ts";
import { createUpstream, resolvConfServers, startDnsServer } from "../../../sys/dns/index.ts";
import { createNodeFs } from "../../../sys/fs/index.ts";
import {
  applyResolvedRouting,
  createFirewall,
  createIpForward,
  type HostNetwork,
  localAddressCheck,
  startPortProxy,
} from "../../../sys/network/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { Store } from "../../../sys/store/index.ts";
import { createNetworking, type Networking } from "../../network/index.ts";

export function createHostNetworking(deps: {
  config: Config;
  layout: Layout;
  runner: Runner;
  logger: Logger;
  store: Pick<Store, "listVms">;
  hostNetwork: HostNetwork;
}): Networking {
  const { config, layout, runner, hostNetwork } = deps;
  const { subnet } = hostNetwork;
  const fs = createNodeFs();
  return createNetworking({
    config,
    subnet,
    logger: deps.logger.child({ svc: "network" }),
    bridge: hostNetwork,
    firewall: createFirewall({ runner, logger: deps.logger }),
    ipForward: createIpForward({ stateFile: join(layout.runtimeDir, "ip_forward.was") }),
    startDnsServer,
    startProxy: startPortProxy,
    upstream: createUpstream({
      servers: resolvConfServers({
        file: "/etc/resolv.conf",
        exclude: new Set([subnet.gateway, "127.0.0.1"]),
      }),
      timeoutMs: 2000,
    }),
    files: {
      read: (path) =>
        fs.readFile(path).then(
          (data) => data.toString("utf8"),
          () => undefined,
        ),
      write: (path, text) => fs.writeFileAtomic(path, text),
    },
    vmDir: (vmId) => vmPaths(layout, vmId).dir,
    listVms: () => deps.store.listVms(),
    nowMs: () => Date.now(),
    isLocalAddress: localAddressCheck(),
    routeHost: () =>
      applyResolvedRouting({
        runner,
        bridge: config.network.bridge,
        gateway: subnet.gateway,
        domain: config.network.domain,
      }),
  });
}
