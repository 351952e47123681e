/**
 * The store: SQLite (node:sqlite, WAL) with forward-only migrations tracked
 * by PRAGMA user_version. All SQL lives in this module, behind typed
 * functions. Only the daemon opens the database.
 *
 * Rows hold what a VM or image IS. Transient kernel handles (pid, tap,
 * overlay locks) never enter the database; they live in each VM's
 * handles.json.
 */
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import type { VmRecord } from "../../core/vm/index.ts";
import { BangerError, ErrorCode, isBangerError, type VmState } from "../../protocol/index.ts";

export interface ImageRecord {
  id: string;
  name: string;
  kind: string;
  dir: string;
  kernel: string;
  initrd: string | null;
  rootfs: string;
  sizeBytes: number;
  createdAt: string;
  /** Where it came from: a registry reference or an imported file (OCI images). */
  source?: string | null | undefined;
  /** The manifest digest (OCI images). */
  digest?: string | null | undefined;
  /** JSON: run defaults, platform and layer digests (OCI images). */
  meta?: string | null | undefined;
}

/** A published snapshot (its files are in `dir`; see src/core/snapshot). */
export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVm: string;
  imageId: string;
  imageName: string;
  vmm: VmRecord["vmm"];
  cpus: number;
  memoryMib: number;
  diskGib: number;
  dir: string;
  includesSecrets: boolean;
  createdAt: string;
}

export interface Store {
  close(): void;
  schemaVersion(): number;
  /** Runs fn inside BEGIN IMMEDIATE…COMMIT; rolls back if it throws. */
  transaction<T>(fn: () => T): T;

  insertVm(vm: VmRecord): void;
  updateVm(vm: VmRecord): void;
  getVmByName(name: string): VmRecord | undefined;
  getVmById(id: string): VmRecord | undefined;
  listVms(): VmRecord[];
  deleteVm(id: string): void;
  usedGuestIps(): string[];
  setVmState(id: string, state: VmState, lastError: string | null, updatedAt: string): void;

  insertImage(image: ImageRecord): void;
  getImageByName(name: string): ImageRecord | undefined;
  getImageById(id: string): ImageRecord | undefined;
  listImages(): ImageRecord[];
  deleteImage(id: string): void;
  countVmsUsingImage(imageId: string): number;

  insertSnapshot(snapshot: SnapshotRecord): void;
  getSnapshotByName(name: string): SnapshotRecord | undefined;
  getSnapshotById(id: string): SnapshotRecord | undefined;
  listSnapshots(): SnapshotRecord[];
  /** Refused by the database while a VM's disk still depends on it. */
  deleteSnapshot(id: string): void;
  countSnapshotsUsingImage(imageId: string): number;
  /** Records that the VM's disk is backed by the snapshot's; dropped with the VM's row. */
  linkClone(vmId: string, snapshotId: string): void;
  /** Names of the VMs whose disks the snapshot backs. */
  clonesOf(snapshotId: string): string[];
  /** The snapshot backing the VM's disk, if any. */
  snapshotOfVm(vmId: string): string | undefined;
  /** Renames a VM; the name's uniqueness is the table's. */
  renameVm(id: string, name: string, updatedAt: string): void;
  addPoolMember(vmId: string, pool: string): void;
  /** False when the VM was not (or no longer) a member: exactly one taker wins. */
  removePoolMember(vmId: string): boolean;
  poolMembers(): { vmId: string; pool: string }[];
}

