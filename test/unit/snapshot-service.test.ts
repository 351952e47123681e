/**
 * The snapshot store and service on a real SQLite file and real files in a
 * temp dir, with the VM service's part (SnapshotVms) faked: publication,
 * naming, the in-use refusal, debris cleanup, the manifest checks before a
 * restore, and a fork that fails half-way leaving nothing behind.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, beforeEach, describe, it } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { silentLogger } from "../../src/core/log/index.ts";
import { SnapshotFiles } from "../../src/core/snapshot/index.ts";
import type { VmRecord } from "../../src/core/vm/index.ts";
import { snapshotsCheck } from "../../src/daemon/doctor/index.ts";
import {
  createSnapshotService,
  createSnapshotStore,
  type RestoreSource,
  type SavedVm,
  type SnapshotService,
  type SnapshotVms,
} from "../../src/daemon/snapshot/index.ts";
import { BangerError, type CreateVmParams, ErrorCode, type VmInfo } from "../../src/protocol/index.ts";
import { createNodeFs, readDiskUsage } from "../../src/sys/fs/index.ts";
import { openStore, type Store } from "../../src/sys/store/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const tmp = makeTempDir("bgsnap-");
after(() => tmp.cleanup());

const noop = { signal: new AbortController().signal, progress: () => {} };
let counter = 0;

function vmRow(name: string, id = `id-${name}`): VmRecord {
  const now = "2026-11-30T22:00:00.000Z";
  return {
    id,
    name,
    imageId: "img",
    imageName: "debian-bookworm",
    vmm: "qemu",
    cpus: 1,
    memoryMib: 512,
    diskGib: 4,
    guestIp: `10.77.0.${++counter + 1}`,
    mac: "52:54:00:00:00:01",
    state: "running",
    lastError: null,
    createdAt: now,
    updatedAt: now,
  };
}

/** The VM service's part: saves fake files, creates rows linked to the snapshot, fails on request. */
class FakeVms implements SnapshotVms {
  readonly created: { params: CreateVmParams; from: RestoreSource }[] = [];
  failCreateOf = new Set<string>();
  failSave = false;

  readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  async save(name: string, dir: string, options: { includeSecrets: boolean }): Promise<SavedVm> {
    const vm = this.store.getVmByName(name);
    if (!vm) throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${name}'`);
    await writeFile(join(dir, SnapshotFiles.state), Buffer.alloc(4096, 1));
    await writeFile(join(dir, "disk.qcow2"), Buffer.alloc(8192, 2));
    if (this.failSave) throw new BangerError(ErrorCode.INTERNAL, "QEMU could not save the VM's state");
    return {
      vm,
      source: { vmId: vm.id, vmName: vm.name, guestIp: vm.guestIp, mac: vm.mac },
      driver: "qemu",
      vmmVersion: null,
      accel: "tcg",
      machine: { cpus: vm.cpus, memoryMib: vm.memoryMib, signature: "c".repeat(64) },
      image: { id: vm.imageId, name: vm.imageName },
      kernel: { file: "vmlinuz", sizeBytes: 10 },
      disk: { file: "disk.qcow2", format: "qcow2", sizeBytes: vm.diskGib * 1024 ** 3 },
      stateBytes: 4096,
      includesSecrets: options.includeSecrets,
    };
  }

  async create(params: CreateVmParams, _options: unknown, from: RestoreSource): Promise<VmInfo> {
    const name = params.name ?? "clone";
    if (this.failCreateOf.has(name))
      throw new BangerError(ErrorCode.BOOT_FAILED, `restore of ${name} failed`);
    const row = vmRow(name);
    this.store.insertVm(row);
    this.store.linkClone(row.id, from.snapshotId);
    this.created.push({ params, from });
    return { ...row, image: row.imageName, dir: "/x", pid: null };
  }

  async delete(name: string): Promise<void> {
    const vm = this.store.getVmByName(name);
    if (vm) this.store.deleteVm(vm.id);
  }
}

