/**
 * Accelerator choice for QEMU. `auto` uses KVM only when /dev/kvm is
 * read-write AND a short probe boot under KVM reaches the kernel's banner:
 * nested or broken KVM setups exist where /dev/kvm opens fine but guests
 * hang or QEMU aborts. The probe result is cached per kernel and binary.
 */
import { constants } from "node:fs";
import { access, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { KIB } from "../../core/units.ts";
import { planKvmProbeArgv, type QemuAccel } from "../../core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { writeFileAtomic } from "../fs/index.ts";
import { createProcessRunner, type Runner } from "../runner/index.ts";

export type AccelSetting = "auto" | "kvm" | "tcg";

export interface ChooseAccelOptions {
  configured: AccelSetting;
  /** The kernel the probe boots (no initrd: the probe only needs the kernel banner). */
  kernel: string;
  binary: string;
  /** JSON cache of probe results, keyed by kernel path + mtime and QEMU binary. */
  cacheFile: string;
  runner?: Runner | undefined;
  kvmDevice?: string | undefined;
  probeTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface AccelChoice {
  accel: QemuAccel;
  configured: AccelSetting;
  /** One sentence saying why, for logs and `banger doctor`. */
  reason: string;
  /** Whether this came from the cache rather than a fresh probe or check. */
  cached: boolean;
}

interface ProbeOutcome {
  works: boolean;
  reason: string;
}

type ProbeCache = Record<string, ProbeOutcome & { probedAt: string }>;

const DEFAULT_KVM_DEVICE = "/dev/kvm";
const DEFAULT_PROBE_TIMEOUT_MS = 8_000;
/** Printed by every Linux kernel as its first console line. */
const KERNEL_BANNER = "Linux version";

export async function chooseAccel(options: ChooseAccelOptions): Promise<AccelChoice> {
  const { configured } = options;
  if (configured === "tcg") {
    return {
      accel: "tcg",
      configured,
      reason: "vmm.accel is set to tcg (software emulation)",
      cached: false,
    };
  }
  const device = options.kvmDevice ?? DEFAULT_KVM_DEVICE;
  const deviceProblem = await kvmDeviceProblem(device);
  if (deviceProblem) {
    if (configured === "kvm") throw kvmUnusable(deviceProblem.message, deviceProblem.code);
    return { accel: "tcg", configured, reason: `${deviceProblem.message}; using TCG`, cached: false };
  }
  const { outcome, cached } = await probeCached(options);
  if (outcome.works) return { accel: "kvm", configured, reason: outcome.reason, cached };
  if (configured === "kvm") throw kvmUnusable(outcome.reason, ErrorCode.BAD_STATE);
  return { accel: "tcg", configured, reason: `${outcome.reason}; using TCG`, cached };
}

async function kvmDeviceProblem(device: string): Promise<{ message: string; code: ErrorCode } | undefined> {
  try {
    await access(device, constants.R_OK | constants.W_OK);
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { message: `${device} does not exist`, code: ErrorCode.TOOL_MISSING };
    return {
      message: `${device} is not readable and writable by this user (${code})`,
      code: ErrorCode.PERMISSION_DENIED,
    };
  }
}

function kvmUnusable(why: string, code: ErrorCode): BangerError {
  return new BangerError(code, `vmm.accel is kvm but KVM is not usable: ${why}`, {
    hint: 'set vmm.accel = "auto" (falls back to TCG) or "tcg" in config.toml, or fix KVM (module loaded, /dev/kvm rw)',
  });
}

async function probeCached(options: ChooseAccelOptions): Promise<{ outcome: ProbeOutcome; cached: boolean }> {
  const key = await cacheKey(options);
  const cache = await readCache(options.cacheFile);
  const hit = cache[key];
  if (hit) return { outcome: { works: hit.works, reason: hit.reason }, cached: true };
  const outcome = await probeKvm(options);
  cache[key] = { ...outcome, probedAt: new Date().toISOString() };
  await writeCache(options.cacheFile, cache);
  return { outcome, cached: false };
}

async function cacheKey(options: ChooseAccelOptions): Promise<string> {
  let mtime: number;
  try {
    mtime = (await stat(options.kernel)).mtimeMs;
  } catch (error) {
    throw new BangerError(
      ErrorCode.IMAGE_NOT_FOUND,
      `kernel ${options.kernel} for the KVM probe is missing`,
      {
        cause: error,
      },
    );
  }
  return JSON.stringify([options.kernel, mtime, options.binary]);
}

async function readCache(file: string): Promise<ProbeCache> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, "utf8"));
    return typeof parsed === "object" && parsed !== null ? (parsed as ProbeCache) : {};
  } catch {
    return {};
  }
}

async function writeCache(file: string, cache: ProbeCache): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(cache, null, 2)}\n`, { mode: 0o644 });
}

/**
 * Boots the kernel under KVM with no root disk: it prints its banner, panics
 * at mounting root, `panic=-1` reboots it and `-no-reboot` makes QEMU exit.
 * Works = the banner appeared and QEMU exited on its own within the timeout.
 */
async function probeKvm(options: ChooseAccelOptions): Promise<ProbeOutcome> {
  const runner = options.runner ?? createProcessRunner();
  const timeoutMs = options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const seconds = `${Math.round(timeoutMs / 100) / 10} s`;
  const workDir = await mkdtemp(join(tmpdir(), "banger-kvm-probe-"));
  try {
    const consoleLog = join(workDir, "console.log");
    const result = await runner.run(
      planKvmProbeArgv({ binary: options.binary, kernel: options.kernel, consoleLog }),
      {
        timeoutMs,
        allowFailure: true,
        signal: options.signal,
        maxOutputBytes: 64 * KIB,
      },
    );
    const consoleText = await readFile(consoleLog, "utf8").catch(() => "");
    const sawBanner = consoleText.includes(KERNEL_BANNER);
    const timedOut = result.signal !== null && result.durationMs >= timeoutMs;
    if (timedOut) {
      return {
        works: false,
        reason: sawBanner
          ? `KVM probe boot started but did not complete in ${seconds}`
          : `KVM probe boot did not complete in ${seconds}`,
      };
    }
    if (!sawBanner || result.code !== 0) {
      const how = result.signal ? `was killed by ${result.signal}` : `exited with status ${result.code}`;
      const when = sawBanner ? "during the boot" : "before the kernel started";
      const stderr = result.stderr.trim().split("\n")[0] ?? "";
      return { works: false, reason: `KVM probe: QEMU ${how} ${when}${stderr ? `: ${stderr}` : ""}` };
    }
    return { works: true, reason: `a KVM probe boot of ${options.kernel} completed` };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}
