/**
 * Memory snapshots: the store of published snapshots (rows plus one
 * directory each, published under the image publication mutex) and the
 * service behind `vm snapshot`, `snapshot ls|show|rm`, `vm create --from`
 * and `vm fork`. The VM service does the per-VM part under its locks
 * (SnapshotVms); the pure side is src/core/snapshot.
 */
export {
  createSnapshotService,
  type RestoreSource,
  type SavedVm,
  type SnapshotService,
  type SnapshotVms,
} from "./service.ts";
export { createSnapshotStore, type SnapshotStore } from "./store.ts";
