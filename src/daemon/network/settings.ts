/**
 * Each VM's network settings (egress policy, published ports): stored in
 * `vms/<id>/network.json`, so they live and die with the VM, and kept in
 * memory by guest address for the DNS server while the VM runs.
 *
 * A create names its settings before the VM has a directory: `stage` holds
 * them under the VM's name until its first start reads them (`load`) and
 * writes the file; `unstage` drops what a failed create left.
 */
import { join } from "node:path";
import {
  type EgressPolicy,
  formatEgressPolicy,
  type PublishedPort,
  parseEgressPolicy,
  parsePublishSpec,
} from "../../core/network/index.ts";

export interface VmNetworkSettings {
  egress: EgressPolicy;
  publish: readonly PublishedPort[];
}

export interface VmRef {
  vmId: string;
  vmName: string;
  guestIp: string;
}

export interface NetworkSettings {
  /** The VM's settings (stored, staged, or the defaults), remembered for its address. */
  load(vm: VmRef): Promise<VmNetworkSettings>;
  /** The stored settings without remembering them (vm show, vm ls). */
  peek(vmId: string): Promise<VmNetworkSettings>;
  /** The egress policy of a running VM's address, if the address is a VM's. */
  policyOf(ip: string): EgressPolicy | undefined;
  store(vm: VmRef, settings: VmNetworkSettings): Promise<void>;
  stage(name: string, settings: Partial<VmNetworkSettings>): void;
  unstage(name: string): void;
  forget(ip: string): void;
}

export interface SettingsFiles {
  read(path: string): Promise<string | undefined>;
  /** Atomic: a reader sees the old file or the new one. */
  write(path: string, text: string): Promise<void>;
}

export function createNetworkSettings(options: {
  defaultEgress: EgressPolicy;
  vmDir(vmId: string): string;
  files: SettingsFiles;
}): NetworkSettings {
  const byIp = new Map<string, EgressPolicy>();
  const staged = new Map<string, Partial<VmNetworkSettings>>();
  const file = (vmId: string) => join(options.vmDir(vmId), "network.json");
  const defaults = (): VmNetworkSettings => ({ egress: options.defaultEgress, publish: [] });

  const readStored = async (vmId: string): Promise<VmNetworkSettings | undefined> => {
    const text = await options.files.read(file(vmId));
    if (text === undefined) return undefined;
    try {
      const parsed = JSON.parse(text) as { egress?: unknown; publish?: unknown };
      return {
        egress: typeof parsed.egress === "string" ? parseEgressPolicy(parsed.egress) : options.defaultEgress,
        publish: Array.isArray(parsed.publish)
          ? parsed.publish.filter((spec): spec is string => typeof spec === "string").map(parsePublishSpec)
          : [],
      };
    } catch {
      // A torn or foreign file: the defaults, never a crash.
      return undefined;
    }
  };

  const store = async (vm: VmRef, settings: VmNetworkSettings) => {
    const publish = settings.publish.map(
      (port) => `${port.hostIp}:${port.hostPort}:${port.guestPort}/${port.protocol}`,
    );
    await options.files.write(
      file(vm.vmId),
      `${JSON.stringify({ egress: formatEgressPolicy(settings.egress), publish })}\n`,
    );
    byIp.set(vm.guestIp, settings.egress);
  };

  return {
    async load(vm) {
      let settings = await readStored(vm.vmId);
      if (settings === undefined) {
        settings = { ...defaults(), ...staged.get(vm.vmName) };
        staged.delete(vm.vmName);
        await store(vm, settings);
      }
      byIp.set(vm.guestIp, settings.egress);
      return settings;
    },
    peek: async (vmId) => (await readStored(vmId)) ?? defaults(),
    policyOf: (ip) => byIp.get(ip),
    store,
    stage: (name, settings) => void staged.set(name, settings),
    unstage: (name) => void staged.delete(name),
    forget: (ip) => void byIp.delete(ip),
  };
}
