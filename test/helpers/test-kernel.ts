/**
 * A real Linux kernel for integration tests: the Debian cloud kernel that
 * `linux-image-cloud-amd64` currently points at, fetched with
 * `apt-get download` and unpacked with `dpkg-deb -x` (no install, no root
 * filesystem). Cached under /var/tmp/banger-test-kernel. Resolves undefined
 * when apt cannot fetch it, so tests skip with a reason instead of failing.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const CACHE_DIR = "/var/tmp/banger-test-kernel";
const CACHED_KERNEL = join(CACHE_DIR, "vmlinuz");

export const TEST_KERNEL_SKIP_REASON = "no test kernel: `apt-get download` of the Debian cloud kernel failed";

export async function testKernel(): Promise<string | undefined> {
  if (await exists(CACHED_KERNEL)) return CACHED_KERNEL;
  await mkdir(CACHE_DIR, { recursive: true });
  const work = await mkdtemp(join(CACHE_DIR, "fetch-"));
  try {
    const { stdout } = await run("apt-cache", ["depends", "linux-image-cloud-amd64"]);
    const pkg = /Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(stdout)?.[1];
    if (!pkg) return undefined;
    await run("apt-get", ["download", pkg], { cwd: work });
    const deb = (await readdir(work)).find((name) => name.endsWith(".deb"));
    if (!deb) return undefined;
    await run("dpkg-deb", ["-x", join(work, deb), join(work, "root")]);
    const vmlinuz = (await readdir(join(work, "root", "boot"))).find((name) => name.startsWith("vmlinuz-"));
    if (!vmlinuz) return undefined;
    await rename(join(work, "root", "boot", vmlinuz), CACHED_KERNEL);
    return CACHED_KERNEL;
  } catch {
    return undefined;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The host TSC rate in kHz; guests under TCG need it (`tsc_early_khz=`) or may hang calibrating. */
export async function hostTscKhz(): Promise<number | undefined> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8");
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  return mhz ? Math.round(Number(mhz) * 1000) : undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).size > 0;
  } catch {
    return false;
  }
}
