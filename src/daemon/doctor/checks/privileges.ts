import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";

/** Root (or CAP_NET_ADMIN) is needed for bridges, taps and namespaces. */
export function privilegesCheck(probes: HostProbes): HostCheck {
  return {
    name: "privileges",
    async run() {
      const uid = probes.uid();
      return uid === 0
        ? { name: "privileges", status: "ok", detail: "running as root" }
        : {
            name: "privileges",
            status: "warn",
            detail: `running as uid ${uid}: creating bridges, taps and network namespaces needs root (CAP_NET_ADMIN)`,
            hint: "run bangerd as root (sudo), or grant it CAP_NET_ADMIN",
          };
    },
  };
}
