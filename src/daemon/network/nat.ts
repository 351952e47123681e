/**
 * The NAT feature: the firewall tables (core/network/nft-plans), the bridge
 * and `ip_forward`, host-wide; plus the VM hook that adds each running VM's
 * elements (anti-spoofing triple, egress membership) at start and removes
 * them at stop.
 *
 * - `ensure` (daemon start, after reconcile), only when the store holds a
 *   VM (a daemon that never runs one changes nothing in its namespace):
 *   ip_forward on, then one `nft -f -` with the wanted tables (rebuilt only
 *   when their signature changed) and the elements of every active VM. The
 *   hook does the same at a VM start when it has not been done; a failure
 *   (no nft, no root) is logged at daemon start and fails the VM start with
 *   the reason, since a VM must never run without its isolation.
 * - `teardown` (daemon stop): only when this daemon brought the network up
 *   and no VM is left running, the tables, the bridge and leftover taps go,
 *   and ip_forward is restored; with VMs running everything stays for them
 *   and the next daemon.
 */
import type { Logger } from "../../core/log/index.ts";
import {
  type FirewallInputs,
  type FirewallVm,
  planFirewallApply,
  planFirewallTeardown,
  planVmElements,
} from "../../core/network/index.ts";
import { macForVmId } from "../../core/vm/index.ts";
import type { Firewall, IpForward } from "../../sys/network/index.ts";
import type { VmHook, VmHookContext } from "../vm/index.ts";
import type { HostFeature } from "./feature.ts";
import type { NetworkSettings } from "./settings.ts";

export interface NatDeps {
  firewall: Firewall;
  ipForward: IpForward;
  inputs: FirewallInputs;
  settings: NetworkSettings;
  /** The VMs whose VMM should be alive, with their taps. */
  activeVms(): Promise<readonly VmHookContext[]>;
  /** True while any VM is still running (teardown then keeps everything). */
  anyVmRunning(): boolean;
  /** True when the store holds any VM at all. */
  anyVm(): boolean;
  /** True when another feature made the bridge (the DNS server binds the gateway), so teardown removes it too. */
  bridgeUsed(): boolean;
  /** Removes the bridge and every banger tap. */
  removeBridge(): Promise<void>;
  logger: Logger;
}

export interface NatFeature extends HostFeature {
  readonly hook: VmHook;
  /** Why the last ensure failed, or undefined when the tables are in place. */
  readonly down: string | undefined;
  /** Whether this daemon has tried to bring the network up (it waits for the first VM). */
  readonly started: boolean;
}

export function createNatFeature(deps: NatDeps): NatFeature {
  const logger = deps.logger.child({ feature: "nat" });
  let down: string | undefined = "not ensured yet";
  /** Whether this daemon changed the namespace (and so owns the teardown). */
  let touched = false;

  const firewallVm = async (context: VmHookContext): Promise<FirewallVm> => ({
    tap: context.tap,
    mac: macForVmId(context.vmId),
    ip: context.guestIp,
    egress: (await deps.settings.load(context)).egress,
  });

  const ensure = async (signal?: AbortSignal) => {
    touched = true;
    try {
      await deps.ipForward.enable();
      const vms = await Promise.all((await deps.activeVms()).map(firewallVm));
      const script = planFirewallApply({
        inputs: deps.inputs,
        currentSignature: await deps.firewall.signature(),
        vms,
      });
      await deps.firewall.apply(script, signal);
      down = undefined;
      logger.info("firewall in place", { vms: vms.length });
    } catch (error) {
      down = error instanceof Error ? error.message : String(error);
      throw error;
    }
  };

  return {
    name: "nat",
    get down() {
      return down;
    },
    get started() {
      return touched;
    },
    async ensure(signal) {
      if (!deps.anyVm()) return;
      await ensure(signal).catch((error: unknown) =>
        logger.warn("NAT and isolation are not in place; VM starts will retry", { err: String(error) }),
      );
    },
    async teardown() {
      if (!touched && !deps.bridgeUsed()) return;
      if (deps.anyVmRunning()) {
        logger.info("VMs still run: firewall, bridge and ip_forward stay");
        return;
      }
      await deps.firewall.apply(planFirewallTeardown());
      await deps.removeBridge();
      await deps.ipForward.restore();
      logger.info("firewall, bridge and taps removed");
    },
    hook: {
      name: "nat",
      phase: "before-boot",
      async start(context) {
        if (down !== undefined) await ensure(context.signal);
        await deps.firewall.apply(planVmElements(await firewallVm(context), "add"), context.signal);
      },
      async stop(context) {
        const vm = await firewallVm(context);
        // Adding first makes the delete succeed whether or not the elements were there.
        await deps.firewall.apply(planVmElements(vm, "add") + planVmElements(vm, "delete"));
        deps.settings.forget(context.guestIp);
      },
    },
  };
}
