/**
 * Host networking executor: runs the plans of src/core/network through the
 * Runner to keep the bridge up and create, list and remove VM taps.
 *
 * Every operation is idempotent so the daemon can repeat it after a crash:
 * - ensureBridge reads the bridge and runs only the missing steps (none when
 *   it is up to date); calls are serialised so two VM starts do not race.
 * - createTap: a tap of the same name that already exists is deleted and
 *   created afresh. Tap names derive from the VM id, and the caller creates
 *   the tap only while no VMM of that VM runs, so an existing one is debris
 *   of a crash whose state (master, flags, owner) we do not trust.
 * - deleteTap / teardownBridge: a missing device is success.
 * Failures of `ip` become NETWORK_FAILED naming the device, or
 * PERMISSION_DENIED when the kernel said "Operation not permitted".
 */

import { errorMessage } from "../../core/async/index.ts";
import { Mutex } from "../../core/concurrency/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  gatewayCidr,
  type IpCommand,
  type IpLinkInfo,
  parseIpJson,
  parseSubnet,
  planCreateTap,
  planDeleteBridge,
  planDeleteTap,
  planEnsureBridge,
  planListTunDevices,
  planShowDevice,
  type Subnet,
} from "../../core/network/index.ts";
import { TAP_PREFIX } from "../../core/vm/index.ts";
import { BangerError, ErrorCode, isBangerError } from "../../protocol/index.ts";
import { CommandFailedError, type Runner } from "../runner/index.ts";

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
  /** Names of tun/tap devices with the banger prefix. */
  listTaps(): Promise<string[]>;
  /** Deletes banger taps not in `owned` (reconcile); returns the names removed. */
  removeLeftoverTaps(owned: ReadonlySet<string>): Promise<string[]>;
  /** Deletes the bridge (tests, uninstall); a missing bridge is fine. Taps are left to `removeLeftoverTaps`. */
  teardownBridge(): Promise<void>;
}

export function createHostNetwork(options: HostNetworkOptions): HostNetwork {
  const { runner, bridge } = options;
  const subnet = typeof options.subnet === "string" ? parseSubnet(options.subnet) : options.subnet;
  const logger = options.logger.child({ component: "network", bridge });
  const bridgeLock = new Mutex();

  const run = async (device: string, argv: IpCommand, signal?: AbortSignal) => {
    try {
      return await runner.run(argv, { signal });
    } catch (error) {
      throw translateIpError(device, argv, error);
    }
  };

  const readDevice = async (device: string): Promise<IpLinkInfo | undefined> => {
    const argv = planShowDevice(device);
    const result = await runner.run(argv, { allowFailure: true });
    if (result.code !== 0) {
      if (isMissingDevice(result.stderr)) return undefined;
      throw translateIpError(device, argv, undefined, result.stderr);
    }
    return parseIpJson(result.stdout).find((entry) => entry.ifname === device);
  };

  const deleteDevice = async (device: string, plan: IpCommand[]) => {
    for (const argv of plan) {
      const result = await runner.run(argv, { allowFailure: true });
      if (result.code === 0) {
        logger.debug("deleted network device", { device });
      } else if (!isMissingDevice(result.stderr)) {
        throw translateIpError(device, argv, undefined, result.stderr);
      }
    }
  };

  const createTapOnce = async (tap: string, signal?: AbortSignal) => {
    const [add, attach] = planCreateTap({ tap, bridge }) as [IpCommand, IpCommand];
    await run(tap, add, signal);
    try {
      await run(tap, attach, signal);
    } catch (error) {
      await deleteDevice(tap, planDeleteTap(tap)).catch((undoError: unknown) =>
        logger.warn("could not remove half-created tap", { tap, error: String(undoError) }),
      );
      throw error;
    }
  };

  const listTaps = async (): Promise<string[]> => {
    const argv = planListTunDevices();
    const result = await run(bridge, argv);
    return parseIpJson(result.stdout)
      .map((entry) => entry.ifname)
      .filter((name) => name.startsWith(TAP_PREFIX))
      .sort();
  };

  return {
    bridge,
    subnet,

    ensureBridge(signal) {
      return bridgeLock.run(async () => {
        const current = await readDevice(bridge);
        const steps = planEnsureBridge({ bridge, gatewayCidr: gatewayCidr(subnet), current });
        for (const argv of steps) {
          try {
            await run(bridge, argv, signal);
          } catch (error) {
            // Another process added the same address meanwhile: the goal holds.
            if (
              argv[1] === "addr" &&
              isBangerError(error) &&
              /already assigned|File exists/i.test(error.message)
            ) {
              continue;
            }
            throw error;
          }
        }
        if (steps.length > 0)
          logger.info("bridge ready", { gateway: gatewayCidr(subnet), steps: steps.length });
      });
    },

    async createTap(tap, signal) {
      try {
        await createTapOnce(tap, signal);
      } catch (error) {
        if (!(isBangerError(error) && /busy|exists/i.test(error.message))) throw error;
        logger.warn("replacing leftover tap", { tap });
        await deleteDevice(tap, planDeleteTap(tap));
        await createTapOnce(tap, signal);
      }
      logger.debug("tap created", { tap });
    },

    deleteTap(tap) {
      return deleteDevice(tap, planDeleteTap(tap));
    },

    listTaps,

    async removeLeftoverTaps(owned) {
      const removed: string[] = [];
      for (const tap of await listTaps()) {
        if (owned.has(tap)) continue;
        await deleteDevice(tap, planDeleteTap(tap));
        logger.info("removed leftover tap", { tap });
        removed.push(tap);
      }
      return removed;
    },

    teardownBridge() {
      return bridgeLock.run(() => deleteDevice(bridge, planDeleteBridge(bridge)));
    },
  };
}

/** `ip` says one of these when the device does not exist. */
function isMissingDevice(stderr: string): boolean {
  return /does not exist|Cannot find device|No such device/i.test(stderr);
}

function translateIpError(device: string, argv: IpCommand, error: unknown, stderrText?: string): Error {
  if (isBangerError(error)) return error;
  const stderr = stderrText ?? stderrOf(error) ?? errorMessage(error);
  const detail = stderr.trim().split("\n").slice(-3).join("; ");
  const data = { device, argv: [...argv] };
  if (/Operation not permitted/i.test(stderr)) {
    return new BangerError(
      ErrorCode.PERMISSION_DENIED,
      `not permitted to change network device ${device} (${argv.join(" ")}): ${detail}`,
      { cause: error, data },
    );
  }
  return new BangerError(
    ErrorCode.NETWORK_FAILED,
    `network device ${device}: \`${argv.join(" ")}\` failed: ${detail}`,
    { cause: error, data },
  );
}

function stderrOf(error: unknown): string | undefined {
  return error instanceof CommandFailedError ? error.result.stderr : undefined;
}
