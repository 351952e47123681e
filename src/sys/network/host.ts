/**
 * The bridge and the taps: runs the `ip` plans of src/core/network through
 * the Runner to keep the bridge up and create, list and remove VM taps.
 *
 * Every operation is idempotent so the daemon can repeat it after a crash:
 * - ensureBridge reads the bridge and runs only the missing steps (none when
 *   it is up to date); calls are serialised so two VM starts do not race.
 * - createTap: a tap of the same name that already exists is deleted and
 *   created afresh. Tap names derive from the VM id, and the caller creates
 *   the tap only while no VMM of that VM runs, so an existing one is debris
 *   of a crash whose state (master, flags, owner) we do not trust.
 * - deleteTap / teardownBridge: a missing device is success.
 * - Pool taps (core/network tap-pool.ts): createPoolTap replaces a leftover
 *   of its name like createTap; claimPoolTap renames one to a VM's tap name
 *   and sets it up, replacing a leftover device of that name first.
 * Failures map to coded errors as `runSteps` (steps.ts) says.
 */

import { Mutex } from "../../core/concurrency/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  gatewayCidr,
  type IpLinkInfo,
  MISSING_DEVICE,
  NAME_TAKEN,
  POOL_TAP_PREFIX,
  parseIpJson,
  parseSubnet,
  planClaimPoolTap,
  planCreatePoolTap,
  planCreateTap,
  planDeleteDevice,
  planEnsureBridge,
  planForgetNeighbor,
  planListTunDevices,
  planShowDevice,
  type Subnet,
} from "../../core/network/index.ts";
import { TAP_PREFIX } from "../../core/vm/index.ts";
import { isBangerError } from "../../protocol/index.ts";
import type { Runner } from "../runner/index.ts";
import { runSteps, translateNetworkError } from "./steps.ts";

export interface HostNetworkOptions {
  runner: Runner;
  logger: Logger;
  bridge: string;
  /** CIDR ("10.77.0.0/24") or an already parsed subnet. */
  subnet: string | Subnet;
}

export interface HostNetwork {
  readonly bridge: string;
  readonly subnet: Subnet;
  /** Creates the bridge, adds the gateway address and sets it up, as far as needed. */
  ensureBridge(signal?: AbortSignal): Promise<void>;
  /** Creates `tap` on the bridge, replacing a leftover device of that name. */
  createTap(tap: string, signal?: AbortSignal): Promise<void>;
  /** Removes `tap`; a missing tap is fine. */
  deleteTap(tap: string): Promise<void>;
  /** Forgets the bridge's neighbour entry for `ip` (its next VM has another MAC); none is fine. */
  forgetNeighbor(ip: string): Promise<void>;
  /** Names of tun/tap devices with the banger prefix. */
  listTaps(): Promise<string[]>;
  /** Creates pool tap `tap` attached to the bridge, down; a leftover of that name is replaced. */
  createPoolTap(tap: string, signal?: AbortSignal): Promise<void>;
  /** Renames pool tap `poolTap` to `tap`, attaches it and sets it up; a leftover device named `tap` is replaced. */
  claimPoolTap(poolTap: string, tap: string, signal?: AbortSignal): Promise<void>;
  /** The pool taps (`bgp-` tun devices) with their master and flags. */
  listPoolTaps(): Promise<IpLinkInfo[]>;
  /** Deletes banger taps not in `owned` (reconcile); returns the names removed. */
  removeLeftoverTaps(owned: ReadonlySet<string>): Promise<string[]>;
  /** The bridge's IPv4 addresses ("a.b.c.d/n"), or undefined when it does not exist. */
  bridgeAddresses(): Promise<string[] | undefined>;
  /** Deletes the bridge (tests, uninstall); a missing bridge is fine. Taps are left to `removeLeftoverTaps`. */
  teardownBridge(): Promise<void>;
}

/** `ip tuntap add` of a name a device already has. */
const LEFTOVER = /busy|exists/i;

