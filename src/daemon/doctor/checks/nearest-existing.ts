import { dirname } from "node:path";
import type { HostProbes } from "../../../sys/host/index.ts";

/** `path` itself, or its closest ancestor that exists (a fresh install has no state dir yet). */
export async function nearestExisting(probes: HostProbes, path: string): Promise<string> {
  let current = path;
  while (!(await probes.exists(current)) && dirname(current) !== current) current = dirname(current);
  return current;
}
