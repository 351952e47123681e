/**
 * Pure plans for per-VM root disks over an image's read-only raw base:
 * a qcow2 overlay (QEMU), or a raw copy-on-write disk for VMMs that only
 * open raw files (Firecracker): reflink copy, sparse copy, or a
 * device-mapper snapshot. Each plan is a list of commands with the exact
 * undo of each, so a half-made disk unwinds and a stored disk tears down.
 */
import { createHash } from "node:crypto";
import { isAbsolute } from "node:path";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { MIB } from "../units.ts";

export const RootDiskStrategy = ["qcow2-overlay", "reflink", "sparse-copy", "dm-snapshot"] as const;
export type RootDiskStrategy = (typeof RootDiskStrategy)[number];

/** Strategies that give a raw disk, in order of preference. */
export const RawCowStrategy = ["reflink", "dm-snapshot", "sparse-copy"] as const;
export type RawCowStrategy = (typeof RawCowStrategy)[number];

export type DiskFormat = "qcow2" | "raw";

/**
 * The one table of stored root-disk names: the file in a VM's directory
 * each strategy makes, and the format the VMM opens it as. The file's name
 * is the only record of the strategy. reflink and sparse-copy make the same
 * file, and everything after creation treats them alike.
 */
export const ROOT_DISK_FILES: Readonly<Record<RootDiskStrategy, { file: string; format: DiskFormat }>> = {
  "qcow2-overlay": { file: "root.qcow2", format: "qcow2" },
  reflink: { file: "root.raw", format: "raw" },
  "sparse-copy": { file: "root.raw", format: "raw" },
  "dm-snapshot": { file: "root.cow", format: "raw" },
};

/** The strategies a stored disk is looked up as, one per distinct file, in lookup order. */
export const STORED_DISK_LOOKUP: readonly RootDiskStrategy[] = [
  "qcow2-overlay",
  "dm-snapshot",
  "sparse-copy",
];

/**
 * The strategy for a new disk: an overlay when the VMM opens qcow2, else
 * the host's raw strategy (asked only then, since finding it out is a probe).
 */
export async function rootDiskStrategyFor(
  formats: readonly DiskFormat[],
  rawStrategy: () => Promise<RawCowStrategy>,
): Promise<RootDiskStrategy> {
  return formats.includes("qcow2") ? "qcow2-overlay" : rawStrategy();
}

/**
 * What a running VM's root disk holds on the host for one boot, as stored
 * in handles.json: a dm snapshot's devices, or just the file the VMM opens.
 */
export type DiskHandles =
  | {
      strategy: "dm-snapshot";
      dmName: string;
      baseLoop: string;
      cowLoop: string;
      dmOrigin?: string | undefined;
    }
  | { strategy: "file"; path: string };

/** Types the handles an attach plan's executor returned (see planDiskAttach). */
export function diskHandlesFrom(path: string, handles: Readonly<Record<string, string>>): DiskHandles {
  const { dmName, baseLoop, cowLoop, dmOrigin } = handles;
  if (dmName === undefined) return { strategy: "file", path };
  if (baseLoop === undefined || cowLoop === undefined) {
    throw new BangerError(ErrorCode.INTERNAL, `dm-snapshot ${dmName} was attached without both loop devices`);
  }
  return {
    strategy: "dm-snapshot",
    dmName,
    baseLoop,
    cowLoop,
    ...(dmOrigin === undefined ? {} : { dmOrigin }),
  };
}

/** The handle map `planDiskDetach` reads, from typed handles. */
export function diskHandleRecord(handles: DiskHandles): Record<string, string> {
  if (handles.strategy === "file") return {};
  const { strategy: _, dmOrigin, ...devices } = handles;
  return dmOrigin === undefined ? devices : { ...devices, dmOrigin };
}

/**
 * One external command. Argv elements may hold `{name}` placeholders,
 * replaced by handle values (static ones or ones captured earlier).
 */
export interface DiskCommand {
  argv: readonly string[];
  /** Written to the command's stdin. */
  input?: string | undefined;
  /** The command's trimmed stdout becomes the handle of this name. */
  capture?: string | undefined;
}

