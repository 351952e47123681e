/**
 * Human output of VMs: the `vm ls` table and the `vm show` field table.
 */
import type { VmInfo } from "../../protocol/index.ts";
import { formatAge, formatTable } from "./table.ts";

export function formatVmList(vms: readonly VmInfo[], now: Date = new Date()): string {
  const rows = vms.map((v) => [
    v.name,
    v.state,
    v.image,
    v.vmm,
    String(v.cpus),
    `${v.memoryMib}M`,
    `${v.diskGib}G`,
    v.guestIp,
    formatAge(v.createdAt, now),
    (v.ports ?? []).join(",") || "-",
  ]);
  return formatTable(
    ["name", "state", "image", "vmm", "cpus", "memory", "disk", "ip", "created", "ports"],
    rows,
  );
}

export function describeVm(vm: VmInfo, now: Date = new Date()): string {
  const rows: [string, string][] = [
    ["name", vm.name],
    ["id", vm.id],
    ["state", vm.state],
    ["image", vm.image],
    ["vmm", vm.vmm],
    ["cpus", String(vm.cpus)],
    ["memory", `${vm.memoryMib} MiB`],
    ["disk", `${vm.diskGib} GiB`],
    ["ip", vm.guestIp],
    ["mac", vm.mac],
    ["ports", (vm.ports ?? []).join(", ") || "-"],
    ["egress", vm.egress ?? "allow"],
    ["pid", vm.pid === null ? "-" : String(vm.pid)],
    ["dir", vm.dir],
    ["created", `${vm.createdAt} (${formatAge(vm.createdAt, now)})`],
  ];
  if (vm.lastError) rows.push(["last error", vm.lastError.split("\n")[0]!]);
  return formatTable(["field", "value"], rows);
}
