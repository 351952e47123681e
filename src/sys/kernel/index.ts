/**
 * Guest kernel files: tells a bzImage from an ELF vmlinux, and extracts the
 * ELF vmlinux from a bzImage (for Firecracker releases that cannot boot a
 * bzImage). The compressed payload inside a bzImage is the vmlinux ELF; it is
 * decompressed with the matching tool (lz4, gzip, zstd or xz) through the
 * Runner, checked to be an ELF64 x86-64 executable, and written atomically.
 */
import { mkdtemp, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { KIB } from "../../core/units.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Runner } from "../runner/index.ts";

export type KernelFormat = "bzImage" | "elf";

export type PayloadCompression = "lz4" | "gzip" | "zstd" | "xz";

export interface ExtractedKernel {
  path: string;
  compression: PayloadCompression;
  /** True when the ELF carries XEN_ELFNOTE_PHYS32_ENTRY (PVH entry point). */
  pvh: boolean;
  bytes: number;
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const BZIMAGE_HEADER_MAGIC = Buffer.from("HdrS", "latin1");
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Byte signatures of each compressor's stream, and the argv that decompresses a file into another. */
const COMPRESSIONS: readonly {
  name: PayloadCompression;
  magic: Buffer;
  /** The kernel build appends the 4-byte decompressed size after every format except gzip. */
  sizeTrailer: boolean;
  /** File suffix the tool expects on its input. */
  suffix: string;
  /** Argv that decompresses `input` into `output` (input minus its suffix for gzip and xz). */
  decompress: (input: string, output: string) => string[];
  /** Debian package holding the tool, for the hint. */
  package: string;
}[] = [
  {
    name: "lz4",
    magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]),
    sizeTrailer: true,
    suffix: ".lz4",
    decompress: (input, output) => ["lz4", "-d", "-f", "-q", input, output],
    package: "lz4",
  },
  {
    name: "gzip",
    magic: Buffer.from([0x1f, 0x8b, 0x08]),
    sizeTrailer: false,
    suffix: ".gz",
    decompress: (input) => ["gzip", "-d", "-f", "-k", "-q", "--", input],
    package: "gzip",
  },
  {
    name: "zstd",
    magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
    sizeTrailer: true,
    suffix: ".zst",
    decompress: (input, output) => ["zstd", "-d", "-f", "-q", input, "-o", output],
    package: "zstd",
  },
  {
    name: "xz",
    magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
    sizeTrailer: true,
    suffix: ".xz",
    decompress: (input) => ["xz", "-d", "-f", "-k", "-q", "--", input],
    package: "xz-utils",
  },
];

/** "elf" for an ELF file, "bzImage" for a Linux boot-protocol image; anything else throws. */
export async function kernelFormat(path: string): Promise<KernelFormat> {
  const head = await readHead(path, 0x210);
  if (head.subarray(0, 4).equals(ELF_MAGIC)) return "elf";
  if (head.length >= 0x206 && head.subarray(0x202, 0x206).equals(BZIMAGE_HEADER_MAGIC)) return "bzImage";
  throw new BangerError(ErrorCode.CONFIG_INVALID, `${path} is neither an ELF vmlinux nor a bzImage`, {
    hint: "point the kernel setting at a vmlinux or a vmlinuz/bzImage file",
  });
}

/**
 * Extracts the vmlinux ELF from `bzImagePath` into `outPath` (temp file +
 * rename, so readers never see a partial file). Needs the decompressor for
 * the payload (`lz4`, `gzip`, `zstd` or `xz`) on PATH.
 */
