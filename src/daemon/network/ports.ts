/**
 * Published ports: while a VM runs, the daemon listens on each of its
 * `--publish` host addresses and relays to the guest. Listeners open at
 * every start (before boot, so a busy host port fails the start at once,
 * naming the port), close at every stop, and are reopened for running VMs
 * when a new daemon starts (`ensure`). `teardown` closes every listener of
 * this daemon process; the VMs keep running.
 */
import type { Logger } from "../../core/log/index.ts";
import { formatPublishedPort } from "../../core/network/index.ts";
import type { PortProxy, PortProxyOptions } from "../../sys/network/index.ts";
import type { VmHook, VmHookContext } from "../vm/index.ts";
import type { HostFeature } from "./feature.ts";
import type { NetworkSettings } from "./settings.ts";

export interface PortsDeps {
  settings: NetworkSettings;
  startProxy(options: PortProxyOptions): Promise<PortProxy>;
  activeVms(): Promise<readonly VmHookContext[]>;
  logger: Logger;
}

export interface PortsFeature extends HostFeature {
  readonly hook: VmHook;
}

export function createPortsFeature(deps: PortsDeps): PortsFeature {
  const logger = deps.logger.child({ feature: "ports" });
  const open = new Map<string, PortProxy[]>();

  const release = async (vmId: string) => {
    const proxies = open.get(vmId) ?? [];
    open.delete(vmId);
    for (const proxy of proxies.reverse()) await proxy.close();
  };

  const publish = async (context: VmHookContext) => {
    await release(context.vmId);
    const { publish: ports } = await deps.settings.load(context);
    const proxies: PortProxy[] = [];
    open.set(context.vmId, proxies);
    try {
      for (const port of ports) {
        proxies.push(
          await deps.startProxy({
            protocol: port.protocol,
            listen: { host: port.hostIp, port: port.hostPort },
            target: { host: context.guestIp, port: port.guestPort },
            logger,
          }),
        );
        logger.info("published", { vm: context.vmName, port: formatPublishedPort(port) });
      }
    } catch (error) {
      await release(context.vmId);
      throw error;
    }
  };

  return {
    name: "ports",
    async ensure() {
      for (const vm of await deps.activeVms()) {
        await publish(vm).catch((error: unknown) =>
          logger.warn("could not republish a running VM's ports", { vm: vm.vmName, err: String(error) }),
        );
      }
    },
    async teardown() {
      for (const vmId of [...open.keys()]) await release(vmId);
    },
    hook: {
      name: "ports",
      phase: "before-boot",
      start: (context) => publish(context),
      stop: (context) => release(context.vmId),
    },
  };
}
