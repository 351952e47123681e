import type { Layout } from "../../../core/paths/index.ts";
import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";
import { nearestExisting } from "./nearest-existing.ts";

/** The runtime dir (or the ancestor it will be made in) must be writable for the daemon's socket. */
export function socketDirCheck(deps: { probes: HostProbes; layout: Layout }): HostCheck {
  return {
    name: "socket-dir",
    async run() {
      const dir = await nearestExisting(deps.probes, deps.layout.runtimeDir);
      const writable = await deps.probes.canAccess(dir, "w");
      return writable
        ? { name: "socket-dir", status: "ok", detail: `${deps.layout.runtimeDir} is writable` }
        : {
            name: "socket-dir",
            status: "fail",
            detail: `${dir} is not writable, so the daemon cannot create its socket`,
            hint: "run as root, or set BANGER_HOME to a directory you own",
          };
    },
  };
}
