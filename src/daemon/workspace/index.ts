/**
 * Workspaces, file copy and auth sync: git repositories prepared in
 * guests and exported back (service.ts, under the lock split), and tar
 * streams into and out of guests (transfer.ts). Guest commands run
 * through the VM service's exec; the host's files are read by the CLI as
 * its own user and arrive as streams, never read here.
 */
export {
  createWorkspaceService,
  type WorkspaceDiskReader,
  type WorkspaceRecords,
  type WorkspaceService,
  type WorkspaceServiceDeps,
  type WorkspaceVms,
} from "./service.ts";
export { createTransferService, type TransferService } from "./transfer.ts";