export interface DiskStep {
  run: DiskCommand;
  /** Reverses `run`; absent when nothing needs undoing. */
  undo?: DiskCommand | undefined;
  /** `run` may leave a partial result when it fails (a half-written file), so `undo` runs then too. */
  undoAfterFailure?: boolean | undefined;
}

export interface RootDiskPlan {
  strategy: RootDiskStrategy;
  format: DiskFormat;
  /** The path the VMM opens. */
  path: string;
  steps: DiskStep[];
  /** Values known before running (names, files); captured ones are added by the executor. */
  handles: Record<string, string>;
}

export interface RootDiskPlanInput {
  strategy: RootDiskStrategy;
  /** Absolute path of the base (the image's raw rootfs, or a snapshot's frozen disk); never written. */
  base: string;
  baseSizeBytes: number;
  /** Absolute path of the per-VM file (the overlay, the raw copy, or the dm snapshot's COW store). */
  target: string;
  /** Size the guest sees; at least the base's size. */
  sizeBytes: number;
  /** Device-mapper name for dm-snapshot; derived from `target` when absent. */
  dmName?: string | undefined;
  /** The base's format: raw (an image) unless it is a qcow2 snapshot disk, which only a qcow2 overlay can use. */
  baseFormat?: DiskFormat | undefined;
}

const SECTOR = 512;
/** dm-snapshot chunk size in sectors (4 KiB). */
const DM_CHUNK_SECTORS = 8;
/** Values a captured handle may take: loop devices only. */
export const CAPTURED_HANDLE = /^\/dev\/loop\d+$/;

export function planRootDisk(input: RootDiskPlanInput): RootDiskPlan {
  validate(input);
  switch (input.strategy) {
    case "qcow2-overlay":
      return planQcow2Overlay(input);
    case "reflink":
      return planRawCopy(input, ["cp", "--reflink=always", "--", input.base, input.target]);
    case "sparse-copy":
      return planRawCopy(input, ["cp", "--sparse=always", "--", input.base, input.target]);
    case "dm-snapshot":
      return planDmSnapshot(input);
  }
}

/** The frozen copy of a stored disk a snapshot keeps (see planSnapshotDisk). */
export const SNAPSHOT_DISK_FILES: Readonly<Record<DiskFormat, string>> = {
  qcow2: "disk.qcow2",
  raw: "disk.raw",
};

/**
 * Copies a stopped or paused VM's stored disk into a snapshot directory, as
 * the base of every clone: the qcow2 overlay as is (it keeps its image base),
 * a raw disk by reflink where the filesystem has it, else sparse. A
 * dm-snapshot store is not a disk on its own and is refused.
 */
export function planSnapshotDisk(input: { strategy: RootDiskStrategy; file: string; dir: string }): {
  command: DiskCommand;
  file: string;
  format: DiskFormat;
} {
  if (input.strategy === "dm-snapshot") {
    throw new BangerError(ErrorCode.BAD_STATE, "a VM on a device-mapper disk cannot be snapshotted", {
      hint: "snapshots need a qcow2 overlay (the qemu VMM) or a file disk (a filesystem with reflinks, or sparse copies)",
    });
  }
  const format = ROOT_DISK_FILES[input.strategy].format;
  const file = `${input.dir}/${SNAPSHOT_DISK_FILES[format]}`;
  const copy = input.strategy === "reflink" ? "--reflink=always" : "--reflink=auto";
  return { command: { argv: ["cp", "--sparse=always", copy, "--", input.file, file] }, file, format };
}

/** Commands that remove a stored disk made by `planRootDisk` (detach it first), given its handles. */
export function planRootDiskTeardown(handles: Record<string, string>): DiskCommand[] {
  const target = handles.target;
  if (target === undefined) throw new BangerError(ErrorCode.INTERNAL, "root disk handle 'target' is missing");
  return [removeFile(target)];
}

/**
 * Grows a stopped VM's stored disk; the guest grows its filesystem
 * (resize2fs) itself. A dm snapshot's store grows to hold the bigger disk;
 * its next attach presents the new size.
 */