/** Forward-only. Never edit a shipped step; append a new one. */
export const migrations: readonly string[] = [
  `CREATE TABLE images (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     kind TEXT NOT NULL,
     dir TEXT NOT NULL,
     kernel TEXT NOT NULL,
     initrd TEXT,
     rootfs TEXT NOT NULL,
     size_bytes INTEGER NOT NULL,
     created_at TEXT NOT NULL
   ) STRICT;
   CREATE TABLE vms (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     image_id TEXT NOT NULL,
     image_name TEXT NOT NULL,
     vmm TEXT NOT NULL,
     cpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     disk_gib INTEGER NOT NULL,
     guest_ip TEXT NOT NULL UNIQUE,
     mac TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('created','starting','running','stopping','stopped','error')),
     last_error TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   ) STRICT;
   CREATE INDEX vms_image ON vms(image_id);`,
  // 2: the `paused` state. SQLite cannot alter a CHECK, so the table is rebuilt.
  `CREATE TABLE vms_v2 (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     image_id TEXT NOT NULL,
     image_name TEXT NOT NULL,
     vmm TEXT NOT NULL,
     cpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     disk_gib INTEGER NOT NULL,
     guest_ip TEXT NOT NULL UNIQUE,
     mac TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('created','starting','running','paused','stopping','stopped','error')),
     last_error TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   ) STRICT;
   INSERT INTO vms_v2 SELECT * FROM vms;
   DROP TABLE vms;
   ALTER TABLE vms_v2 RENAME TO vms;
   CREATE INDEX vms_image ON vms(image_id);`,
  // 3: OCI images record their source, manifest digest and run defaults.
  `ALTER TABLE images ADD COLUMN source TEXT;
   ALTER TABLE images ADD COLUMN digest TEXT;
   ALTER TABLE images ADD COLUMN meta TEXT;`,
  // 4: memory snapshots, and which VMs' disks each one backs.
  `CREATE TABLE snapshots (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     source_vm TEXT NOT NULL,
     image_id TEXT NOT NULL,
     image_name TEXT NOT NULL,
     vmm TEXT NOT NULL,
     cpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     disk_gib INTEGER NOT NULL,
     dir TEXT NOT NULL,
     includes_secrets INTEGER NOT NULL,
     created_at TEXT NOT NULL
   ) STRICT;
   CREATE INDEX snapshots_image ON snapshots(image_id);
   CREATE TABLE vm_snapshot (
     vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     snapshot_id TEXT NOT NULL REFERENCES snapshots(id)
   ) STRICT;
   CREATE INDEX vm_snapshot_snapshot ON vm_snapshot(snapshot_id);`,
  // 5: the `suspended` state. The rebuild's DROP cascades into vm_snapshot, so its rows are kept aside.
  `CREATE TEMP TABLE vm_snapshot_keep AS SELECT * FROM vm_snapshot;
   CREATE TABLE vms_v5 (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     image_id TEXT NOT NULL,
     image_name TEXT NOT NULL,
     vmm TEXT NOT NULL,
     cpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     disk_gib INTEGER NOT NULL,
     guest_ip TEXT NOT NULL UNIQUE,
     mac TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('created','starting','running','paused','suspended','stopping','stopped','error')),
     last_error TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   ) STRICT;
   INSERT INTO vms_v5 SELECT * FROM vms;
   DROP TABLE vms;
   ALTER TABLE vms_v5 RENAME TO vms;
   CREATE INDEX vms_image ON vms(image_id);
   INSERT INTO vm_snapshot SELECT * FROM vm_snapshot_keep;
   DROP TABLE vm_snapshot_keep;`,
  // 6: warm pool members: VMs kept paused for a matching create to take.
  `CREATE TABLE pool_members (
     vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     pool TEXT NOT NULL
   ) STRICT;
   CREATE INDEX pool_members_pool ON pool_members(pool);`,
];

/**
 * Opens and migrates the database. A file that is not a usable SQLite
 * database, or one from a newer banger, is a STORE_INVALID error naming the
 * file, so the daemon ends with one clear line.
 */
