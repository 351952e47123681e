/**
 * The agent binary banger built at install time (`scripts/build-agent`,
 * dist/banger-agent) and the per-boot initrd that carries it into a guest:
 * the image's own initrd with a gzip'd cpio holding `banger/agent` appended.
 * The image's initramfs-init copies it to a tmpfs on /.banger.
 *
 * An image with no kernel of its own (an OCI image) boots another image's
 * initrd and gets banger's guest files too: `banger/init` (banger-init),
 * `banger/bin/{banger-setup,powerbtn-wait}`, and this banger's
 * initramfs-init as `/init`, replacing the one baked into that initrd (a
 * later archive's file replaces an earlier one), so the boot does not depend
 * on when the kernel's image was built.
 */
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { CpioEntry } from "../../core/agent/cpio.ts";
import { newcArchive } from "../../core/agent/cpio.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** dist/banger-agent of this banger checkout. */
export function agentBinaryPath(): string {
  return join(import.meta.dirname, "..", "..", "..", "dist", "banger-agent");
}

/** banger's guest files an OCI image boots with: path in the initrd, then the file in guest/. */
const KERNELLESS_FILES: readonly [string, string][] = [
  ["init", "initramfs-init"],
  ["banger/init", "banger-init"],
  ["banger/bin/banger-setup", "banger-setup"],
  ["banger/bin/powerbtn-wait", "powerbtn-wait"],
];

/** Writes `out` = `imageInitrd` + the agent archive, atomically; `guestFilesDir` adds banger's guest files. */
export async function agentInitrd(options: {
  imageInitrd: string;
  agentBinary: string;
  out: string;
  guestFilesDir?: string | undefined;
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
  const entries: CpioEntry[] = [
    { name: "banger", mode: 0o040755 },
    { name: "banger/agent", mode: 0o100755, data: agent },
  ];
  if (options.guestFilesDir !== undefined) {
    entries.push({ name: "banger/bin", mode: 0o040755 });
    for (const [name, file] of KERNELLESS_FILES)
      entries.push({ name, mode: 0o100755, data: await readFile(join(options.guestFilesDir, file)) });
  }
  const archive = newcArchive(entries);
  const temp = `${options.out}.tmp-${process.pid}`;
  try {
    await writeFile(temp, Buffer.concat([base, gzipSync(archive, { level: 6 })]), { mode: 0o600 });
    await rename(temp, options.out);
  } finally {
    await rm(temp, { force: true });
  }
}
