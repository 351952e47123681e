import type { PoolInfo } from "../../../protocol/index.ts";
import type { HostCheck } from "./check.ts";

/**
 * Suspended VMs: how many, and any whose saved state is gone (a resume
 * cannot work; a stop discards the state and the next start boots cold).
 */
export function suspendedCheck(deps: {
  suspended(): Promise<{ name: string; complete: boolean }[]>;
}): HostCheck {
  return {
    name: "suspended",
    async run() {
      const all = await deps.suspended();
      const broken = all.filter((vm) => !vm.complete).map((vm) => vm.name);
      if (broken.length === 0) {
        return {
          name: "suspended",
          status: "ok",
          detail: `${all.length} suspended VM${all.length === 1 ? "" : "s"}`,
        };
      }
      return {
        name: "suspended",
        status: "fail",
        detail: `${broken.length} suspended VMs have lost their saved state: ${broken.join(", ")}`,
        hint: `stop them (\`banger vm stop ${broken[0]}\`) and start them again; their disks are intact`,
      };
    },
  };
}

/**
 * Warm pools: each should hold its target of ready members; one whose
 * snapshot is gone can never fill.
 */
export function poolsCheck(deps: {
  pools(): Promise<PoolInfo[]>;
  snapshotExists(name: string): boolean;
}): HostCheck {
  return {
    name: "pools",
    async run() {
      const pools = await deps.pools();
      if (pools.length === 0) return { name: "pools", status: "ok", detail: "no [[pool]] configured" };
      return pools.map((pool) => {
        const name = `pool ${pool.name}`;
        const snapshot = pool.source.startsWith("snapshot ")
          ? pool.source.slice("snapshot ".length)
          : undefined;
        if (snapshot !== undefined && !deps.snapshotExists(snapshot)) {
          return {
            name,
            status: "fail" as const,
            detail: `its snapshot '${snapshot}' does not exist, so it cannot fill`,
            hint: `take it (\`banger vm snapshot VM ${snapshot}\`) or change the [[pool]] entry in config.toml`,
          };
        }
        const detail = `${pool.ready} of ${pool.target} ready (${pool.source})`;
        return pool.ready >= pool.target
          ? { name, status: "ok" as const, detail }
          : {
              name,
              status: "warn" as const,
              detail: `${detail}; it fills in the background`,
              hint: "`banger pool ls` shows its members; the daemon log says why a member failed",
            };
      });
    },
  };
}
