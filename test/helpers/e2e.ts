/**
 * Shared set-up for e2e tests on real guests: a private network namespace
 * (created here, deleted in `dispose`), a BANGER_HOME, and the per-run image
 * cache so the default image is built once per run. Every daemon, VM, tap
 * and file the test makes is removed by `dispose`, which also reports leaks.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CliResult, daemonPid, runBanger, TEST_IMAGE_ENV } from "./cli.ts";
import { makeTempDir } from "./tmp.ts";

export const IMAGE_CACHE = process.env.BANGER_IMAGE_CACHE ?? "/var/tmp/banger-image-cache";

export function e2eSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "e2e tests need root (network namespaces, taps)";
  for (const tool of ["qemu-system-x86_64", "qemu-img", "mmdebstrap", "ip"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `e2e tests need ${tool} (run scripts/install-deps)`;
    }
  }
  return undefined;
}

export interface E2eEnv {
  home: string;
  netns: string;
  banger(args: readonly string[], options?: { input?: string; timeoutMs?: number }): Promise<CliResult>;
  /** Taps in the namespace with banger's prefix. */
  taps(): string[];
  /** VMM processes of this env: QEMU, or the Firecracker double and its QEMU. */
  qemuPids(): number[];
  vmDirs(): string[];
  dispose(): Promise<void>;
}

export function createE2eEnv(options: {
  name: string;
  config?: string;
  /** Extra environment for the CLI and the daemon it starts (and so the VMMs), given the env's home. */
  env?: (home: string) => Record<string, string>;
}): E2eEnv {
  const dir = makeTempDir("bge-");
  const home = dir.path;
  const netns = `bge-${options.name}-${process.pid}`.slice(0, 30);
  execFileSync("ip", ["netns", "add", netns]);
  mkdirSync(IMAGE_CACHE, { recursive: true });
  if (options.config) {
    mkdirSync(join(home, "config"), { recursive: true });
    writeFileSync(join(home, "config", "config.toml"), options.config);
  }
  const env = {
    ...TEST_IMAGE_ENV,
    ...options.env?.(home),
    BANGER_NETNS: netns,
    BANGER_IMAGE_CACHE: IMAGE_CACHE,
  };
  const qemuPids = () =>
    readdirSync("/proc")
      .filter((entry) => /^\d+$/.test(entry))
      .map(Number)
      .filter((pid) => {
        try {
          const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          return /qemu-system|double\.ts|firecracker/.test(cmdline) && cmdline.includes(home);
        } catch {
          return false;
        }
      });
  return {
    home,
    netns,
    banger: (args, more = {}) => runBanger(args, { home, env, timeoutMs: 600_000, ...more }),
    taps: () => {
      const out = execFileSync("ip", ["-n", netns, "-o", "link", "show"], { encoding: "utf8" });
      return [...out.matchAll(/^\d+: (bgr-[^:@]+)/gm)].map((match) => match[1]!);
    },
    qemuPids,
    vmDirs: () => (existsSync(join(home, "state", "vms")) ? readdirSync(join(home, "state", "vms")) : []),
    async dispose() {
      await runBanger(["daemon", "stop", "--stop-vms"], { home, env, timeoutMs: 120_000 }).catch(
        () => undefined,
      );
      const pid = daemonPid(home);
      if (pid) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
      for (const leftover of qemuPids()) process.kill(leftover, "SIGKILL");
      try {
        execFileSync("ip", ["netns", "del", netns]);
      } catch {
        // Already deleted.
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}