export function createHostNetwork(options: HostNetworkOptions): HostNetwork {
  const { runner, bridge } = options;
  const subnet = typeof options.subnet === "string" ? parseSubnet(options.subnet) : options.subnet;
  const logger = options.logger.child({ component: "network", bridge });
  const bridgeLock = new Mutex();

  const steps = (device: string, plan: Parameters<typeof runSteps>[0], signal?: AbortSignal) =>
    runSteps(plan, { runner, logger, device, signal });

  const readDevice = async (device: string): Promise<IpLinkInfo | undefined> => {
    const argv = planShowDevice(device);
    const result = await runner.run(argv, { allowFailure: true });
    if (result.code !== 0) {
      if (MISSING_DEVICE.test(result.stderr)) return undefined;
      throw translateNetworkError(device, argv, undefined, result.stderr);
    }
    return parseIpJson(result.stdout).find((entry) => entry.ifname === device);
  };

  const deleteDevice = async (device: string) => {
    if ((await steps(device, planDeleteDevice(device))) > 0)
      logger.debug("deleted network device", { device });
  };

  const listTunDevices = async (): Promise<IpLinkInfo[]> => {
    const argv = planListTunDevices();
    try {
      return parseIpJson((await runner.run(argv)).stdout);
    } catch (error) {
      throw translateNetworkError(bridge, argv, error);
    }
  };

  const listTaps = async (): Promise<string[]> =>
    (await listTunDevices())
      .map((entry) => entry.ifname)
      .filter((name) => name.startsWith(TAP_PREFIX))
      .sort();

  /** Runs `plan` for `device`; when the kernel says a device is in the way, deletes `debris` and runs it again. */
  const replacingLeftover = async (
    device: string,
    plan: Parameters<typeof runSteps>[0],
    debris: { name: string; matches: RegExp },
    signal?: AbortSignal,
  ) => {
    try {
      await steps(device, plan, signal);
    } catch (error) {
      if (!(isBangerError(error) && debris.matches.test(error.message))) throw error;
      logger.warn("replacing leftover tap", { tap: debris.name });
      await deleteDevice(debris.name);
      await steps(device, plan, signal);
    }
  };

  return {
    bridge,
    subnet,

    ensureBridge(signal) {
      return bridgeLock.run(async () => {
        const current = await readDevice(bridge);
        const plan = planEnsureBridge({ bridge, gatewayCidr: gatewayCidr(subnet), current });
        const changed = await steps(bridge, plan, signal);
        if (changed > 0) logger.info("bridge ready", { gateway: gatewayCidr(subnet), steps: changed });
      });
    },

    async createTap(tap, signal) {
      await replacingLeftover(tap, planCreateTap({ tap, bridge }), { name: tap, matches: LEFTOVER }, signal);
      logger.debug("tap created", { tap });
    },

    async createPoolTap(tap, signal) {
      await replacingLeftover(
        tap,
        planCreatePoolTap({ tap, bridge }),
        { name: tap, matches: LEFTOVER },
        signal,
      );
      logger.debug("pool tap created", { tap });
    },

    async claimPoolTap(poolTap, tap, signal) {
      const plan = planClaimPoolTap({ poolTap, tap, bridge });
      await replacingLeftover(poolTap, plan, { name: tap, matches: NAME_TAKEN }, signal);
      logger.debug("pool tap claimed", { poolTap, tap });
    },

    async listPoolTaps() {
      return (await listTunDevices()).filter((entry) => entry.ifname.startsWith(POOL_TAP_PREFIX));
    },

    deleteTap(tap) {
      return deleteDevice(tap);
    },

    async forgetNeighbor(ip) {
      await steps(bridge, planForgetNeighbor({ ip, bridge }));
    },

    listTaps,

    async removeLeftoverTaps(owned) {
      const removed: string[] = [];
      for (const tap of await listTaps()) {
        if (owned.has(tap)) continue;
        await deleteDevice(tap);
        logger.info("removed leftover tap", { tap });
        removed.push(tap);
      }
      return removed;
    },

    async bridgeAddresses() {
      const current = await readDevice(bridge);
      return current?.addr_info
        ?.filter((entry) => entry.family === "inet")
        .map((entry) => `${entry.local}/${entry.prefixlen}`);
    },

    teardownBridge() {
      return bridgeLock.run(() => deleteDevice(bridge));
    },
  };
}