export async function extractVmlinux(
  runner: Runner,
  bzImagePath: string,
  outPath: string,
  options: { signal?: AbortSignal } = {},
): Promise<ExtractedKernel> {
  const image = await readFile(bzImagePath);
  const payload = findPayload(image, bzImagePath);
  const workDir = await mkdtemp(join(dirname(outPath), `.${basename(outPath)}.extract-`));
  try {
    const elfPath = join(workDir, "vmlinux");
    const compressedPath = `${elfPath}${payload.compression.suffix}`;
    await writeFile(compressedPath, payload.bytes);
    const argv = payload.compression.decompress(compressedPath, elfPath);
    const result = await runner.run(argv, {
      allowFailure: true,
      signal: options.signal,
      maxOutputBytes: 64 * KIB,
    });
    const elf = await readFile(elfPath).catch(() => Buffer.alloc(0));
    if (result.code !== 0 && !isElf64X86Executable(elf)) {
      throw new BangerError(
        ErrorCode.IMAGE_BUILD_FAILED,
        `cannot decompress the ${payload.compression.name} payload of ${bzImagePath}: ${result.stderr.trim() || `exit ${result.code}`}`,
        { hint: `install the ${payload.compression.package} package` },
      );
    }
    checkElf(elf, bzImagePath);
    const pvh = hasPvhNote(elf);
    // workDir sits next to outPath, so this rename is atomic.
    await rename(elfPath, outPath);
    const { size } = await stat(outPath);
    return { path: outPath, compression: payload.compression.name, pvh, bytes: size };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

interface Payload {
  compression: (typeof COMPRESSIONS)[number];
  bytes: Buffer;
}

/**
 * Locates the compressed vmlinux. Boot protocol >= 2.08 records its offset and
 * length (0x248/0x24c, relative to the protected-mode code); older images are
 * scanned for the first known magic, as scripts/extract-vmlinux does.
 */
function findPayload(image: Buffer, name = "bzImage"): Payload {
  if (image.length > 0x250 && image.subarray(0x202, 0x206).equals(BZIMAGE_HEADER_MAGIC)) {
    const protocol = image.readUInt16LE(0x206);
    const setupSects = image[0x1f1] || 4;
    if (protocol >= 0x208) {
      const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
      const length = image.readUInt32LE(0x24c);
      const bytes = image.subarray(start, start + length);
      const compression = COMPRESSIONS.find((candidate) =>
        bytes.subarray(0, candidate.magic.length).equals(candidate.magic),
      );
      if (compression && bytes.length === length) {
        return { compression, bytes: compression.sizeTrailer ? bytes.subarray(0, length - 4) : bytes };
      }
    }
  }
  let best: Payload | undefined;
  let bestAt = Number.POSITIVE_INFINITY;
  for (const compression of COMPRESSIONS) {
    const at = image.indexOf(compression.magic);
    if (at >= 0 && at < bestAt) {
      bestAt = at;
      best = { compression, bytes: image.subarray(at) };
    }
  }
  if (!best) {
    throw new BangerError(ErrorCode.CONFIG_INVALID, `${name} holds no lz4, gzip, zstd or xz payload`, {
      hint: "use a Linux x86-64 bzImage, or an uncompressed vmlinux",
    });
  }
  return best;
}

function isElf64X86Executable(elf: Buffer): boolean {
  return (
    elf.length >= 64 &&
    elf.subarray(0, 4).equals(ELF_MAGIC) &&
    elf[4] === 2 && // ELFCLASS64
    elf[5] === 1 && // little endian
    elf.readUInt16LE(16) === 2 && // ET_EXEC
    elf.readUInt16LE(18) === 62 // EM_X86_64
  );
}

function checkElf(elf: Buffer, source: string): void {
  if (!isElf64X86Executable(elf)) {
    throw new BangerError(
      ErrorCode.IMAGE_BUILD_FAILED,
      `the payload of ${source} did not decompress to an ELF64 x86-64 executable`,
      { hint: "use an x86-64 Linux kernel" },
    );
  }
}

/** Walks the PT_NOTE segments for a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY. */
function hasPvhNote(elf: Buffer): boolean {
  if (!isElf64X86Executable(elf)) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let index = 0; index < phnum; index++) {
    const header = phoff + index * phentsize;
    if (header + 56 > elf.length) break;
    if (elf.readUInt32LE(header) !== 4) continue; // PT_NOTE
    const offset = Number(elf.readBigUInt64LE(header + 8));
    const size = Number(elf.readBigUInt64LE(header + 32));
    if (notesContainPvh(elf, offset, Math.min(offset + size, elf.length))) return true;
  }
  return false;
}

function notesContainPvh(elf: Buffer, start: number, end: number): boolean {
  const align4 = (n: number) => (n + 3) & ~3;
  let at = start;
  while (at + 12 <= end) {
    const nameSize = elf.readUInt32LE(at);
    const descSize = elf.readUInt32LE(at + 4);
    const type = elf.readUInt32LE(at + 8);
    const name = elf
      .subarray(at + 12, at + 12 + nameSize)
      .toString("latin1")
      .replace(/\0+$/, "");
    if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
    at += 12 + align4(nameSize) + align4(descSize);
  }
  return false;
}

async function readHead(path: string, length: number): Promise<Buffer> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new BangerError(
      ErrorCode.CONFIG_INVALID,
      `cannot open the kernel ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