export function openStore(path: string): Store {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { timeout: 5000 });
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA foreign_keys = ON");
    migrate(db, path);
    return createStore(db);
  } catch (error) {
    try {
      db?.close();
    } catch {
      // Already closed or never opened.
    }
    if (isBangerError(error)) throw error;
    throw new BangerError(
      ErrorCode.STORE_INVALID,
      `cannot use the state database ${path}: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
        hint: `if it is damaged, move it aside (mv ${path} ${path}.bad) and start again with an empty one`,
      },
    );
  }
}

function migrate(db: DatabaseSync, path: string): void {
  const current = userVersion(db);
  if (current > migrations.length) {
    throw new BangerError(
      ErrorCode.STORE_INVALID,
      `${path} has schema version ${current}, newer than this banger's ${migrations.length}`,
      { hint: "upgrade banger, or run this one with another BANGER_HOME" },
    );
  }
  for (let version = current; version < migrations.length; version++) {
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec(migrations[version]!);
      db.exec(`PRAGMA user_version = ${version + 1}`);
      db.exec("COMMIT");
    } catch (error) {
      db.exec("ROLLBACK");
      throw error;
    }
  }
}

function userVersion(db: DatabaseSync): number {
  const row = db.prepare("PRAGMA user_version").get() as { user_version: number };
  return row.user_version;
}

type Row = Record<string, SQLInputValue>;

function vmFromRow(row: Row): VmRecord {
  return {
    id: row.id as string,
    name: row.name as string,
    imageId: row.image_id as string,
    imageName: row.image_name as string,
    vmm: row.vmm as VmRecord["vmm"],
    cpus: Number(row.cpus),
    memoryMib: Number(row.memory_mib),
    diskGib: Number(row.disk_gib),
    guestIp: row.guest_ip as string,
    mac: row.mac as string,
    state: row.state as VmState,
    lastError: (row.last_error as string | null) ?? null,
    createdAt: row.created_at as string,
    updatedAt: row.updated_at as string,
  };
}

function vmParams(vm: VmRecord): Record<string, SQLInputValue> {
  return {
    id: vm.id,
    name: vm.name,
    image_id: vm.imageId,
    image_name: vm.imageName,
    vmm: vm.vmm,
    cpus: vm.cpus,
    memory_mib: vm.memoryMib,
    disk_gib: vm.diskGib,
    guest_ip: vm.guestIp,
    mac: vm.mac,
    state: vm.state,
    last_error: vm.lastError,
    created_at: vm.createdAt,
    updated_at: vm.updatedAt,
  };
}

function imageFromRow(row: Row): ImageRecord {
  return {
    id: row.id as string,
    name: row.name as string,
    kind: row.kind as string,
    dir: row.dir as string,
    kernel: row.kernel as string,
    initrd: (row.initrd as string | null) ?? null,
    rootfs: row.rootfs as string,
    sizeBytes: Number(row.size_bytes),
    createdAt: row.created_at as string,
    ...(row.source == null ? {} : { source: row.source as string }),
    ...(row.digest == null ? {} : { digest: row.digest as string }),
    ...(row.meta == null ? {} : { meta: row.meta as string }),
  };
}

function snapshotFromRow(row: Row): SnapshotRecord {
  return {
    id: row.id as string,
    name: row.name as string,
    sourceVm: row.source_vm as string,
    imageId: row.image_id as string,
    imageName: row.image_name as string,
    vmm: row.vmm as VmRecord["vmm"],
    cpus: Number(row.cpus),
    memoryMib: Number(row.memory_mib),
    diskGib: Number(row.disk_gib),
    dir: row.dir as string,
    includesSecrets: Number(row.includes_secrets) === 1,
    createdAt: row.created_at as string,
  };
}

