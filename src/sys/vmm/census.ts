/**
 * Finds every VMM process of one banger home from /proc, whatever
 * handles.json says (it may be missing, torn, or not yet written when a
 * daemon died between spawn and record). A VMM of this home is a process
 * one of whose arguments holds `<vmsDir>/<vm id>/<control socket>` (QEMU's
 * `-qmp unix:…/qmp.sock`, Firecracker's `--api-sock …/api.sock`): absolute
 * paths under this home's VMs directory, so VMMs of other homes never match.
 * Zombies are skipped (they are already dead).
 */
import { readdir } from "node:fs/promises";
import type { VmmHandle } from "../../core/vmm/index.ts";
import { readCmdline, readProcStat } from "../proc/index.ts";

export interface VmmProcess {
  vmId: string;
  /** A handle liveness checks and kills accept: the control socket is the argv marker. */
  handle: VmmHandle;
}

export interface VmmCensusOptions {
  vmsDir: string;
  /** Control socket file names inside a VM directory, one per driver. */
  controlFiles: readonly string[];
}

export async function listVmmProcesses(options: VmmCensusOptions): Promise<VmmProcess[]> {
  const prefix = `${options.vmsDir.replace(/\/+$/, "")}/`;
  const entries = await readdir("/proc");
  const found: VmmProcess[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const match = await matchProcess(pid, prefix, options.controlFiles).catch(() => undefined);
    if (match) found.push(match);
  }
  return found;
}

async function matchProcess(
  pid: number,
  prefix: string,
  controlFiles: readonly string[],
): Promise<VmmProcess | undefined> {
  const argv = await readCmdline(pid);
  if (!argv) return undefined;
  for (const arg of argv) {
    const at = arg.indexOf(prefix);
    if (at < 0) continue;
    const rest = arg.slice(at + prefix.length);
    const slash = rest.indexOf("/");
    if (slash <= 0) continue;
    const vmId = rest.slice(0, slash);
    const file = rest.slice(slash + 1).split(",")[0] ?? "";
    if (!controlFiles.includes(file)) continue;
    const stat = await readProcStat(pid);
    if (!stat || stat.state === "Z" || stat.state === "X") return undefined;
    return {
      vmId,
      handle: { pid, pidStartTicks: stat.startTicks, controlSocket: `${prefix}${vmId}/${file}` },
    };
  }
  return undefined;
}
