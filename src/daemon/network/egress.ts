/**
 * Each VM's egress policy: stored in `vms/<id>/network.json` (so it lives
 * and dies with the VM), defaulting to config `network.egress`, and kept in
 * memory by guest address for the DNS server while the VM runs.
 */
import { join } from "node:path";
import { type EgressPolicy, formatEgressPolicy, parseEgressPolicy } from "../../core/network/index.ts";

export interface EgressPolicies {
  /** The VM's stored policy (or the default), remembered for its address. */
  load(vm: { vmId: string; guestIp: string }): Promise<EgressPolicy>;
  /** The policy of a running VM's address, if the address is a VM's. */
  get(ip: string): EgressPolicy | undefined;
  /** Stores a VM's policy and remembers it for its address. */
  store(vm: { vmId: string; guestIp: string }, policy: EgressPolicy): Promise<void>;
  forget(ip: string): void;
}

export interface SettingsFiles {
  read(path: string): Promise<string | undefined>;
  /** Atomic: a reader sees the old file or the new one. */
  write(path: string, text: string): Promise<void>;
}

export function createEgressPolicies(options: {
  defaultPolicy: EgressPolicy;
  vmDir(vmId: string): string;
  files: SettingsFiles;
}): EgressPolicies {
  const byIp = new Map<string, EgressPolicy>();
  const file = (vmId: string) => join(options.vmDir(vmId), "network.json");

  const readStored = async (vmId: string): Promise<EgressPolicy> => {
    const text = await options.files.read(file(vmId));
    if (text === undefined) return options.defaultPolicy;
    try {
      const parsed = JSON.parse(text) as { egress?: unknown };
      return typeof parsed.egress === "string" ? parseEgressPolicy(parsed.egress) : options.defaultPolicy;
    } catch {
      // A torn or foreign file: the default, never a crash.
      return options.defaultPolicy;
    }
  };

  return {
    async load(vm) {
      const policy = await readStored(vm.vmId);
      byIp.set(vm.guestIp, policy);
      return policy;
    },
    get: (ip) => byIp.get(ip),
    async store(vm, policy) {
      await options.files.write(file(vm.vmId), `${JSON.stringify({ egress: formatEgressPolicy(policy) })}\n`);
      byIp.set(vm.guestIp, policy);
    },
    forget: (ip) => void byIp.delete(ip),
  };
}
