/**
 * `banger doctor`: host checks, each in a file of its own under checks/,
 * each answering with a status and a fix hint. The probes the daemon
 * memoizes (the raw COW strategy, the accelerator choice) come in as named
 * objects so doctor reports what VMs actually get.
 */
import { errorMessage } from "../../core/async/index.ts";
import type { Config } from "../../core/config/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import type { DoctorCheck } from "../../protocol/index.ts";
import type { CowStrategyProbe } from "../../sys/disk/index.ts";
import type { HostProbes } from "../../sys/host/index.ts";
import type { BlobCache } from "../../sys/oci/blob-cache.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { AccelChoice } from "../../sys/vmm/index.ts";
import { accelCheck } from "./checks/accel.ts";
import type { HostCheck } from "./checks/check.ts";
import { cowStrategyCheck } from "./checks/cow.ts";
import { freeDiskCheck } from "./checks/disk.ts";
import { firecrackerCheck } from "./checks/firecracker.ts";
import { imageStoreCheck } from "./checks/images.ts";
import { kvmCheck } from "./checks/kvm.ts";
import { nodeCheck } from "./checks/node.ts";
import { privilegesCheck } from "./checks/privileges.ts";
import { socketDirCheck } from "./checks/socket-dir.ts";
import { toolsCheck } from "./checks/tools.ts";

export type { HostCheck } from "./checks/check.ts";
export { snapshotsCheck } from "./checks/snapshots.ts";
export { poolsCheck, suspendedCheck } from "./checks/suspend-pool.ts";

export interface DoctorDeps {
  probes: HostProbes;
  runner: Runner;
  layout: Layout;
  config: Config;
  cowStrategy: { get(): Promise<CowStrategyProbe> };
  accel: { get(): Promise<AccelChoice> };
  blobs: Pick<BlobCache, "list">;
}

/** The checks in the order `banger doctor` prints them. */
export function doctorChecks(deps: DoctorDeps): HostCheck[] {
  return [
    nodeCheck(deps.probes),
    privilegesCheck(deps.probes),
    kvmCheck(deps.probes),
    toolsCheck(deps),
    freeDiskCheck(deps),
    socketDirCheck(deps),
    firecrackerCheck(deps),
    cowStrategyCheck(deps.cowStrategy),
    accelCheck(deps.accel),
    imageStoreCheck(deps),
  ];
}

/** Runs each check in turn; one that throws is reported as a failure under its name, and the rest still run. */
export async function runDoctor(checks: readonly HostCheck[]): Promise<DoctorCheck[]> {
  const results: DoctorCheck[] = [];
  for (const check of checks) {
    try {
      const answer = await check.run();
      results.push(...(Array.isArray(answer) ? answer : [answer]));
    } catch (error) {
      results.push({
        name: check.name,
        status: "fail",
        detail: `the check failed to run: ${errorMessage(error)}`,
      });
    }
  }
  return results;
}
