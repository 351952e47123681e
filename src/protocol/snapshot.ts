/**
 * Methods of memory snapshots: `vm.snapshot` saves a running or paused VM's
 * memory, device state and disk (the VM goes on running), `snapshot.*`
 * lists, shows and deletes them, and `vm.fork` makes N clones of a running
 * VM through one snapshot. `vm.create` and `vm.run` take `from` (see
 * CreateVmParams) to start a VM from one.
 */
import { z } from "zod";

/** 1-63 lowercase letters, digits, dots, underscores or hyphens, starting with a letter or digit. */
export const SnapshotNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, {
  message: "must be 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
});

export const SnapshotInfo = z.object({
  id: z.string(),
  name: z.string(),
  /** The VM it was taken from (its name at that time). */
  sourceVm: z.string(),
  vmm: z.enum(["qemu", "firecracker"]),
  image: z.string(),
  cpus: z.number(),
  memoryMib: z.number(),
  diskGib: z.number(),
  /** Bytes of the saved memory and device state. */
  memoryBytes: z.number(),
  /** Bytes the frozen disk takes on the host (allocated). */
  diskBytes: z.number(),
  /** True when auth files had been synced into the source VM (`--include-secrets`). */
  includesSecrets: z.boolean(),
  createdAt: z.string(),
  dir: z.string(),
  /** Names of the VMs whose disks are backed by it. */
  usedBy: z.array(z.string()),
});
export type SnapshotInfo = z.infer<typeof SnapshotInfo>;

const VmName = z.string().min(1);

export const VmSnapshotParams = z
  .object({
    name: VmName,
    /** Defaults to `<vm>-<UTC time>`. */
    snapshot: SnapshotNameSchema.optional(),
    /** Allow a VM that `vm auth sync` wrote credentials into: its memory and disk may hold them. */
    includeSecrets: z.boolean().optional(),
  })
  .strict();
export type VmSnapshotParams = z.infer<typeof VmSnapshotParams>;

/** The most clones one fork makes. */
const MAX_FORK_COUNT = 64;

export const VmForkParams = z
  .object({
    name: VmName,
    /** The clone's name; with `count` > 1 the clones are NEW-1 … NEW-N. */
    newName: z.string().min(1),
    count: z.number().int().min(1).max(MAX_FORK_COUNT).optional(),
    includeSecrets: z.boolean().optional(),
  })
  .strict();
export type VmForkParams = z.infer<typeof VmForkParams>;

export const snapshotMethods = {
  "vm.snapshot": { params: VmSnapshotParams, result: SnapshotInfo },
  "snapshot.list": {
    params: z.object({}).strict().optional(),
    result: z.object({ snapshots: z.array(SnapshotInfo) }),
  },
  "snapshot.show": { params: z.object({ name: z.string().min(1) }).strict(), result: SnapshotInfo },
  "snapshot.delete": {
    params: z.object({ name: z.string().min(1) }).strict(),
    result: z.object({ name: z.string(), deleted: z.literal(true) }),
  },
} as const;