export function planGrowDisk(input: {
  strategy: RootDiskStrategy;
  path: string;
  sizeBytes: number;
}): DiskCommand {
  positiveSize(input.sizeBytes);
  if (input.strategy === "qcow2-overlay") {
    return { argv: ["qemu-img", "resize", "-f", "qcow2", input.path, String(input.sizeBytes)] };
  }
  const bytes = input.strategy === "dm-snapshot" ? cowStoreBytes(input.sizeBytes) : input.sizeBytes;
  return { argv: ["truncate", "--size", String(bytes), input.path] };
}

/** Replaces `{name}` placeholders with handle values; an unknown placeholder is a bug. */
export function resolveCommand(command: DiskCommand, handles: Record<string, string>): DiskCommand {
  const fill = (text: string) =>
    text.replace(/\{([a-zA-Z]+)\}/g, (_, name: string) => {
      const value = handles[name];
      if (value === undefined)
        throw new BangerError(ErrorCode.INTERNAL, `disk plan placeholder {${name}} has no value`);
      return value;
    });
  return {
    ...command,
    argv: command.argv.map(fill),
    ...(command.input === undefined ? {} : { input: fill(command.input) }),
  };
}

/** A stable device-mapper name for a target file: `banger-` and 16 hex digits of its path's hash. */
export function dmNameFor(target: string): string {
  return `banger-${createHash("sha256").update(target).digest("hex").slice(0, 16)}`;
}

function planQcow2Overlay(input: RootDiskPlanInput): RootDiskPlan {
  return {
    strategy: "qcow2-overlay",
    format: "qcow2",
    path: input.target,
    handles: { target: input.target },
    steps: [
      {
        run: {
          argv: [
            "qemu-img",
            "create",
            "-f",
            "qcow2",
            "-b",
            input.base,
            "-F",
            input.baseFormat ?? "raw",
            input.target,
            String(input.sizeBytes),
          ],
        },
        undo: removeFile(input.target),
        undoAfterFailure: true,
      },
    ],
  };
}

/** `cp` can only reflink with its default `--sparse=auto`; a reflinked copy keeps the base's holes anyway. */
function planRawCopy(input: RootDiskPlanInput, copy: string[]): RootDiskPlan {
  const steps: DiskStep[] = [{ run: { argv: copy }, undo: removeFile(input.target), undoAfterFailure: true }];
  if (input.sizeBytes > input.baseSizeBytes) {
    steps.push({ run: { argv: ["truncate", "--size", String(input.sizeBytes), input.target] } });
  }
  return {
    strategy: input.strategy,
    format: "raw",
    path: input.target,
    handles: { target: input.target },
    steps,
  };
}

/**
 * A dm snapshot's durable part: a sparse COW store file sized to hold every
 * chunk of the disk plus the exception table (16 bytes per 4 KiB chunk); free
 * until written. The device itself is made per boot by `planDiskAttach`,
 * because loop and dm devices do not outlive the host.
 */
function planDmSnapshot(input: RootDiskPlanInput): RootDiskPlan {
  const name = dmName(input);
  return {
    strategy: "dm-snapshot",
    format: "raw",
    path: `/dev/mapper/${name}`,
    handles: { target: input.target, dmName: name },
    steps: [
      {
        run: { argv: ["truncate", "--size", String(cowStoreBytes(input.sizeBytes)), input.target] },
        undo: removeFile(input.target),
        undoAfterFailure: true,
      },
    ],
  };
}

function cowStoreBytes(sizeBytes: number): number {
  const bytes = Math.floor(sizeBytes / SECTOR) * SECTOR;
  return bytes + Math.ceil(bytes / 128) + MIB;
}

function dmName(input: { target: string; dmName?: string | undefined }): string {
  const name = input.dmName ?? dmNameFor(input.target);
  if (!/^[a-zA-Z0-9_.-]{1,100}$/.test(name)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `device-mapper name '${name}' is not valid`);
  }
  return name;
}

