/**
 * Human output of `vm stats` and `vm health`: two-column field tables, with
 * the reason in place of any value the daemon could not measure.
 */
import type { VmHealth, VmStats } from "../../protocol/index.ts";
import { formatBytes, formatTable } from "./table.ts";

export function formatVmStats(stats: VmStats): string {
  const rows: [string, string][] = [
    ["name", stats.name],
    ["state", stats.state],
  ];
  const { vmm, disk, guest } = stats;
  if (vmm) {
    rows.push(
      ["vmm pid", String(vmm.pid)],
      ["vmm cpu", vmm.cpuPercent === null ? "-" : `${vmm.cpuPercent.toFixed(1)}% (over ${vmm.sampleMs} ms)`],
      ["vmm rss", formatBytes(vmm.rssBytes)],
    );
  } else {
    rows.push(["vmm", unavailable(stats.vmmUnavailable)]);
  }
  if (disk) {
    rows.push(
      ["disk allocated", formatBytes(disk.allocatedBytes)],
      ["disk apparent", formatBytes(disk.apparentBytes)],
      ["disk file", disk.path],
    );
  } else {
    rows.push(["disk", unavailable(stats.diskUnavailable)]);
  }
  if (guest) {
    rows.push(
      ["guest uptime", guest.uptimeSeconds === null ? "-" : formatUptime(guest.uptimeSeconds)],
      ["guest memory", ofTotal(guest.memoryAvailableBytes, guest.memoryTotalBytes, "available")],
      ["guest rootfs", ofTotal(guest.rootfsUsedBytes, guest.rootfsSizeBytes, "used")],
    );
  } else {
    rows.push(["guest", unavailable(stats.guestUnavailable)]);
  }
  if (stats.egressDropped !== undefined) {
    rows.push(["egress dropped", stats.egressDropped === null ? "-" : `${stats.egressDropped} packets`]);
  }
  return formatTable(["field", "value"], rows);
}

export function formatVmHealth(health: VmHealth): string {
  return formatTable(
    ["check", "status", "detail"],
    health.checks.map((check) => [check.name, check.ok ? "ok" : "fail", check.detail]),
  );
}

/** "3d 4h", "2h 5m", "4m 10s", "12s". */
export function formatUptime(seconds: number): string {
  const total = Math.floor(seconds);
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${minutes}m`;
  if (minutes > 0) return `${minutes}m ${secs}s`;
  return `${secs}s`;
}

function ofTotal(part: number | null, total: number | null, what: string): string {
  if (part === null && total === null) return "-";
  if (part === null) return `${formatBytes(total!)} total`;
  if (total === null) return `${formatBytes(part)} ${what}`;
  return `${formatBytes(part)} ${what} of ${formatBytes(total)}`;
}

function unavailable(reason: string | null): string {
  return `- (${reason ?? "not reported"})`;
}
