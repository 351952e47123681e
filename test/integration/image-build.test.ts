/**
 * The image service with the real runner and filesystem, on small inputs:
 * the build-cache path (real sparse `cp`, real renames) and the guest
 * scripts that run on the host (customize, mkinitramfs, export-boot) on a
 * fake rootfs tree. The full mmdebstrap build is too slow and needs the
 * mirror, so it is not part of the suite.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { defaultCatalogEntry, recipeHash, shortDigest } from "../../src/core/image/index.ts";
import { silentLogger } from "../../src/core/log/index.ts";
import { resolveLayout } from "../../src/core/paths/index.ts";
import { createImageService } from "../../src/daemon/image/index.ts";
import { createNodeFs } from "../../src/sys/fs/index.ts";
import { createBuildCacheChecks } from "../../src/sys/image-cache/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { openStore } from "../../src/sys/store/index.ts";

const guestDir = join(import.meta.dirname, "..", "..", "guest");

describe("image build (real runner, small inputs)", () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "banger-image-int-"));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("publishes a sparse copy of a build-cache entry", async () => {
    const guestFiles = readdirSync(guestDir, { withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => entry.name)
      .sort()
      .map((name) => ({ name, content: readFileSync(join(guestDir, name)) }));
    const cache = join(root, "cache");
    const entry = join(cache, shortDigest(recipeHash(defaultCatalogEntry().recipe, guestFiles)));
    mkdirSync(entry, { recursive: true });
    writeFileSync(join(entry, "vmlinuz"), "kernel");
    writeFileSync(join(entry, "initrd.gz"), "initrd");
    writeFileSync(join(entry, "packages.txt"), "bash 5.2\n");
    writeFileSync(join(entry, "rootfs.ext4"), "");
    truncateSync(join(entry, "rootfs.ext4"), 64 * 1024 * 1024);
    const checks = createBuildCacheChecks({ cacheDir: cache, uid: process.getuid?.() ?? 0 });
    const record = await checks.digestRecord(
      ["vmlinuz", "initrd.gz", "packages.txt", "rootfs.ext4"].map((name) => join(entry, name)),
    );
    writeFileSync(join(entry, record.name), record.content);

    const layout = resolveLayout({ env: { BANGER_HOME: join(root, "home") }, uid: 0, homeDir: root });
    mkdirSync(layout.stateDir, { recursive: true });
    const store = openStore(layout.dbFile);
    try {
      let ids = 0;
      const service = createImageService({
        store,
        runner: createProcessRunner(),
        layout,
        logger: silentLogger,
        publishMutex: new Mutex(),
        now: () => new Date(),
        newId: () => `int${++ids}`,
        guestFilesDir: guestDir,
        fs: createNodeFs(),
        buildCacheDir: cache,
        buildCacheChecks: checks,
        extractVmlinux: async () => {
          throw new Error("not used by this test");
        },
      });
      const image = await service.resolve("debian-bookworm");
      assert.equal(statSync(image.rootfs).size, 64 * 1024 * 1024);
      assert.ok(statSync(image.rootfs).blocks * 512 < 1024 * 1024, "the copy stays sparse");
      assert.equal(readFileSync(image.kernel, "utf8"), "kernel");
      assert.deepEqual(readdirSync(layout.imageStagingDir), []);
      await service.delete("debian-bookworm");
      assert.equal(existsSync(image.dir), false);
    } finally {
      store.close();
    }
  });

  it("customizes a tree, exports the kernel and builds the initramfs", () => {
    const tree = join(root, "tree");
    for (const dir of ["sbin", "usr/local/sbin", "etc/ssh", "boot", "bin", "var/lib/dpkg", "root/.ssh"]) {
      mkdirSync(join(tree, dir), { recursive: true });
    }
    const modules = join(tree, "lib/modules/6.1.0-1-cloud-amd64/kernel/drivers");
    mkdirSync(modules, { recursive: true });
    for (const module of [
      "virtio_ring",
      "virtio",
      "virtio_mmio",
      "virtio_blk",
      "failover",
      "net_failover",
      "virtio_net",
      "virtio-rng",
      "virtio_console",
      "vsock",
      "vmw_vsock_virtio_transport_common",
      "vmw_vsock_virtio_transport",
    ]) {
      writeFileSync(join(modules, `${module}.ko`), module);
    }
    writeFileSync(join(tree, "boot/vmlinuz-6.1.0-1-cloud-amd64"), "kernel");
    writeFileSync(join(tree, "boot/initrd.img-6.1.0-1-cloud-amd64"), "debian initrd");
    writeFileSync(join(tree, "etc/ssh/ssh_host_rsa_key"), "secret");
    writeFileSync(join(tree, "root/.ssh/authorized_keys"), "baked");
    writeFileSync(join(tree, "bin/busybox"), "busybox");
    writeFileSync(
      join(tree, "var/lib/dpkg/status"),
      "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15\n",
    );

    execFileSync("sh", [join(guestDir, "customize"), tree, guestDir]);
    assert.equal(statSync(join(tree, "sbin/banger-init")).mode & 0o777, 0o755);
    assert.ok(existsSync(join(tree, "usr/local/sbin/banger-setup")));
    assert.ok(existsSync(join(tree, "etc/ssh/sshd_config.d/banger.conf")));
    assert.equal(existsSync(join(tree, "etc/ssh/ssh_host_rsa_key")), false, "no host key is baked");
    assert.equal(existsSync(join(tree, "root/.ssh/authorized_keys")), false, "no authorized key is baked");
    assert.equal(existsSync(join(tree, "boot/initrd.img-6.1.0-1-cloud-amd64")), false);
    assert.equal(readFileSync(join(tree, "etc/resolv.conf"), "utf8"), "");
    assert.match(readFileSync(join(tree, "etc/fstab"), "utf8"), /^\/dev\/vda\t\/\text4/);

    const out = join(root, "out");
    mkdirSync(out);
    execFileSync("sh", [join(guestDir, "export-boot"), tree, out]);
    assert.equal(readFileSync(join(out, "vmlinuz"), "utf8"), "kernel");
    assert.equal(readFileSync(join(out, "packages.txt"), "utf8"), "bash 5.2.15\nzlib1g 1:1.2.13\n");

    execFileSync("sh", [
      join(guestDir, "mkinitramfs"),
      tree,
      join(tree, "bin/busybox"),
      join(out, "initrd.gz"),
    ]);
    const listing = execFileSync(
      "sh",
      ["-c", 'gzip -dc "$1" | cpio -it --quiet', "sh", join(out, "initrd.gz")],
      {
        encoding: "utf8",
      },
    );
    for (const path of ["init", "bin/busybox", "lib/modules/virtio_blk.ko", "lib/modules/virtio-rng.ko"]) {
      assert.ok(listing.split("\n").includes(path), path);
    }
  });
});
