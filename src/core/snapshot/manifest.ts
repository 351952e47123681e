/**
 * A snapshot's manifest (`manifest.json` in its directory): what was saved
 * and what a restore needs to match. Restoring memory into a different
 * machine is undefined behaviour for the guest, so every field a restore
 * depends on is recorded and checked before a VMM is spawned.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { BootSpec } from "../vmm/contract.ts";

/** Bumped when the directory's layout or the manifest's meaning changes; older ones are refused. */
export const SNAPSHOT_FORMAT = 1;

/** Files of a snapshot directory, by role. */
export const SnapshotFiles = {
  manifest: "manifest.json",
  /** The VMM's saved state: QEMU's migration stream, or Firecracker's vmstate. */
  state: "state",
  /** Guest memory, for VMMs that keep it apart from the state (Firecracker). */
  memory: "memory",
  /** The source's auth record at the save (core/workspace), which its clones inherit. */
  authRecord: "auth-record.json",
} as const;

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

export const SnapshotManifest = z
  .object({
    format: z.literal(SNAPSHOT_FORMAT),
    id: z.string().min(1),
    name: z.string().min(1),
    createdAt: z.string(),
    source: z.object({ vmId: z.string(), vmName: z.string(), guestIp: z.string(), mac: z.string() }).strict(),
    driver: z.enum(["qemu", "firecracker"]),
    /** The VMM's version string when the driver knows it (Firecracker refuses other versions' states). */
    vmmVersion: z.string().nullable(),
    /** The accelerator the state was saved under (`kvm` or `tcg`); QEMU cannot load a TCG state into KVM. */
    accel: z.string().nullable(),
    machine: z
      .object({
        cpus: z.number().int().min(1),
        memoryMib: z.number().int().min(1),
        /** sha256 of the VMM's device layout (see machineSignature). */
        signature: Sha256,
      })
      .strict(),
    image: z.object({ id: z.string(), name: z.string() }).strict(),
    /** The kernel the guest was booted with: the file's name in the image and its size. */
    kernel: z.object({ file: z.string(), sizeBytes: z.number().int().min(0) }).strict(),
    disk: z
      .object({
        file: z.string().regex(/^[A-Za-z0-9._-]+$/),
        format: z.enum(["qcow2", "raw"]),
        /** Size the guest sees. */
        sizeBytes: z.number().int().min(1),
      })
      .strict(),
    /** Bytes of the state (and memory) files. */
    stateBytes: z.number().int().min(0),
    /** Auth files had been synced into the source VM. */
    includesSecrets: z.boolean(),
  })
  .strict();
export type SnapshotManifest = z.infer<typeof SnapshotManifest>;

/** Parses manifest.json; anything else is SNAPSHOT_MISMATCH naming the file. */
export function parseManifest(text: string, path: string): SnapshotManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new BangerError(ErrorCode.SNAPSHOT_MISMATCH, `${path} is not JSON`, { cause: error });
  }
  if (typeof json === "object" && json !== null && "format" in json && json.format !== SNAPSHOT_FORMAT) {
    throw new BangerError(
      ErrorCode.SNAPSHOT_MISMATCH,
      `${path} is snapshot format ${String(json.format)}; this banger reads format ${SNAPSHOT_FORMAT}`,
      { hint: "take a new snapshot with this banger, and delete the old one with `banger snapshot rm`" },
    );
  }
  const parsed = SnapshotManifest.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new BangerError(
      ErrorCode.SNAPSHOT_MISMATCH,
      `${path} is not a valid snapshot manifest: ${issue?.path.join(".") ?? ""} ${issue?.message ?? ""}`.trim(),
      { hint: "delete it with `banger snapshot rm` and take a new snapshot" },
    );
  }
  return parsed.data;
}

/** What a restore will run on, compared field by field with the manifest. */
export interface RestoreTarget {
  driver: "qemu" | "firecracker";
  vmmVersion: string | null;
  accel: string | null;
  cpus: number;
  memoryMib: number;
  /** machineSignature of the argv or API plan the restore would use. */
  signature: string;
  /** The kernel file the image has now (undefined when the image is gone). */
  kernel: { file: string; sizeBytes: number } | undefined;
}

/**
 * Refuses a restore whose machine differs from the saved one, naming the
 * first difference: driver, VMM version, accelerator, vCPUs, memory, the
 * device layout, then the kernel.
 */
