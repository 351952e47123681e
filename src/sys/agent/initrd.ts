/**
 * The agent binary banger built at install time (`scripts/build-agent`,
 * dist/banger-agent) and the per-boot initrd that carries it into a guest:
 * the image's own initrd with a gzip'd cpio holding `banger/agent` appended.
 * The image's initramfs-init copies it to a tmpfs on /.banger.
 */
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { newcArchive } from "../../core/agent/cpio.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** dist/banger-agent of this banger checkout. */
export function agentBinaryPath(): string {
  return join(import.meta.dirname, "..", "..", "..", "dist", "banger-agent");
}

/** Writes `out` = `imageInitrd` + the agent archive, atomically. */
export async function agentInitrd(options: {
  imageInitrd: string;
  agentBinary: string;
  out: string;
}): Promise<void> {
  let agent: Buffer;
  try {
    agent = await readFile(options.agentBinary);
  } catch (error) {
    throw new BangerError(ErrorCode.TOOL_MISSING, `the guest agent ${options.agentBinary} is missing`, {
      hint: "build it with `npm run build` (needs musl-gcc: `scripts/install-deps`)",
      cause: error,
    });
  }
  const base = await readFile(options.imageInitrd);
  const archive = newcArchive([
    { name: "banger", mode: 0o040755 },
    { name: "banger/agent", mode: 0o100755, data: agent },
  ]);
  const temp = `${options.out}.tmp-${process.pid}`;
  try {
    await writeFile(temp, Buffer.concat([base, gzipSync(archive, { level: 6 })]), { mode: 0o600 });
    await rename(temp, options.out);
  } finally {
    await rm(temp, { force: true });
  }
}
