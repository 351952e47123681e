/**
 * `image promote` with the real tools (qemu-img convert, debugfs, e2fsck)
 * on a VM row whose root disk is a real qcow2 overlay over an ext4 base
 * holding per-VM material: the new image keeps the VM's files and loses
 * its host keys, authorized key and machine id; a running VM refuses.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { ROOT_DISK_FILES } from "../../src/core/disk/index.ts";
import { PER_VM_FILES } from "../../src/core/image/index.ts";
import { resolveLayout, vmPaths } from "../../src/core/paths/index.ts";
import { createPromoter } from "../../src/daemon/image/promote.ts";
import { createPublisher } from "../../src/daemon/image/publish.ts";
import { createNodeFs } from "../../src/sys/fs/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { openStore } from "../../src/sys/store/index.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const tmp = makeTempDir("bgt-prom-");
after(() => tmp.cleanup());

function debugfs(image: string, request: string): string {
  return execFileSync("debugfs", ["-R", request, image], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
}

test("promote keeps the VM's files and removes its per-VM material", async () => {
  const layout = resolveLayout({ env: { BANGER_HOME: tmp.path }, uid: 0, homeDir: tmp.path });
  mkdirSync(layout.stateDir, { recursive: true });
  const store = openStore(layout.dbFile);
  const tree = join(tmp.path, "tree");
  for (const dir of ["root/.ssh", "etc/ssh", "var/lib/dbus", "root/.config/gh"])
    mkdirSync(join(tree, dir), { recursive: true });
  // An [auth] file `vm auth sync` wrote; the VM's directory lists it (paths only).
  writeFileSync(join(tree, "root/.config/gh/hosts my.yml"), "auth token\n");
  for (const file of PER_VM_FILES) writeFileSync(join(tree, file), "per-vm secret\n");
  writeFileSync(join(tree, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
  writeFileSync(join(tree, "root/marker"), "written by the first VM\n");
  const imageDir = join(layout.imagesDir, "base");
  mkdirSync(imageDir, { recursive: true });
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", tree, join(imageDir, "rootfs.ext4"), "32M"]);
  writeFileSync(join(imageDir, "vmlinuz"), "kernel");
  writeFileSync(join(imageDir, "initrd.gz"), "initrd");
  const now = new Date().toISOString();
  store.insertImage({
    id: "base",
    name: "base",
    kind: "debian",
    dir: imageDir,
    kernel: join(imageDir, "vmlinuz"),
    initrd: join(imageDir, "initrd.gz"),
    rootfs: join(imageDir, "rootfs.ext4"),
    sizeBytes: 1,
    createdAt: now,
  });
  const vm = {
    id: "vm1",
    name: "dev",
    imageId: "base",
    imageName: "base",
    vmm: "qemu" as const,
    cpus: 1,
    memoryMib: 512,
    diskGib: 2,
    guestIp: "10.77.0.2",
    mac: "52:54:00:00:00:02",
    state: "stopped" as const,
    lastError: null,
    createdAt: now,
    updatedAt: now,
  };
  store.insertVm(vm);
  mkdirSync(vmPaths(layout, vm.id).dir, { recursive: true });
  writeFileSync(join(vmPaths(layout, vm.id).dir, "auth-files.json"), '["/root/.config/gh/hosts my.yml"]\n');
  execFileSync("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    join(imageDir, "rootfs.ext4"),
    "-F",
    "raw",
    join(vmPaths(layout, vm.id).dir, ROOT_DISK_FILES["qcow2-overlay"].file),
  ]);
  const runner = createProcessRunner();
  const fs = createNodeFs();
  const ids = ["img1", "img2", "img3"];
  const promote = createPromoter({
    store,
    layout,
    runner,
    fs,
    logger: createMemoryLogger(),
    newId: () => ids.shift() ?? "img-late",
    now: () => new Date(),
    copyFile: async (from, to) => void (await runner.run(["cp", from, to])),
    readFile: (path) => readFile(path, "utf8"),
    publish: createPublisher({ store, layout, fs, newId: randomUUID, publishMutex: new Mutex() }),
  });
  const image = await promote("dev", "golden");
  assert.equal(image.kind, "promoted");
  assert.equal(image.source, "vm:dev");
  assert.equal(debugfs(image.rootfs, "cat /root/marker"), "written by the first VM\n");
  for (const file of PER_VM_FILES)
    assert.match(debugfs(image.rootfs, `stat ${file}`), /^$/, `${file} is gone`);
  assert.equal(debugfs(image.rootfs, "cat /etc/machine-id"), "");
  assert.match(
    debugfs(image.rootfs, 'stat "/root/.config/gh/hosts my.yml"'),
    /^$/,
    "the synced auth file is gone",
  );
  execFileSync("e2fsck", ["-fn", image.rootfs], { stdio: "ignore" });
  assert.equal(
    debugfs(join(imageDir, "rootfs.ext4"), "cat /root/.ssh/authorized_keys"),
    "per-vm secret\n",
    "the base is untouched",
  );
  assert.deepEqual(readdirSync(layout.imageStagingDir), []);
  store.setVmState(vm.id, "running", null, new Date().toISOString());
  await assert.rejects(promote("dev", "again"), { code: "BAD_STATE" });
  await assert.rejects(promote("dev", "golden"), { code: "BAD_STATE" });
  store.close();
});