function createStore(db: DatabaseSync): Store {
  const q = {
    insertVm: db.prepare(
      `INSERT INTO vms (id, name, image_id, image_name, vmm, cpus, memory_mib, disk_gib, guest_ip, mac, state, last_error, created_at, updated_at)
       VALUES (:id, :name, :image_id, :image_name, :vmm, :cpus, :memory_mib, :disk_gib, :guest_ip, :mac, :state, :last_error, :created_at, :updated_at)`,
    ),
    updateVm: db.prepare(
      `UPDATE vms SET name = :name, image_id = :image_id, image_name = :image_name, vmm = :vmm, cpus = :cpus,
         memory_mib = :memory_mib, disk_gib = :disk_gib, guest_ip = :guest_ip, mac = :mac, state = :state,
         last_error = :last_error, created_at = :created_at, updated_at = :updated_at
       WHERE id = :id`,
    ),
    vmByName: db.prepare("SELECT * FROM vms WHERE name = ?"),
    vmById: db.prepare("SELECT * FROM vms WHERE id = ?"),
    listVms: db.prepare("SELECT * FROM vms ORDER BY created_at, name"),
    deleteVm: db.prepare("DELETE FROM vms WHERE id = ?"),
    usedIps: db.prepare("SELECT guest_ip FROM vms"),
    setState: db.prepare("UPDATE vms SET state = ?, last_error = ?, updated_at = ? WHERE id = ?"),
    insertImage: db.prepare(
      `INSERT INTO images (id, name, kind, dir, kernel, initrd, rootfs, size_bytes, created_at, source, digest, meta)
       VALUES (:id, :name, :kind, :dir, :kernel, :initrd, :rootfs, :size_bytes, :created_at, :source, :digest, :meta)`,
    ),
    imageByName: db.prepare("SELECT * FROM images WHERE name = ?"),
    imageById: db.prepare("SELECT * FROM images WHERE id = ?"),
    listImages: db.prepare("SELECT * FROM images ORDER BY name"),
    deleteImage: db.prepare("DELETE FROM images WHERE id = ?"),
    vmsUsingImage: db.prepare("SELECT COUNT(*) AS n FROM vms WHERE image_id = ?"),
    insertSnapshot: db.prepare(
      `INSERT INTO snapshots (id, name, source_vm, image_id, image_name, vmm, cpus, memory_mib, disk_gib, dir, includes_secrets, created_at)
       VALUES (:id, :name, :source_vm, :image_id, :image_name, :vmm, :cpus, :memory_mib, :disk_gib, :dir, :includes_secrets, :created_at)`,
    ),
    snapshotByName: db.prepare("SELECT * FROM snapshots WHERE name = ?"),
    snapshotById: db.prepare("SELECT * FROM snapshots WHERE id = ?"),
    listSnapshots: db.prepare("SELECT * FROM snapshots ORDER BY created_at, name"),
    deleteSnapshot: db.prepare("DELETE FROM snapshots WHERE id = ?"),
    snapshotsUsingImage: db.prepare("SELECT COUNT(*) AS n FROM snapshots WHERE image_id = ?"),
    linkClone: db.prepare("INSERT INTO vm_snapshot (vm_id, snapshot_id) VALUES (?, ?)"),
    clonesOf: db.prepare(
      "SELECT vms.name AS name FROM vm_snapshot JOIN vms ON vms.id = vm_snapshot.vm_id WHERE snapshot_id = ? ORDER BY vms.name",
    ),
    snapshotOfVm: db.prepare("SELECT snapshot_id FROM vm_snapshot WHERE vm_id = ?"),
    renameVm: db.prepare("UPDATE vms SET name = ?, updated_at = ? WHERE id = ?"),
    addPoolMember: db.prepare("INSERT INTO pool_members (vm_id, pool) VALUES (?, ?)"),
    removePoolMember: db.prepare("DELETE FROM pool_members WHERE vm_id = ?"),
    poolMembers: db.prepare("SELECT vm_id, pool FROM pool_members ORDER BY pool, vm_id"),
  };
  return {
    close: () => db.close(),
    schemaVersion: () => userVersion(db),
    transaction<T>(fn: () => T): T {
      db.exec("BEGIN IMMEDIATE");
      try {
        const result = fn();
        db.exec("COMMIT");
        return result;
      } catch (error) {
        if (db.isTransaction) db.exec("ROLLBACK");
        throw error;
      }
    },
    insertVm: (vm) => void q.insertVm.run(vmParams(vm)),
    updateVm: (vm) => void q.updateVm.run(vmParams(vm)),
    getVmByName: (name) => maybe(q.vmByName.get(name) as Row | undefined, vmFromRow),
    getVmById: (id) => maybe(q.vmById.get(id) as Row | undefined, vmFromRow),
    listVms: () => (q.listVms.all() as Row[]).map(vmFromRow),
    deleteVm: (id) => void q.deleteVm.run(id),
    usedGuestIps: () => (q.usedIps.all() as Row[]).map((row) => row.guest_ip as string),
    setVmState: (id, state, lastError, updatedAt) => void q.setState.run(state, lastError, updatedAt, id),
    insertImage: (image) =>
      void q.insertImage.run({
        id: image.id,
        name: image.name,
        kind: image.kind,
        dir: image.dir,
        kernel: image.kernel,
        initrd: image.initrd,
        rootfs: image.rootfs,
        size_bytes: image.sizeBytes,
        created_at: image.createdAt,
        source: image.source ?? null,
        digest: image.digest ?? null,
        meta: image.meta ?? null,
      }),
    getImageByName: (name) => maybe(q.imageByName.get(name) as Row | undefined, imageFromRow),
    getImageById: (id) => maybe(q.imageById.get(id) as Row | undefined, imageFromRow),
    listImages: () => (q.listImages.all() as Row[]).map(imageFromRow),
    deleteImage: (id) => void q.deleteImage.run(id),
    countVmsUsingImage: (imageId) => Number((q.vmsUsingImage.get(imageId) as Row).n),
    insertSnapshot: (snapshot) =>
      void q.insertSnapshot.run({
        id: snapshot.id,
        name: snapshot.name,
        source_vm: snapshot.sourceVm,
        image_id: snapshot.imageId,
        image_name: snapshot.imageName,
        vmm: snapshot.vmm,
        cpus: snapshot.cpus,
        memory_mib: snapshot.memoryMib,
        disk_gib: snapshot.diskGib,
        dir: snapshot.dir,
        includes_secrets: snapshot.includesSecrets ? 1 : 0,
        created_at: snapshot.createdAt,
      }),
    getSnapshotByName: (name) => maybe(q.snapshotByName.get(name) as Row | undefined, snapshotFromRow),
    getSnapshotById: (id) => maybe(q.snapshotById.get(id) as Row | undefined, snapshotFromRow),
    listSnapshots: () => (q.listSnapshots.all() as Row[]).map(snapshotFromRow),
    deleteSnapshot: (id) => void q.deleteSnapshot.run(id),
    countSnapshotsUsingImage: (imageId) => Number((q.snapshotsUsingImage.get(imageId) as Row).n),
    linkClone: (vmId, snapshotId) => void q.linkClone.run(vmId, snapshotId),
    clonesOf: (snapshotId) => (q.clonesOf.all(snapshotId) as Row[]).map((row) => row.name as string),
    snapshotOfVm: (vmId) => (q.snapshotOfVm.get(vmId) as Row | undefined)?.snapshot_id as string | undefined,
    renameVm: (id, name, updatedAt) => void q.renameVm.run(name, updatedAt, id),
    addPoolMember: (vmId, pool) => void q.addPoolMember.run(vmId, pool),
    removePoolMember: (vmId) => Number(q.removePoolMember.run(vmId).changes) > 0,
    poolMembers: () =>
      (q.poolMembers.all() as Row[]).map((row) => ({ vmId: row.vm_id as string, pool: row.pool as string })),
  };
}

function maybe<T>(row: Row | undefined, map: (row: Row) => T): T | undefined {
  return row === undefined ? undefined : map(row);
}
