/**
 * Host probes: facts about this machine that checks and planners need
 * (tools on PATH, file access, free disk, TSC frequency, user id).
 */
import { constants } from "node:fs";
import { access, readFile, statfs } from "node:fs/promises";
import { delimiter, join } from "node:path";

export interface HostProbes {
  nodeVersion(): string;
  uid(): number;
  /** Absolute path of a tool found on PATH, or undefined. */
  which(tool: string): Promise<string | undefined>;
  canAccess(path: string, mode: "r" | "rw" | "w"): Promise<boolean>;
  exists(path: string): Promise<boolean>;
  /** Free bytes for an unprivileged user on the filesystem holding `path`. */
  freeBytes(path: string): Promise<number>;
  /** Host TSC frequency in kHz (from /proc/cpuinfo), for tsc_early_khz. */
  tscKhz(): Promise<number | undefined>;
}

export function createHostProbes(
  env: Readonly<Record<string, string | undefined>> = process.env,
): HostProbes {
  return {
    nodeVersion: () => process.versions.node,
    uid: () => process.getuid?.() ?? -1,
    async which(tool) {
      if (tool.includes("/")) return (await isExecutable(tool)) ? tool : undefined;
      const dirs = (env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(
        delimiter,
      );
      for (const dir of [...dirs, "/usr/sbin", "/sbin"]) {
        if (dir === "") continue;
        const candidate = join(dir, tool);
        if (await isExecutable(candidate)) return candidate;
      }
      return undefined;
    },
    async canAccess(path, mode) {
      const flags =
        mode === "r" ? constants.R_OK : mode === "w" ? constants.W_OK : constants.R_OK | constants.W_OK;
      try {
        await access(path, flags);
        return true;
      } catch {
        return false;
      }
    },
    async exists(path) {
      try {
        await access(path, constants.F_OK);
        return true;
      } catch {
        return false;
      }
    },
    async freeBytes(path) {
      const stats = await statfs(path);
      return Number(stats.bavail) * Number(stats.bsize);
    },
    async tscKhz() {
      try {
        const text = await readFile("/proc/cpuinfo", "utf8");
        const match = /^cpu MHz\s*:\s*([\d.]+)/m.exec(text);
        return match ? Math.round(Number(match[1]) * 1000) : undefined;
      } catch {
        return undefined;
      }
    },
  };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The numeric id of a group from /etc/group, or undefined. */
export async function groupIdByName(name: string): Promise<number | undefined> {
  const text = await readFile("/etc/group", "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const [groupName, , gid] = line.split(":");
    if (groupName === name && gid !== undefined) return Number(gid);
  }
  return undefined;
}
