import type { SnapshotRecord } from "../../../sys/store/index.ts";
import type { HostCheck } from "./check.ts";

/**
 * The snapshot store: how many snapshots there are, and any whose
 * directory is gone (a clone of one cannot start; `snapshot rm` is the fix
 * once its clones are deleted). Directories no row names are removed at
 * every daemon start.
 */
export function snapshotsCheck(deps: {
  list(): SnapshotRecord[];
  missing(): Promise<SnapshotRecord[]>;
}): HostCheck {
  return {
    name: "snapshots",
    async run() {
      const all = deps.list();
      const missing = await deps.missing();
      if (missing.length === 0) {
        return {
          name: "snapshots",
          status: "ok",
          detail: `${all.length} snapshot${all.length === 1 ? "" : "s"}`,
        };
      }
      const names = missing.map((snapshot) => snapshot.name).join(", ");
      return {
        name: "snapshots",
        status: "fail",
        detail: `${missing.length} of ${all.length} snapshots have lost their directory: ${names}`,
        hint: "delete their clones, then `banger snapshot rm NAME`",
      };
    },
  };
}
