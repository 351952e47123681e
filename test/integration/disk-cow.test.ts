import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  attachRootDisk,
  createRootDisk,
  detachRootDisk,
  growRootDisk,
  probeCowStrategy,
  removeRootDisk,
} from "../../src/sys/disk/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";

const MiB = 1024 * 1024;
const runner = createProcessRunner();

/** Device-mapper snapshots need root, dmsetup and the kernel's snapshot target. */
function dmSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root";
  try {
    const targets = execFileSync("dmsetup", ["targets"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return /^snapshot\s/m.test(targets) ? undefined : "the kernel has no device-mapper snapshot target";
  } catch (error) {
    return `device-mapper is not usable here (dmsetup targets: ${String((error as Error).message).split("\n")[0]})`;
  }
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

/** A 16 MiB base with data at the start and the end and a hole in between. */
async function makeBase(path: string): Promise<void> {
  await writeFile(path, Buffer.alloc(MiB, 0x11));
  const file = await open(path, "r+");
  try {
    await file.write(Buffer.alloc(MiB, 0x22), 0, MiB, 15 * MiB);
  } finally {
    await file.close();
  }
}

describe("root disks on real filesystems", () => {
  let dir: string;
  let base: string;
  let baseHash: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-disk-int-"));
    base = join(dir, "base.ext4");
    await makeBase(base);
    baseHash = await sha256(base);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("qcow2 overlay: writes land in the overlay, the base stays byte-identical", async () => {
    const target = join(dir, "root.qcow2");
    const disk = await createRootDisk({
      strategy: "qcow2-overlay",
      base,
      target,
      sizeBytes: 32 * MiB,
      runner,
    });
    assert.equal(disk.format, "qcow2");
    const info = JSON.parse(
      (await runner.run(["qemu-img", "info", "--output=json", target])).stdout,
    ) as Record<string, unknown>;
    assert.equal(info["virtual-size"], 32 * MiB);
    assert.equal(info["backing-filename"], base);
    assert.equal(info["backing-filename-format"], "raw");
    await runner.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", target]);
    await runner.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", target]);
    await runner.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x22 15M 1M", target]);
    assert.equal(await sha256(base), baseHash, "base unchanged");
    await growRootDisk({ path: target, strategy: "qcow2-overlay", sizeBytes: 64 * MiB, runner });
    const grown = JSON.parse(
      (await runner.run(["qemu-img", "info", "--output=json", target])).stdout,
    ) as Record<string, unknown>;
    assert.equal(grown["virtual-size"], 64 * MiB);
    await disk.undo();
    await assert.rejects(stat(target), { code: "ENOENT" });
  });

  it("sparse copy on the host filesystem: same bytes, grown, holes kept", async () => {
    const target = join(dir, "root.raw");
    const disk = await createRootDisk({ strategy: "sparse-copy", base, target, sizeBytes: 64 * MiB, runner });
    const info = await stat(target);
    assert.equal(info.size, 64 * MiB);
    assert.ok(info.blocks * 512 < 8 * MiB, `copy is sparse (${info.blocks * 512} bytes allocated)`);
    const copy = await readFile(target);
    assert.ok(copy.subarray(0, 16 * MiB).equals(await readFile(base)));
    assert.ok(copy.subarray(16 * MiB).every((byte) => byte === 0));
    await disk.undo();
    await assert.rejects(stat(target), { code: "ENOENT" });
  });

  it("the strategy probed for the host's temp dir works there", async () => {
    const probe = await probeCowStrategy(dir, { runner });
    assert.ok(probe.reason.length > 0);
    if (probe.strategy === "dm-snapshot") return; // dm is exercised with the FakeRunner only
    const disk = await createRootDisk({
      strategy: probe.strategy,
      base,
      target: join(dir, "probed.raw"),
      sizeBytes: 16 * MiB,
      runner,
    });
    assert.equal(await sha256(disk.path), baseHash);
    await disk.undo();
  });

  describe("on XFS with reflink=1 (a loop-mounted image)", () => {
    let image: string;
    let mountpoint: string;
    let loop: string | undefined;
    let mounted = false;
    before(async () => {
      image = join(dir, "xfs.img");
      mountpoint = join(dir, "xfs");
      await mkdir(mountpoint);
      await runner.run(["truncate", "--size", "320M", image]);
      await runner.run(["mkfs.xfs", "-q", "-m", "reflink=1", image]);
      loop = (await runner.run(["losetup", "--find", "--show", image])).stdout.trim();
      await runner.run(["mount", loop, mountpoint]);
      mounted = true;
    });
    after(async () => {
      if (mounted) await runner.run(["umount", mountpoint]);
      if (loop) await runner.run(["losetup", "--detach", loop]);
    });

    it("probes reflink and reflinks a copy that diverges from the base", async () => {
      const xfsBase = join(mountpoint, "base.ext4");
      await makeBase(xfsBase);
      const probe = await probeCowStrategy(mountpoint, { runner });
      assert.equal(probe.strategy, "reflink", probe.reason);
      const target = join(mountpoint, "root.raw");
      const disk = await createRootDisk({
        strategy: "reflink",
        base: xfsBase,
        target,
        sizeBytes: 32 * MiB,
        runner,
      });
      assert.equal((await stat(target)).size, 32 * MiB);
      const file = await open(target, "r+");
      try {
        await file.write(Buffer.alloc(4096, 0xab), 0, 4096, 0);
      } finally {
        await file.close();
      }
      assert.equal(await sha256(xfsBase), baseHash, "the base is unchanged after writing the clone");
      assert.equal(
        (await readFile(target)).subarray(15 * MiB, 16 * MiB).every((byte) => byte === 0x22),
        true,
      );
      await disk.undo();
      await assert.rejects(stat(target), { code: "ENOENT" });
    });
  });

  describe("dm-snapshot on the host's device-mapper", { skip: dmSkipReason() }, () => {
    it("attaches per boot, keeps writes in the COW store across attaches, never writes the base", async () => {
      const target = join(dir, "root.cow");
      const options = { strategy: "dm-snapshot" as const, base, target, sizeBytes: 32 * MiB, runner };
      const disk = await createRootDisk(options);
      try {
        const first = await attachRootDisk(options);
        try {
          assert.equal(first.path, disk.path);
          await runner.run(["dd", "if=/dev/zero", `of=${first.path}`, "bs=4096", "count=1", "oflag=direct"]);
          await runner.run([
            "dd",
            "if=/dev/zero",
            `of=${first.path}`,
            "bs=1M",
            "seek=20",
            "count=1",
            "oflag=direct",
          ]);
        } finally {
          await detachRootDisk({ handles: first.handles, runner });
        }
        const second = await attachRootDisk(options);
        try {
          const head = await runner.run(["dd", `if=${second.path}`, "bs=4096", "count=1", "status=none"], {
            maxOutputBytes: 8192,
          });
          assert.equal(head.stdout, "\0".repeat(4096), "the write survived detach and attach");
        } finally {
          await detachRootDisk({ handles: second.handles, runner });
        }
        assert.equal(await sha256(base), baseHash, "the base is unchanged");
      } finally {
        await removeRootDisk({ handles: disk.handles, runner });
      }
      await assert.rejects(stat(target), { code: "ENOENT" });
    });
  });
});
