/**
 * `net.ipv4.ip_forward` of the daemon's network namespace. `enable` records
 * the value it found in `stateFile` when it changes it, and `restore` puts
 * that value back (then forgets it), so banger undoes only its own change,
 * also after a daemon restart.
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

const SYSCTL = "/proc/sys/net/ipv4/ip_forward";

export interface IpForward {
  read(): Promise<string>;
  enable(): Promise<void>;
  restore(): Promise<void>;
}

export function createIpForward(options: { stateFile: string; sysctlFile?: string }): IpForward {
  const file = options.sysctlFile ?? SYSCTL;
  const read = async () => (await readFile(file, "utf8")).trim();
  return {
    read,
    async enable() {
      const current = await read();
      if (current === "1") return;
      await writeFile(options.stateFile, `${current}\n`, { mode: 0o600 });
      try {
        await writeFile(file, "1\n");
      } catch (error) {
        await rm(options.stateFile, { force: true });
        throw new BangerError(
          ErrorCode.PERMISSION_DENIED,
          `cannot enable ${file}: ${(error as Error).message}`,
          {
            cause: error,
            hint: "run the daemon as root, or set net.ipv4.ip_forward=1 yourself",
          },
        );
      }
    },
    async restore() {
      const was = await readFile(options.stateFile, "utf8").catch(() => undefined);
      if (was === undefined) return;
      if (/^[01]$/.test(was.trim())) await writeFile(file, `${was.trim()}\n`);
      await rm(options.stateFile, { force: true });
    },
  };
}
