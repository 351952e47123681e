/** Workspace records: `vms/<id>/workspace.json`, written atomically, removed with the VM's directory. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type Layout, vmPaths } from "../../../core/paths/index.ts";
import { WorkspaceInfo } from "../../../protocol/index.ts";
import { writeFileAtomic } from "../../../sys/fs/index.ts";
import type { WorkspaceRecords } from "../../workspace/index.ts";

export function createWorkspaceRecords(layout: Layout): WorkspaceRecords {
  const file = (vmId: string) => join(vmPaths(layout, vmId).dir, "workspace.json");
  return {
    async read(vmId) {
      try {
        return WorkspaceInfo.parse(JSON.parse(await readFile(file(vmId), "utf8")));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw error;
      }
    },
    write: (vmId, record) =>
      writeFileAtomic(file(vmId), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 }),
  };
}
