import type { Layout } from "../../../core/paths/index.ts";
import { GIB } from "../../../core/units.ts";
import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";
import { nearestExisting } from "./nearest-existing.ts";

/** Free space for the state dir: under 1 GiB fails (the default image needs it), under 5 GiB warns. */
export function freeDiskCheck(deps: { probes: HostProbes; layout: Layout }): HostCheck {
  return {
    name: "disk",
    async run() {
      const dir = await nearestExisting(deps.probes, deps.layout.stateDir);
      const free = await deps.probes.freeBytes(dir);
      const detail = `${(free / GIB).toFixed(1)} GiB free for ${deps.layout.stateDir}`;
      if (free >= 5 * GIB) return { name: "disk", status: "ok", detail };
      return free < 1 * GIB
        ? {
            name: "disk",
            status: "fail",
            detail,
            hint: "free disk space: the default image needs about 1 GiB and each VM its overlay",
          }
        : {
            name: "disk",
            status: "warn",
            detail,
            hint: "VM disks grow as guests write; keep a few GiB free",
          };
    },
  };
}