export function checkRestore(manifest: SnapshotManifest, target: RestoreTarget): void {
  const refuse = (what: string, saved: string, wanted: string, hint?: string) => {
    throw new BangerError(
      ErrorCode.SNAPSHOT_MISMATCH,
      `snapshot ${manifest.name} was taken with ${what} ${saved}; this restore has ${wanted}`,
      hint === undefined ? {} : { hint },
    );
  };
  if (manifest.driver !== target.driver) {
    refuse(
      "VMM",
      manifest.driver,
      target.driver,
      `create the VM with --vmm ${manifest.driver}, or omit --vmm`,
    );
  }
  if (
    manifest.vmmVersion !== null &&
    target.vmmVersion !== null &&
    manifest.vmmVersion !== target.vmmVersion
  ) {
    refuse(`${manifest.driver} version`, manifest.vmmVersion, target.vmmVersion, "take a new snapshot");
  }
  if (manifest.accel !== null && target.accel !== null && manifest.accel !== target.accel) {
    refuse("accelerator", manifest.accel, target.accel, "take a new snapshot on this host");
  }
  if (manifest.machine.cpus !== target.cpus) {
    refuse("vCPUs", String(manifest.machine.cpus), String(target.cpus), "omit --cpus with --from");
  }
  if (manifest.machine.memoryMib !== target.memoryMib) {
    refuse(
      "memory (MiB)",
      String(manifest.machine.memoryMib),
      String(target.memoryMib),
      "omit --memory with --from",
    );
  }
  if (manifest.machine.signature !== target.signature) {
    refuse(
      "a device layout",
      manifest.machine.signature.slice(0, 12),
      target.signature.slice(0, 12),
      "banger's VMM layout changed since the snapshot; take a new snapshot",
    );
  }
  if (target.kernel === undefined) {
    refuse("image", manifest.image.name, "no such image", `the image ${manifest.image.name} was deleted`);
  } else if (
    target.kernel.file !== manifest.kernel.file ||
    target.kernel.sizeBytes !== manifest.kernel.sizeBytes
  ) {
    refuse(
      "kernel",
      `${manifest.kernel.file} (${manifest.kernel.sizeBytes} bytes)`,
      `${target.kernel.file} (${target.kernel.sizeBytes} bytes)`,
      "the image was rebuilt since the snapshot; take a new snapshot",
    );
  }
}

/**
 * A boot spec with every per-VM value (names, paths, tap, MAC, kernel,
 * cmdline) replaced by a placeholder. Paths inside the VM directory keep
 * their file name, so two VMs of one layout mask to the same spec.
 */
export function maskBootSpec(spec: BootSpec): BootSpec {
  const inVmDir = (path: string, placeholder: string) =>
    path.startsWith(`${spec.vmDir}/`) ? `<vm-dir>/${path.slice(spec.vmDir.length + 1)}` : placeholder;
  return {
    vmId: "<vm-id>",
    vmName: "<vm-name>",
    cpus: spec.cpus,
    memoryMib: spec.memoryMib,
    kernel: "<kernel>",
    initrd: spec.initrd === null ? null : inVmDir(spec.initrd, "<initrd>"),
    kernelCmdline: "<cmdline>",
    disk: { path: inVmDir(spec.disk.path, "<disk>"), format: spec.disk.format },
    baseDisk: spec.baseDisk === undefined ? undefined : "<base-disk>",
    tap: "<tap>",
    mac: "<mac>",
    consoleLog: inVmDir(spec.consoleLog, "<console>"),
    vmmLog: inVmDir(spec.vmmLog, "<vmm-log>"),
    vmDir: "<vm-dir>",
  };
}

/**
 * sha256 of a VMM plan made from a masked spec (maskBootSpec): QEMU's argv
 * or Firecracker's calls. A snapshot's state restores only into the same
 * signature, since QEMU and Firecracker load device state by position.
 */
export function machineSignature(plan: readonly string[]): string {
  return createHash("sha256").update(plan.join("\0")).digest("hex");
}

/** `<vm>-<yyyymmdd>-<hhmmss>` in UTC: the name `vm snapshot NAME` gives when none is asked for. */
export function defaultSnapshotName(vmName: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `${vmName.slice(0, 63 - stamp.length - 1)}-${stamp}`;
}

/** Names of N fork clones: NEW for one, NEW-1 … NEW-N for more. */
export function forkNames(newName: string, count: number): string[] {
  if (count === 1) return [newName];
  return Array.from({ length: count }, (_, index) => `${newName}-${index + 1}`);
}
