/**
 * The firewall executor: applies scripts planned by core/network/nft-plans
 * with `nft -f -` (one atomic transaction each) and reads the tables back.
 * Reading a table that does not exist is "absent", never an error.
 * Failures become NETWORK_FAILED naming the nft table and the argv, or
 * PERMISSION_DENIED when the kernel said "Operation not permitted".
 */
import type { Logger } from "../../core/log/index.ts";
import {
  countRules,
  FIREWALL_TABLE,
  parseDropCounts,
  parseFirewallSignature,
} from "../../core/network/index.ts";
import type { Runner } from "../runner/index.ts";
import { runSteps, translateNetworkError } from "./steps.ts";

export interface Firewall {
  /** Applies one planned script atomically; an empty script does nothing. */
  apply(script: string, signal?: AbortSignal): Promise<void>;
  /** The signature comment of `inet banger`, or undefined when the table is absent. */
  signature(): Promise<string | undefined>;
  /** Rules in both banger tables, or undefined when `inet banger` is absent. */
  ruleCount(): Promise<number | undefined>;
  /** Dropped-packet counts by guest address. */
  dropCounts(): Promise<Map<string, number>>;
  /** The whole ruleset as JSON (doctor looks for other tables' drop policies). */
  ruleset(): Promise<string>;
}

const DEVICE = `nft table ${FIREWALL_TABLE}`;
const MISSING_TABLE = /No such file or directory|does not exist/i;

export function createFirewall(options: { runner: Runner; logger: Logger }): Firewall {
  const { runner } = options;
  const logger = options.logger.child({ component: "firewall" });

  /** stdout of a read, or undefined when the table is missing. */
  const read = async (argv: readonly string[]): Promise<string | undefined> => {
    const result = await runner.run(argv, { allowFailure: true }).catch((error: unknown) => {
      throw translateNetworkError(DEVICE, argv, error);
    });
    if (result.code === 0) return result.stdout;
    if (MISSING_TABLE.test(result.stderr)) return undefined;
    throw translateNetworkError(DEVICE, argv, undefined, result.stderr);
  };

  return {
    async apply(script, signal) {
      if (script === "") return;
      await runSteps([{ argv: ["nft", "-f", "-"] }], {
        runner,
        logger,
        device: DEVICE,
        signal,
        input: script,
      });
      logger.debug("firewall script applied", { lines: script.split("\n").length - 1 });
    },
    async signature() {
      const listing = await read(["nft", "list", "table", "inet", FIREWALL_TABLE]);
      return listing === undefined ? undefined : parseFirewallSignature(listing);
    },
    async ruleCount() {
      const inet = await read(["nft", "-j", "list", "table", "inet", FIREWALL_TABLE]);
      if (inet === undefined) return undefined;
      const bridge = await read(["nft", "-j", "list", "table", "bridge", FIREWALL_TABLE]);
      return countRules(inet) + (bridge === undefined ? 0 : countRules(bridge));
    },
    async dropCounts() {
      const json = await read(["nft", "-j", "list", "set", "inet", FIREWALL_TABLE, "egress_dropped"]);
      return json === undefined ? new Map() : parseDropCounts(json);
    },
    async ruleset() {
      return (await read(["nft", "-j", "list", "ruleset"])) ?? '{"nftables":[]}';
    },
  };
}
