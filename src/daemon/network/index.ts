/**
 * Host networking features for the composition root: NAT with isolation
 * (nat.ts), the DNS server (dns.ts), published ports (ports.ts), per-VM
 * settings (settings.ts).
 * `createNetworking` wires them from adapters the composition root builds
 * in src/sys; it returns the host features in the order they are ensured
 * (torn down in reverse) and the VM hooks in the order they run.
 */
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  createDnsCache,
  type EgressPolicy,
  type FirewallInputs,
  parseEgressPolicy,
  planEgressAllow,
  planEgressChange,
  type Subnet,
} from "../../core/network/index.ts";
import { isActiveState, tapNameForVmId, type VmRecord } from "../../core/vm/index.ts";
import type { DoctorCheck } from "../../protocol/index.ts";
import type { DnsServer, DnsServerOptions, Upstream } from "../../sys/dns/index.ts";
import type { Firewall, IpForward, PortProxy, PortProxyOptions } from "../../sys/network/index.ts";
import type { VmHook, VmHookContext } from "../vm/index.ts";
import { createDnsFeature, type DnsFeature } from "./dns.ts";
import { networkDoctorChecks } from "./doctor.ts";
import type { HostFeature } from "./feature.ts";
import { createNatFeature, type NatFeature } from "./nat.ts";
import { createPortsFeature } from "./ports.ts";
import { createNetworkSettings, type NetworkSettings, type SettingsFiles } from "./settings.ts";

export type { DnsFeature } from "./dns.ts";
export type { HostFeature } from "./feature.ts";
export type { NatFeature } from "./nat.ts";
export type { NetworkSettings, SettingsFiles, VmNetworkSettings } from "./settings.ts";
export { createTapPool, type TapPool, type TapPoolStatus, tapPoolCheck } from "./tap-pool.ts";

export interface NetworkingDeps {
  config: Config;
  subnet: Subnet;
  logger: Logger;
  /** The bridge and taps (sys/network HostNetwork). */
  bridge: {
    ensureBridge(signal?: AbortSignal): Promise<void>;
    bridgeAddresses(): Promise<string[] | undefined>;
    teardownBridge(): Promise<void>;
    removeLeftoverTaps(owned: ReadonlySet<string>): Promise<string[]>;
  };
  firewall: Firewall;
  ipForward: IpForward;
  startDnsServer(options: DnsServerOptions): Promise<DnsServer>;
  startProxy(options: PortProxyOptions): Promise<PortProxy>;
  upstream: Upstream;
  files: SettingsFiles;
  vmDir(vmId: string): string;
  listVms(): VmRecord[];
  nowMs(): number;
  routeHost(): Promise<{ ok: boolean; detail: string }>;
  isLocalAddress(address: string): boolean;
}

export interface Networking {
  readonly features: readonly HostFeature[];
  readonly hooks: readonly VmHook[];
  readonly nat: NatFeature;
  readonly dns: DnsFeature;
  readonly settings: NetworkSettings;
  /** Stores a VM's egress policy; for a running VM (`live`) the firewall changes in the same call. */
  setEgress(vm: VmHookContext, policy: EgressPolicy, live: boolean): Promise<void>;
  /** Packets dropped by egress policy, by guest address. */
  dropCounts(): Promise<Map<string, number>>;
  /** The network's doctor checks (doctor.ts). */
  doctor(): Promise<DoctorCheck[]>;
}

export function createNetworking(deps: NetworkingDeps): Networking {
  const { config, subnet } = deps;
  const inputs: FirewallInputs = { bridge: config.network.bridge, subnet, vmToVm: config.network.vm_to_vm };
  const settings = createNetworkSettings({
    defaultEgress: parseEgressPolicy(config.network.egress),
    vmDir: deps.vmDir,
    files: deps.files,
  });
  const contextOf = (vm: VmRecord): VmHookContext => ({
    vmId: vm.id,
    vmName: vm.name,
    guestIp: vm.guestIp,
    tap: tapNameForVmId(vm.id),
  });
  const activeVms = async () =>
    deps
      .listVms()
      .filter((vm) => isActiveState(vm.state))
      .map(contextOf);
  // The DNS feature is made after NAT (it is ensured after it); NAT's teardown asks it late.
  let dnsStarted = () => false;
  const nat = createNatFeature({
    firewall: deps.firewall,
    ipForward: deps.ipForward,
    inputs,
    settings,
    activeVms,
    anyVmRunning: () => deps.listVms().some((vm) => isActiveState(vm.state)),
    anyVm: () => deps.listVms().length > 0,
    bridgeUsed: () => dnsStarted(),
    removeBridge: async () => {
      await deps.bridge.removeLeftoverTaps(new Set());
      await deps.bridge.teardownBridge();
    },
    logger: deps.logger,
  });
  const dns = createDnsFeature({
    domain: config.network.domain,
    subnet,
    port: config.network.dns_port,
    ensureBridge: (signal) => deps.bridge.ensureBridge(signal),
    startServer: deps.startDnsServer,
    upstream: deps.upstream,
    cache: createDnsCache({ maxEntries: 4096, maxTtlSeconds: 3600, nowMs: deps.nowMs }),
    records: () => deps.listVms().map((vm) => ({ name: vm.name, ip: vm.guestIp })),
    settings,
    routeHost: deps.routeHost,
    isLocalAddress: deps.isLocalAddress,
    anyVm: () => deps.listVms().length > 0,
    allowEgress: (source, addresses, ttl) => deps.firewall.apply(planEgressAllow(source, addresses, ttl)),
    logger: deps.logger,
  });
  dnsStarted = () => dns.started;
  const dnsHook: VmHook = {
    name: "dns",
    phase: "before-boot",
    // The bridge exists now; a DNS server that could not start with the daemon starts here.
    start: async ({ signal }) => {
      dns.invalidate();
      await dns.up(signal);
    },
    stop: async () => dns.invalidate(),
  };
  const ports = createPortsFeature({ settings, startProxy: deps.startProxy, activeVms, logger: deps.logger });
  return {
    features: [nat, dns, ports],
    hooks: [nat.hook, dnsHook, ports.hook],
    nat,
    dns,
    settings,
    async setEgress(vm, policy, live) {
      const current = await settings.peek(vm.vmId);
      if (live) await deps.firewall.apply(planEgressChange(vm.guestIp, current.egress, policy));
      await settings.store(vm, { ...current, egress: policy });
      if (!live) settings.forget(vm.guestIp);
    },
    dropCounts: () => deps.firewall.dropCounts(),
    doctor: () =>
      networkDoctorChecks({
        bridge: config.network.bridge,
        subnet,
        domain: config.network.domain,
        firewall: deps.firewall,
        ipForward: deps.ipForward,
        nat,
        dns,
        bridgeAddresses: () => deps.bridge.bridgeAddresses(),
      }),
  };
}
