/**
 * systemd-resolved per-link routing for the `.vm` zone: `resolvectl dns
 * BRIDGE GATEWAY` and `resolvectl domain BRIDGE ~DOMAIN`, so the host
 * resolves VM names through banger's DNS server. Only where resolved runs
 * and only from the host's own network namespace: resolved serves that
 * namespace, and from another one the bridge's interface index would name
 * a different link. Resolved forgets the link's settings when the bridge
 * goes, so there is nothing to undo.
 */
import { existsSync, readlinkSync } from "node:fs";
import type { Runner } from "../runner/index.ts";

export interface ResolvedRouting {
  ok: boolean;
  detail: string;
}

export interface ResolvedProbes {
  /** Whether systemd-resolved runs (its stub resolv.conf exists). */
  running(): boolean;
  /** Whether this process is in the host's network namespace (that of pid 1). */
  inHostNetns(): boolean;
}

const hostProbes: ResolvedProbes = {
  running: () => existsSync("/run/systemd/resolve/stub-resolv.conf"),
  inHostNetns,
};

export async function applyResolvedRouting(options: {
  runner: Runner;
  bridge: string;
  gateway: string;
  domain: string;
  /** The host by default; tests pass their own. */
  probes?: ResolvedProbes;
}): Promise<ResolvedRouting> {
  const probes = options.probes ?? hostProbes;
  if (!probes.running()) {
    return {
      ok: false,
      detail: "systemd-resolved is not running; the host does not resolve .vm names by itself",
    };
  }
  if (!probes.inHostNetns()) {
    return { ok: false, detail: "the daemon runs in its own network namespace; resolved serves the host's" };
  }
  for (const argv of [
    ["resolvectl", "dns", options.bridge, options.gateway],
    ["resolvectl", "domain", options.bridge, `~${options.domain}`],
  ]) {
    const result = await options.runner.run(argv, { allowFailure: true }).catch((error: unknown) => ({
      code: 1,
      stderr: String(error),
    }));
    if (result.code !== 0)
      return { ok: false, detail: `\`${argv.join(" ")}\` failed: ${result.stderr.trim()}` };
  }
  return {
    ok: true,
    detail: `systemd-resolved sends *.${options.domain} to ${options.gateway} via ${options.bridge}`,
  };
}

function inHostNetns(): boolean {
  try {
    return readlinkSync("/proc/self/ns/net") === readlinkSync("/proc/1/ns/net");
  } catch {
    return false;
  }
}