describe("snapshot store and service", () => {
  let store: Store;
  let vms: FakeVms;
  let service: SnapshotService;
  let dir: string;
  let snapshotsDir: string;

  beforeEach(async () => {
    dir = join(tmp.path, String(++counter));
    snapshotsDir = join(dir, "snapshots");
    await mkdir(dir, { recursive: true });
    store = openStore(join(dir, "banger.db"));
    store.insertVm(vmRow("dev"));
    vms = new FakeVms(store);
    let ids = 0;
    const snapshots = createSnapshotStore({
      store,
      fs: createNodeFs(),
      dir: snapshotsDir,
      publishMutex: new Mutex(),
      logger: silentLogger,
      newId: () => `snap${++ids}`,
    });
    service = createSnapshotService({
      snapshots,
      store,
      fs: createNodeFs(),
      diskUsage: readDiskUsage,
      vms,
      logger: silentLogger,
      now: () => new Date("2026-11-30T22:05:09Z"),
    });
  });

  it("publishes a snapshot with its manifest, sizes and default name", async () => {
    const info = await service.take({ name: "dev" }, noop);
    assert.equal(info.name, "dev-20261130-220509");
    assert.equal(info.sourceVm, "dev");
    assert.equal(info.memoryBytes, 4096);
    assert.ok(info.diskBytes > 0);
    assert.equal(info.includesSecrets, false);
    assert.deepEqual(info.usedBy, []);
    assert.equal(info.dir, join(snapshotsDir, "snap1"));
    const files = (await readdir(info.dir)).sort();
    assert.deepEqual(files, ["disk.qcow2", "manifest.json", "state"]);
    assert.deepEqual(await readdir(join(snapshotsDir, ".staging")), []);
    assert.deepEqual(
      (await service.list()).map((snapshot) => snapshot.name),
      ["dev-20261130-220509"],
    );
  });

  it("refuses a taken name and leaves no staging directory behind", async () => {
    await service.take({ name: "dev", snapshot: "warm" }, noop);
    await assert.rejects(service.take({ name: "dev", snapshot: "warm" }, noop), { code: "NAME_TAKEN" });
    vms.failSave = true;
    await assert.rejects(service.take({ name: "dev", snapshot: "other" }, noop), /could not save/);
    assert.deepEqual(await readdir(join(snapshotsDir, ".staging")), []);
    assert.deepEqual(
      (await service.list()).map((snapshot) => snapshot.name),
      ["warm"],
    );
  });

  it("restores through the VM service, and refuses rm while a clone depends on it", async () => {
    await service.take({ name: "dev", snapshot: "warm" }, noop);
    await service.createFrom({ name: "c1", from: "warm" }, noop);
    assert.equal(vms.created[0]?.from.manifest.name, "warm");
    assert.equal(vms.created[0]?.params.name, "c1");
    assert.equal("from" in (vms.created[0]?.params ?? {}), false);
    assert.deepEqual((await service.show("warm")).usedBy, ["c1"]);
    await assert.rejects(service.delete("warm"), (error: BangerError) => {
      assert.equal(error.code, ErrorCode.BAD_STATE);
      assert.match(error.message, /backs the disks of 'c1'/);
      assert.match(error.hint ?? "", /vm delete/);
      return true;
    });
    await vms.delete("c1");
    await service.delete("warm");
    assert.deepEqual(await service.list(), []);
    assert.deepEqual(
      await readdir(snapshotsDir).then((entries) => entries.filter((e) => e !== ".staging")),
      [],
    );
    await assert.rejects(service.show("warm"), { code: "SNAPSHOT_NOT_FOUND" });
  });

  it("checks what a clone asks for against the snapshot before creating anything", async () => {
    await service.take({ name: "dev", snapshot: "warm" }, noop);
    await assert.rejects(service.createFrom({ name: "c", from: "warm", image: "alpine" }, noop), {
      code: "SNAPSHOT_MISMATCH",
    });
    await assert.rejects(service.createFrom({ name: "c", from: "warm", diskGib: 1 }, noop), {
      code: "SNAPSHOT_MISMATCH",
    });
    await assert.rejects(service.createFrom({ name: "c", from: "nope" }, noop), {
      code: "SNAPSHOT_NOT_FOUND",
    });
    const info = await service.show("warm");
    await writeFile(join(info.dir, SnapshotFiles.manifest), "{torn");
    await assert.rejects(service.createFrom({ name: "c", from: "warm" }, noop), {
      code: "SNAPSHOT_MISMATCH",
    });
    assert.equal(vms.created.length, 0);
  });

  it("forks N clones from one snapshot, and a failed clone removes the others and the snapshot", async () => {
    const forked = await service.fork({ name: "dev", newName: "w", count: 3 }, noop);
    assert.deepEqual(
      forked.vms.map((vm) => vm.name),
      ["w-1", "w-2", "w-3"],
    );
    assert.deepEqual(forked.snapshot.usedBy, ["w-1", "w-2", "w-3"]);
    assert.equal(forked.snapshot.name, "fork-w");
    await assert.rejects(service.fork({ name: "dev", newName: "w", count: 2 }, noop), { code: "NAME_TAKEN" });

    vms.failCreateOf.add("x-2");
    await assert.rejects(service.fork({ name: "dev", newName: "x", count: 3 }, noop), /restore of x-2/);
    assert.equal(store.getVmByName("x-1"), undefined);
    assert.equal(store.getVmByName("x-3"), undefined);
    assert.deepEqual(
      (await service.list()).map((snapshot) => snapshot.name),
      [forked.snapshot.name],
    );
  });

  it("cleans staging debris and directories no row names", async () => {
    await service.take({ name: "dev", snapshot: "warm" }, noop);
    const snapshots = createSnapshotStore({
      store,
      fs: createNodeFs(),
      dir: snapshotsDir,
      publishMutex: new Mutex(),
      logger: silentLogger,
      newId: () => "x",
    });
    await mkdir(join(snapshotsDir, ".staging", "half"), { recursive: true });
    await mkdir(join(snapshotsDir, "orphan"));
    const removed = await snapshots.cleanup();
    assert.deepEqual(removed.sort(), [join(snapshotsDir, ".staging", "half"), join(snapshotsDir, "orphan")]);
    assert.ok(existsSync(join(snapshotsDir, "snap1")));
    assert.deepEqual(await snapshots.missing(), []);
    const ok = await snapshotsCheck(snapshots).run();
    assert.ok(!Array.isArray(ok) && ok.status === "ok");
    await rm(join(snapshotsDir, "snap1"), { recursive: true });
    const check = await snapshotsCheck(snapshots).run();
    assert.ok(!Array.isArray(check));
    assert.equal(check.status, "fail");
    assert.match(check.detail, /lost their directory: warm/);
    assert.ok(check.hint);
  });
});
