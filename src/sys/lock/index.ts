/**
 * The one-daemon-per-home lock: an exclusive flock(2) on the home's lock
 * file, taken before the daemon touches anything else and held for its whole
 * life. Node has no flock call, so `flock --nonblock 3` locks the daemon's
 * own open file description, passed to it as fd 3; the lock stays with that
 * description after flock exits, and the kernel drops it when the daemon's
 * descriptor closes, including on kill -9. The descriptor is close-on-exec,
 * so VMMs and tools never inherit it.
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface DaemonLock {
  /** Releases the lock (closing the descriptor); the process exiting does the same. */
  release(): void;
}

export interface DaemonLockOptions {
  lockFile: string;
  /** Read to name the running daemon in the refusal. */
  pidFile: string;
  /** The state directory, for the message. */
  home: string;
}

/** Takes the lock or throws DAEMON_RUNNING naming the daemon that holds it. */
export function acquireDaemonLock(options: DaemonLockOptions): DaemonLock {
  mkdirSync(dirname(options.lockFile), { recursive: true, mode: 0o700 });
  const fd = openSync(options.lockFile, "a", 0o600);
  const result = spawnSync("flock", ["--exclusive", "--nonblock", "3"], {
    stdio: ["ignore", "ignore", "pipe", fd],
    encoding: "utf8",
  });
  if (result.status === 0) {
    let released = false;
    return {
      release() {
        if (released) return;
        released = true;
        closeSync(fd);
      },
    };
  }
  closeSync(fd);
  if (result.error) {
    const missing = (result.error as NodeJS.ErrnoException).code === "ENOENT";
    throw new BangerError(
      missing ? ErrorCode.TOOL_MISSING : ErrorCode.INTERNAL,
      missing
        ? "flock is not installed (util-linux)"
        : `cannot lock ${options.lockFile}: ${result.error.message}`,
      { cause: result.error },
    );
  }
  if (result.status !== 1) {
    throw new BangerError(
      ErrorCode.PERMISSION_DENIED,
      `cannot lock ${options.lockFile}: ${(result.stderr ?? "").trim() || `flock exited with ${result.status}`}`,
    );
  }
  const pid = readPid(options.pidFile);
  throw new BangerError(
    ErrorCode.DAEMON_RUNNING,
    `bangerd is already running${pid === undefined ? "" : ` (pid ${pid})`} for ${options.home}`,
    { hint: "use it, or stop it with `banger daemon stop`" },
  );
}

function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(pidFile, "utf8").trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
