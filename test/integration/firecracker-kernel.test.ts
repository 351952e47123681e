import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { extractVmlinux, kernelFormat } from "../../src/sys/kernel/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";

const KERNEL_DIR = "/var/tmp/banger-test-kernel";

/** The cached Debian cloud kernel (see the test's `before`), or undefined. */
function debianCloudKernel(): string | undefined {
  const boot = join(KERNEL_DIR, "root", "boot");
  if (!existsSync(boot)) {
    const search = spawnSync("apt-cache", ["search", "^linux-image-6\\.1\\.0-[0-9]+-cloud-amd64-unsigned$"], {
      encoding: "utf8",
    });
    const name = search.stdout
      .split("\n")
      .map((line) => line.split(" ")[0] ?? "")
      .filter(Boolean)
      .sort((a, b) => a.localeCompare(b, "en", { numeric: true }))
      .at(-1);
    if (!name) return undefined;
    spawnSync("mkdir", ["-p", KERNEL_DIR]);
    if (spawnSync("apt-get", ["download", name], { cwd: KERNEL_DIR }).status !== 0) return undefined;
    const deb = readdirSync(KERNEL_DIR).find((file) => file.endsWith(".deb"));
    if (!deb || spawnSync("dpkg-deb", ["-x", join(KERNEL_DIR, deb), join(KERNEL_DIR, "root")]).status !== 0)
      return undefined;
  }
  const image = readdirSync(boot).find((file) => file.startsWith("vmlinuz-"));
  return image ? join(boot, image) : undefined;
}

/** A minimal bzImage: boot header (protocol 2.15) plus a payload compressed by `tool`. */
function fakeBzImage(elf: Buffer, compress: string[], sizeTrailer: boolean): Buffer {
  const compressed = spawnSync(compress[0]!, compress.slice(1), { input: elf }).stdout as Buffer;
  const payload = sizeTrailer
    ? Buffer.concat([compressed, Buffer.from(new Uint32Array([elf.length]).buffer)])
    : compressed;
  const setupSects = 1;
  const header = Buffer.alloc((setupSects + 1) * 512 + 64);
  header[0x1f1] = setupSects;
  header.write("HdrS", 0x202, "latin1");
  header.writeUInt16LE(0x20f, 0x206);
  header.writeUInt32LE(64, 0x248);
  header.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([header, payload, Buffer.alloc(512, 0xcc)]);
}

function minimalElf(): Buffer {
  const elf = Buffer.alloc(4096);
  elf.write("\x7fELF", 0, "latin1");
  elf[4] = 2;
  elf[5] = 1;
  elf[6] = 1;
  elf.writeUInt16LE(2, 16);
  elf.writeUInt16LE(62, 18);
  return elf;
}

describe("vmlinux extraction", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fc-kernel-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const [name, compress, trailer] of [
    ["lz4", ["lz4", "-l", "-c", "-q"], true],
    ["gzip", ["gzip", "-c", "-n"], false],
    ["zstd", ["zstd", "-c", "-q"], true],
    ["xz", ["xz", "-c", "--check=crc32"], true],
  ] as const) {
    it(`extracts a ${name} payload and checks it is an ELF64 x86-64 executable`, async () => {
      const image = join(dir, `bzImage-${name}`);
      await writeFile(image, fakeBzImage(minimalElf(), [...compress], trailer));
      assert.equal(await kernelFormat(image), "bzImage");
      const out = join(dir, `vmlinux-${name}`);
      const result = await extractVmlinux(createProcessRunner(), image, out);
      assert.equal(result.compression, name);
      assert.equal(result.pvh, false);
      assert.equal(result.bytes, 4096);
      assert.equal(await kernelFormat(out), "elf");
    });
  }

  it("refuses a payload that is not an x86-64 ELF, leaving nothing behind", async () => {
    const image = join(dir, "bzImage-text");
    await writeFile(
      image,
      fakeBzImage(Buffer.from("hello world\n".repeat(100)), ["gzip", "-c", "-n"], false),
    );
    await assert.rejects(extractVmlinux(createProcessRunner(), image, join(dir, "vmlinux-text")), {
      code: "IMAGE_BUILD_FAILED",
    });
    assert.deepEqual(
      (await readdir(dir)).filter((file) => file.includes("vmlinux-text")),
      [],
    );
  });

  it("extracts the Debian cloud kernel: LZ4 payload, ELF with the PVH note", async (t) => {
    const kernel = debianCloudKernel();
    if (!kernel) {
      t.skip("no Debian cloud kernel could be fetched with apt-get download");
      return;
    }
    assert.equal(await kernelFormat(kernel), "bzImage");
    const out = join(dir, "vmlinux-debian");
    const result = await extractVmlinux(createProcessRunner(), kernel, out);
    assert.equal(result.compression, "lz4");
    assert.equal(result.pvh, true);
    assert.ok(result.bytes > 20 * 1024 * 1024);
    assert.equal(await kernelFormat(out), "elf");
  });
});
