import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, describe, it } from "node:test";
import type { VmRecord } from "../../src/core/vm/index.ts";
import { migrations, openStore } from "../../src/sys/store/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const dir = makeTempDir("bgs-");
after(() => dir.cleanup());

function vm(overrides: Partial<VmRecord> = {}): VmRecord {
  return {
    id: "id1",
    name: "web",
    imageId: "img1",
    imageName: "debian-bookworm",
    vmm: "qemu",
    cpus: 1,
    memoryMib: 512,
    diskGib: 2,
    guestIp: "10.77.0.2",
    mac: "52:54:00:00:00:01",
    state: "created",
    lastError: null,
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
    ...overrides,
  };
}

describe("store on a real SQLite file", () => {
  it("migrates an empty database to head, in WAL mode", () => {
    const file = join(dir.path, "a.db");
    const store = openStore(file);
    assert.equal(store.schemaVersion(), migrations.length);
    store.close();
    const db = new DatabaseSync(file);
    assert.equal((db.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode, "wal");
    const tables = (
      db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as {
        name: string;
      }[]
    ).map((row) => row.name);
    assert.deepEqual(tables, ["images", "pool_members", "snapshots", "vm_snapshot", "vms"]);
    db.close();
    // Reopening is a no-op migration.
    const again = openStore(file);
    assert.equal(again.schemaVersion(), migrations.length);
    again.close();
  });

  it("migrates a version-1 database with VMs in it: rows kept, the paused state allowed", () => {
    const file = join(dir.path, "v1.db");
    const db = new DatabaseSync(file);
    db.exec(migrations[0]!);
    db.exec("PRAGMA user_version = 1");
    db.prepare(
      `INSERT INTO vms VALUES ('id9','old','img1','debian-bookworm','qemu',2,1024,4,'10.77.0.9','52:54:00:00:00:09','running',NULL,'t0','t1')`,
    ).run();
    assert.throws(() => db.prepare("UPDATE vms SET state = 'paused'").run(), /CHECK constraint failed/);
    db.close();
    const store = openStore(file);
    assert.equal(store.schemaVersion(), migrations.length);
    const kept = store.getVmByName("old");
    assert.equal(kept?.cpus, 2);
    assert.equal(kept?.guestIp, "10.77.0.9");
    assert.equal(kept?.state, "running");
    store.setVmState("id9", "paused", null, "t2");
    assert.equal(store.getVmByName("old")?.state, "paused");
    assert.deepEqual(store.usedGuestIps(), ["10.77.0.9"]);
    store.close();
  });

  it("migrates a version-4 database to allow `suspended`, keeping which snapshot backs each clone", () => {
    const file = join(dir.path, "v4.db");
    const db = new DatabaseSync(file);
    db.exec("PRAGMA foreign_keys = ON");
    for (const migration of migrations.slice(0, 4)) db.exec(migration);
    db.exec("PRAGMA user_version = 4");
    db.prepare(
      `INSERT INTO vms VALUES ('c1','clone','img1','debian-bookworm','qemu',1,512,2,'10.77.0.3','52:54:00:00:00:03','running',NULL,'t0','t1')`,
    ).run();
    db.prepare(
      `INSERT INTO snapshots VALUES ('s1','warm','src','img1','debian-bookworm','qemu',1,512,2,'/s1',0,'t0')`,
    ).run();
    db.prepare("INSERT INTO vm_snapshot VALUES ('c1','s1')").run();
    assert.throws(() => db.prepare("UPDATE vms SET state = 'suspended'").run(), /CHECK constraint failed/);
    db.close();
    const store = openStore(file);
    assert.equal(store.schemaVersion(), migrations.length);
    assert.equal(store.snapshotOfVm("c1"), "s1", "the clone's link survives the table's rebuild");
    store.setVmState("c1", "suspended", null, "t2");
    assert.equal(store.getVmByName("clone")?.state, "suspended");
    assert.throws(() => store.deleteSnapshot("s1"), /FOREIGN KEY/, "the link still refuses the delete");
    store.close();
  });

  it("refuses a database from a newer banger", () => {
    const file = join(dir.path, "newer.db");
    const db = new DatabaseSync(file);
    db.exec(`PRAGMA user_version = ${migrations.length + 5}`);
    db.close();
    assert.throws(() => openStore(file), /newer than this banger/);
  });

  it("stores VMs durably with unique names and guest IPs", () => {
    const file = join(dir.path, "b.db");
    const store = openStore(file);
    store.insertVm(vm());
    assert.throws(() => store.insertVm(vm({ id: "id2", guestIp: "10.77.0.3" })), /UNIQUE/);
    assert.throws(() => store.insertVm(vm({ id: "id3", name: "other" })), /UNIQUE/);
    store.setVmState("id1", "error", "boom", "2026-01-02T00:00:00.000Z");
    store.close();
    const reopened = openStore(file);
    const row = reopened.getVmByName("web");
    assert.equal(row?.state, "error");
    assert.equal(row?.lastError, "boom");
    assert.deepEqual(reopened.usedGuestIps(), ["10.77.0.2"]);
    assert.equal(reopened.countVmsUsingImage("img1"), 1);
    reopened.deleteVm("id1");
    assert.equal(reopened.listVms().length, 0);
    reopened.close();
  });

  it("rolls back a failed transaction", () => {
    const store = openStore(join(dir.path, "c.db"));
    assert.throws(() =>
      store.transaction(() => {
        store.insertVm(vm());
        throw new Error("halfway");
      }),
    );
    assert.equal(store.listVms().length, 0);
    store.close();
  });

  it("rejects a state outside the state machine", () => {
    const store = openStore(join(dir.path, "d.db"));
    assert.throws(() => store.insertVm(vm({ state: "flying" as never })), /CHECK/);
    store.close();
  });

  it("keeps snapshots, refuses deleting one a VM depends on, and forgets a clone with its VM", () => {
    const store = openStore(join(dir.path, "snap.db"));
    store.insertVm(vm({ id: "src", name: "src", guestIp: "10.77.0.2" }));
    store.insertVm(vm({ id: "c1", name: "c1", guestIp: "10.77.0.3" }));
    const snapshot = {
      id: "s1",
      name: "warm",
      sourceVm: "src",
      imageId: "img1",
      imageName: "debian-bookworm",
      vmm: "qemu" as const,
      cpus: 1,
      memoryMib: 512,
      diskGib: 2,
      dir: "/state/snapshots/s1",
      includesSecrets: true,
      createdAt: "2026-01-01T00:00:00.000Z",
    };
    store.insertSnapshot(snapshot);
    assert.deepEqual(store.getSnapshotByName("warm"), snapshot);
    assert.throws(() => store.insertSnapshot({ ...snapshot, id: "s2" }), /UNIQUE/);
    assert.equal(store.countSnapshotsUsingImage("img1"), 1);
    store.linkClone("c1", "s1");
    assert.deepEqual(store.clonesOf("s1"), ["c1"]);
    assert.equal(store.snapshotOfVm("c1"), "s1");
    assert.throws(() => store.deleteSnapshot("s1"), /FOREIGN KEY/);
    store.deleteVm("c1");
    assert.deepEqual(store.clonesOf("s1"), []);
    store.deleteSnapshot("s1");
    assert.deepEqual(store.listSnapshots(), []);
    store.close();
  });
});
