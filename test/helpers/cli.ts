/** Runs the real CLI (bin/banger) as a subprocess with its own BANGER_HOME. */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const repoRoot = resolve(import.meta.dirname, "..", "..");
export const bangerBin = join(repoRoot, "bin", "banger");

/**
 * The image tests boot when they name none: the small catalog image, whose
 * build the e2e tier shares (scripts/prebuild-image.mjs builds the same).
 * The developer image is never built by the suite.
 */
export const TEST_IMAGE_ENV = { BANGER_DEFAULT_IMAGE: "debian-bookworm-minimal" } as const;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runBanger(
  args: readonly string[],
  options: { home: string; env?: Record<string, string>; input?: string; timeoutMs?: number },
): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bangerBin, args, {
      env: { ...TEST_IMAGE_ENV, ...process.env, BANGER_HOME: options.home, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

/** The pid of the daemon serving `home`, from its pid file. */
export function daemonPid(home: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(join(home, "run", "bangerd.pid"), "utf8"), 10);
  } catch {
    return undefined;
  }
}

/** Stops the daemon of `home` by its pid (SIGTERM), waiting until it is gone. */
export async function stopDaemon(home: string): Promise<void> {
  const pid = daemonPid(home);
  if (!pid) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  process.kill(pid, "SIGKILL");
}