export interface DiskAttachPlan {
  /** The block device the VMM opens. */
  path: string;
  steps: DiskStep[];
  handles: Record<string, string>;
}

/**
 * Makes a stored disk openable for one boot. Only dm-snapshot has work to
 * do: the base on a read-only loop device is the origin, the COW store on a
 * second loop device holds the writes, persistent (`P`) so the next boot
 * sees them. When the disk is bigger than the base, the origin is a
 * read-only linear+zero device of the full size, so the extra space reads
 * as zeros. Other strategies return the file itself and no steps.
 */
export function planDiskAttach(input: RootDiskPlanInput): DiskAttachPlan {
  validate(input);
  if (input.strategy !== "dm-snapshot") return { path: input.target, steps: [], handles: {} };
  const name = dmName(input);
  const baseSectors = Math.floor(input.baseSizeBytes / SECTOR);
  const sizeSectors = Math.floor(input.sizeBytes / SECTOR);
  const grows = sizeSectors > baseSectors;
  const originName = `${name}-origin`;
  const handles: Record<string, string> = { dmName: name };
  if (grows) handles.dmOrigin = originName;
  const steps: DiskStep[] = [
    {
      run: { argv: ["losetup", "--find", "--show", "--read-only", input.base], capture: "baseLoop" },
      undo: { argv: ["losetup", "--detach", "{baseLoop}"] },
    },
    {
      run: { argv: ["losetup", "--find", "--show", input.target], capture: "cowLoop" },
      undo: { argv: ["losetup", "--detach", "{cowLoop}"] },
    },
  ];
  if (grows) {
    steps.push({
      run: {
        argv: ["dmsetup", "create", "--readonly", originName],
        input: `0 ${baseSectors} linear {baseLoop} 0\n${baseSectors} ${sizeSectors - baseSectors} zero\n`,
      },
      undo: { argv: ["dmsetup", "remove", originName] },
    });
  }
  const origin = grows ? `/dev/mapper/${originName}` : "{baseLoop}";
  steps.push({
    run: {
      argv: [
        "dmsetup",
        "create",
        name,
        "--table",
        `0 ${sizeSectors} snapshot ${origin} {cowLoop} P ${DM_CHUNK_SECTORS}`,
      ],
    },
    undo: { argv: ["dmsetup", "remove", name] },
  });
  return { path: `/dev/mapper/${name}`, steps, handles };
}

/** Reverses `planDiskAttach` from the handles it returned (as stored in handles.json). */
export function planDiskDetach(handles: Record<string, string>): DiskCommand[] {
  if (handles.dmName === undefined) return [];
  return [
    { argv: ["dmsetup", "remove", handles.dmName] },
    ...(handles.dmOrigin === undefined ? [] : [{ argv: ["dmsetup", "remove", handles.dmOrigin] }]),
    ...(handles.cowLoop === undefined ? [] : [{ argv: ["losetup", "--detach", handles.cowLoop] }]),
    ...(handles.baseLoop === undefined ? [] : [{ argv: ["losetup", "--detach", handles.baseLoop] }]),
  ];
}

function validate(input: RootDiskPlanInput): void {
  if (input.baseFormat === "qcow2" && input.strategy !== "qcow2-overlay") {
    throw new BangerError(ErrorCode.INTERNAL, `a ${input.strategy} disk cannot be made over a qcow2 base`);
  }
  for (const [what, path] of [
    ["base", input.base],
    ["target", input.target],
  ] as const) {
    if (!isAbsolute(path))
      throw new BangerError(ErrorCode.INTERNAL, `root disk ${what} '${path}' is not absolute`);
  }
  positiveSize(input.sizeBytes);
  if (input.sizeBytes < input.baseSizeBytes) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `disk size ${input.sizeBytes} bytes is smaller than the image (${input.baseSizeBytes} bytes)`,
      { hint: "ask for a disk at least as big as the image" },
    );
  }
}

function positiveSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `disk size ${sizeBytes} is not a positive whole number of bytes`,
    );
  }
}

function removeFile(path: string): DiskCommand {
  return { argv: ["rm", "-f", "--", path] };
}
