import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";

/** Node.js 24.15 or newer (what `bin/bangerd` and `bin/banger` insist on too). */
export function nodeCheck(probes: HostProbes): HostCheck {
  return {
    name: "node",
    async run() {
      const version = probes.nodeVersion();
      const [major = 0, minor = 0] = version.split(".").map(Number);
      const ok = major > 24 || (major === 24 && minor >= 15);
      return ok
        ? { name: "node", status: "ok", detail: `Node.js ${version}` }
        : {
            name: "node",
            status: "fail",
            detail: `Node.js ${version} is older than 24.15`,
            hint: "run `npm ci` in the banger checkout; it installs Node 24 locally",
          };
    },
  };
}
