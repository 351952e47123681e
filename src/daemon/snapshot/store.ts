/**
 * The snapshot store: rows in the `snapshots` table and one directory per
 * snapshot, `<state>/snapshots/<id>/` (manifest.json, the VMM state, the
 * frozen disk). A snapshot is written into `snapshots/.staging/<id>` with
 * no lock held and published like an image, under the image publication
 * mutex only: the name's re-check, one rename, one row insert. `delete`
 * takes the same mutex for the in-use check, the move aside and the row
 * delete; the files go after it is released. The database refuses to drop
 * a snapshot a VM's disk still depends on (vm_snapshot's foreign key), so
 * the in-use check cannot be raced.
 */
import { join } from "node:path";
import type { Mutex } from "../../core/concurrency/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { SnapshotRecord, Store } from "../../sys/store/index.ts";

export interface SnapshotStoreDeps {
  store: Pick<
    Store,
    | "getSnapshotByName"
    | "getSnapshotById"
    | "listSnapshots"
    | "insertSnapshot"
    | "deleteSnapshot"
    | "clonesOf"
    | "transaction"
  >;
  fs: Pick<Fs, "mkdir" | "rm" | "rename" | "stat" | "readdir">;
  /** `<state>/snapshots`. */
  dir: string;
  /** The image publication mutex (ARCHITECTURE.md "Lock order"). */
  publishMutex: Mutex;
  logger: Logger;
  newId(): string;
}

export interface SnapshotStore {
  /** Makes an empty staging directory for a new snapshot; the caller fills it and publishes or discards it. */
  stage(): Promise<{ id: string; dir: string }>;
  /** Removes a staging directory (a failed or cancelled snapshot). */
  discard(stagingDir: string): Promise<void>;
  /** Publishes a filled staging directory under `record.name`; NAME_TAKEN if another snapshot has it meanwhile. */
  publish(stagingDir: string, record: Omit<SnapshotRecord, "dir">): Promise<SnapshotRecord>;
  /** The snapshot named `name`; SNAPSHOT_NOT_FOUND otherwise. */
  byName(name: string): SnapshotRecord;
  list(): SnapshotRecord[];
  /** Refused (BAD_STATE, naming them) while VMs' disks depend on it. */
  delete(name: string): Promise<void>;
  /** Empties the staging area and removes directories no row names (a daemon that died mid-publish). */
  cleanup(): Promise<string[]>;
  /** Rows whose directory is missing. */
  missing(): Promise<SnapshotRecord[]>;
}

export function createSnapshotStore(deps: SnapshotStoreDeps): SnapshotStore {
  const { store, fs } = deps;
  const stagingRoot = join(deps.dir, ".staging");

  const byName = (name: string): SnapshotRecord => {
    const snapshot = store.getSnapshotByName(name);
    if (!snapshot) throw new BangerError(ErrorCode.SNAPSHOT_NOT_FOUND, `no snapshot named '${name}'`);
    return snapshot;
  };

  const inUse = (snapshot: SnapshotRecord, clones: string[]) =>
    new BangerError(
      ErrorCode.BAD_STATE,
      `snapshot '${snapshot.name}' backs the disks of ${clones.map((name) => `'${name}'`).join(", ")}`,
      { hint: `delete ${clones.length === 1 ? "that VM" : "those VMs"} first (\`banger vm delete NAME\`)` },
    );

  return {
    async stage() {
      const id = deps.newId();
      const dir = join(stagingRoot, id);
      await fs.mkdir(dir, { mode: 0o700 });
      return { id, dir };
    },

    discard: (stagingDir) => fs.rm(stagingDir),

    async publish(stagingDir, record) {
      const published: SnapshotRecord = { ...record, dir: join(deps.dir, record.id) };
      try {
        await deps.publishMutex.run(async () => {
          if (store.getSnapshotByName(record.name)) {
            throw new BangerError(ErrorCode.NAME_TAKEN, `a snapshot named '${record.name}' already exists`, {
              hint: "pick another name, or delete it with `banger snapshot rm NAME`",
            });
          }
          await fs.rename(stagingDir, published.dir);
          try {
            store.transaction(() => store.insertSnapshot(published));
          } catch (error) {
            await fs.rename(published.dir, stagingDir);
            throw error;
          }
        });
      } catch (error) {
        await fs.rm(stagingDir);
        throw error;
      }
      deps.logger.info("snapshot published", { snapshot: record.name, id: record.id });
      return published;
    },

    byName,
    list: () => store.listSnapshots(),

    async delete(name) {
      const aside = await deps.publishMutex.run(async () => {
        const snapshot = byName(name);
        const clones = store.clonesOf(snapshot.id);
        if (clones.length > 0) throw inUse(snapshot, clones);
        const moved = join(stagingRoot, `old-${deps.newId()}`);
        await fs.mkdir(stagingRoot, { mode: 0o700 });
        const present = (await fs.stat(snapshot.dir)) !== undefined;
        if (present) await fs.rename(snapshot.dir, moved);
        try {
          store.transaction(() => store.deleteSnapshot(snapshot.id));
        } catch (error) {
          if (present) await fs.rename(moved, snapshot.dir);
          // A clone made between the check and the delete: the foreign key refused it.
          if (/FOREIGN KEY/.test(String(error))) throw inUse(snapshot, store.clonesOf(snapshot.id));
          throw error;
        }
        return present ? moved : undefined;
      });
      if (aside) await fs.rm(aside);
      deps.logger.info("snapshot deleted", { snapshot: name });
    },

    async cleanup() {
      const removed: string[] = [];
      for (const entry of await fs.readdir(stagingRoot)) {
        await fs.rm(join(stagingRoot, entry));
        removed.push(join(stagingRoot, entry));
      }
      const known = new Set(store.listSnapshots().map((snapshot) => snapshot.dir));
      for (const entry of await fs.readdir(deps.dir)) {
        const dir = join(deps.dir, entry);
        if (entry === ".staging" || known.has(dir)) continue;
        await fs.rm(dir);
        removed.push(dir);
      }
      for (const dir of removed) deps.logger.info("removed snapshot debris", { dir });
      return removed;
    },

    async missing() {
      const out: SnapshotRecord[] = [];
      for (const snapshot of store.listSnapshots()) {
        if (!(await fs.stat(snapshot.dir))) out.push(snapshot);
      }
      return out;
    },
  };
}
