/**
 * Reads a directory out of a stopped VM's root disk without booting or
 * mounting it: a qcow2 overlay is first flattened to a sparse raw file
 * (`qemu-img convert -U`), then `debugfs rdump` copies the directory out of
 * the ext4 image, keeping modes, times and symlinks. The copy is guest
 * data, so it is made safe for git on the host: it is handed to an
 * unprivileged user (`chown -h`, never through a symlink), and as that user
 * (`setpriv`) every git directory in it gets a neutral config and loses its
 * alternates; programs then run on it as that user too.
 */
import { spawn } from "node:child_process";
import { lstat, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { cancelled } from "../../core/async/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Runner } from "../runner/index.ts";

/** The unprivileged user programs run as on guest data (nobody:nogroup). */
const UNPRIVILEGED = 65534;

/**
 * Run as the unprivileged user on the copy ($1): every git directory in it
 * (the repository's, its submodules') gets a neutral config and loses its
 * alternates. Unprivileged, so a symlink planted by the guest can only lead
 * to files that user may change anyway.
 */
const NEUTRALISE_SCRIPT = `set -eu
find "$1" -type d \\( -name .git -o -path '*/.git/modules/*' \\) -print | while IFS= read -r dir; do
  [ -e "$dir/HEAD" ] || continue
  rm -f -- "$dir/config" "$dir/objects/info/alternates" "$dir/objects/info/http-alternates"
  printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n' >"$dir/config"
done
`;

/** argv prefix that drops to the unprivileged user when the daemon is root. */
function unprivileged(): string[] {
  return process.getuid?.() === 0
    ? ["setpriv", `--reuid=${UNPRIVILEGED}`, `--regid=${UNPRIVILEGED}`, "--clear-groups", "--"]
    : [];
}

export interface DiskCopy {
  path: string;
  remove(): Promise<void>;
}

export async function copyOutOfDisk(options: {
  runner: Runner;
  diskFile: string;
  guestPath: string;
  scratchDir: string;
  signal: AbortSignal;
}): Promise<DiskCopy> {
  const { runner, diskFile, guestPath, signal } = options;
  if (/["\\]/.test(guestPath))
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `cannot read '${guestPath}' from a disk: it holds a quote or backslash`,
    );
  if (diskFile.endsWith(".cow"))
    throw new BangerError(
      ErrorCode.BAD_STATE,
      "this VM's disk is a device-mapper snapshot store; it is readable only while attached",
      {
        hint: "start the VM and export from the running guest",
      },
    );
  const dest = await mkdtemp(join(tmpdir(), "banger-export-"));
  const remove = () => rm(dest, { recursive: true, force: true });
  let raw = diskFile;
  let flattened: string | undefined;
  try {
    if (diskFile.endsWith(".qcow2")) {
      flattened = join(options.scratchDir, `.export-${process.pid}-${Date.now()}.raw`);
      await runner.run(["qemu-img", "convert", "-U", "-O", "raw", diskFile, flattened], { signal });
      raw = flattened;
    }
    await runner.run(["debugfs", "-R", `rdump "${guestPath}" "${dest}"`, raw], { signal });
    const copy = join(dest, basename(guestPath));
    const gitDir = join(copy, ".git");
    const found = await lstat(gitDir).catch(() => undefined);
    if (!found?.isDirectory()) {
      throw new BangerError(
        ErrorCode.WORKSPACE_FAILED,
        `the VM's disk holds no git repository at ${guestPath}`,
        {
          hint: "the workspace may have been moved or deleted inside the guest",
        },
      );
    }
    if (process.getuid?.() === 0)
      await runner.run(["chown", "-R", "-h", `${UNPRIVILEGED}:${UNPRIVILEGED}`, dest]);
    await runner.run([...unprivileged(), "sh", "-c", NEUTRALISE_SCRIPT, "banger-neutralise", copy], {
      signal,
    });
    return { path: copy, remove };
  } catch (error) {
    await remove();
    throw error;
  } finally {
    if (flattened) await rm(flattened, { force: true });
  }
}

/**
 * Runs argv (as nobody when the daemon is root) with an empty git
 * environment, feeding stdout to `onStdout` with backpressure. Keeps the
 * tail of stderr.
 */
export function runUnprivileged(options: {
  argv: readonly string[];
  onStdout(chunk: Buffer): void | Promise<void>;
  signal: AbortSignal;
}): Promise<{ exitCode: number | null; stderr: string }> {
  const { signal } = options;
  if (signal.aborted) return Promise.reject(cancelled(signal));
  const [command, ...args] = [...unprivileged(), ...options.argv] as [string, ...string[]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: "/",
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: "/nonexistent",
        GIT_CONFIG_NOSYSTEM: "1",
        GIT_CONFIG_GLOBAL: "/dev/null",
        TMPDIR: tmpdir(),
      },
    });
    let stderr = "";
    let failure: unknown;
    const onAbort = () => {
      failure ??= cancelled(signal);
      child.kill("SIGKILL");
    };
    signal.addEventListener("abort", onAbort, { once: true });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-4096);
    });
    let pending: Promise<void> = Promise.resolve();
    child.stdout.on("data", (chunk: Buffer) => {
      const outcome = options.onStdout(chunk);
      if (outcome instanceof Promise) {
        child.stdout.pause();
        pending = outcome.then(
          () => void child.stdout.resume(),
          (error: unknown) => {
            failure ??= error;
            child.kill("SIGKILL");
          },
        );
      }
    });
    child.on("error", (error) => {
      failure ??= error;
    });
    child.on("close", (code) => {
      void pending.then(() => {
        signal.removeEventListener("abort", onAbort);
        if (failure !== undefined) reject(failure);
        else resolve({ exitCode: code, stderr });
      });
    });
  });
}
