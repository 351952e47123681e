import type { Layout } from "../../../core/paths/index.ts";
import { GIB } from "../../../core/units.ts";
import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";
import { nearestExisting } from "./nearest-existing.ts";

/** Below this the daemon cannot build the default image (about 0.7 GiB written) and boot a VM. */
export const DISK_FAIL_BYTES = 1 * GIB;
/** Below this a warning: pulled images, layer blobs and VM disks all grow on this filesystem. */
export const DISK_WARN_BYTES = 5 * GIB;

/** Free space on the filesystem of the state dir (BANGER_HOME's, where images, blobs and VM disks live). */
export function freeDiskCheck(deps: { probes: HostProbes; layout: Layout }): HostCheck {
  return {
    name: "disk",
    async run() {
      const dir = await nearestExisting(deps.probes, deps.layout.stateDir);
      const free = await deps.probes.freeBytes(dir);
      const detail = `${(free / GIB).toFixed(1)} GiB free for ${deps.layout.stateDir} (images, layer blobs, VM disks)`;
      if (free >= DISK_WARN_BYTES) return { name: "disk", status: "ok", detail };
      return free < DISK_FAIL_BYTES
        ? {
            name: "disk",
            status: "fail",
            detail,
            hint: "free disk space: the default image needs about 1 GiB and each VM its overlay; `banger image prune` removes unused layer blobs",
          }
        : {
            name: "disk",
            status: "warn",
            detail,
            hint: `VM disks grow as guests write; keep ${DISK_WARN_BYTES / GIB} GiB free (\`banger image prune\` removes unused layer blobs)`,
          };
    },
  };
}
