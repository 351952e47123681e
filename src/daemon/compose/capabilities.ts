/**
 * What is registered on top of the core daemon, in one list:
 *
 * - host features: host-wide state the daemon brings up once at start and
 *   takes down at stop (NAT for the guest subnet, a DNS responder). The
 *   composition root ensures them in this order after reconcile, deferring
 *   each one's teardown on the daemon's lifetime stack first, so a failure
 *   tears down the ones before it in reverse and stop does the same;
 * - per-VM hooks: run by the VM service at each VM start and stop in their
 *   phase (`VmHook` in daemon/vm/platform.ts), e.g. a VM's DNS record;
 * - image sources: ways to make an image a ref names (`ImageSource` in
 *   daemon/image/source.ts), tried after the built-in catalog build, in
 *   this order; each publishes through the image store's one path.
 *
 * Host networking (NAT and isolation, DNS, published ports) is registered
 * here: its host features and VM hooks, plus its RPC handlers and doctor
 * checks, which the composition root adds when it is present.
 *
 * Adding a capability is a new file that builds it plus one entry here.
 * Nothing is registered that does not work.
 */
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import type { HostNetwork } from "../../sys/network/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { Store } from "../../sys/store/index.ts";
import type { ImageSource } from "../image/index.ts";
import type { Networking } from "../network/index.ts";
import type { VmHook } from "../vm/index.ts";
import { createHostNetworking } from "./adapters/networking.ts";

/**
 * A host-wide feature owned by the composition root.
 * - `ensure` brings it up; idempotent, since a previous daemon may have left
 *   it up. A throw fails the daemon's start, so a feature that is optional
 *   on some hosts logs its absence and resolves instead.
 * - `teardown` takes it down; idempotent, and it also runs after an `ensure`
 *   that failed or was cancelled half-way.
 */
export interface HostFeature {
  readonly name: string;
  ensure(signal: AbortSignal): Promise<void>;
  teardown(): Promise<void>;
}

export interface Capabilities {
  readonly hostFeatures: readonly HostFeature[];
  readonly vmHooks: readonly VmHook[];
  readonly imageSources: readonly ImageSource[];
  /** Host networking, when registered: its RPC handlers and doctor checks come from it. */
  readonly networking?: Networking | undefined;
}

/** What a capability may be built from. */
export interface CapabilityDeps {
  config: Config;
  layout: Layout;
  runner: Runner;
  logger: Logger;
  /** The VM rows (DNS names; which VMs' firewall elements and ports to restore). */
  store: Pick<Store, "listVms">;
  /** The bridge and taps, the one the VM service uses too. */
  hostNetwork: HostNetwork;
}

export type RegisterCapabilities = (deps: CapabilityDeps) => Capabilities;

export const registerCapabilities: RegisterCapabilities = (deps) => {
  const networking = createHostNetworking(deps);
  return { hostFeatures: networking.features, vmHooks: networking.hooks, imageSources: [], networking };
};

/** Ensures each feature in order; each one's teardown is deferred on `life` before its ensure runs. */
export async function ensureHostFeatures(
  features: readonly HostFeature[],
  life: AsyncDisposableStack,
  options: { signal: AbortSignal; logger: Logger },
): Promise<void> {
  for (const feature of features) {
    life.defer(() => feature.teardown());
    await feature.ensure(options.signal);
    options.logger.info("host feature up", { feature: feature.name });
  }
}
