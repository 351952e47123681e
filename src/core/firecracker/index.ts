/**
 * Firecracker, pure side: the request bodies banger sends (typed after the
 * pinned v1.16.1 OpenAPI spec), the boot plan (the ordered API calls that
 * configure and start a microVM from a BootSpec), `--version` parsing and the
 * capability table. Callers branch on capabilities, never on version strings.
 */
import { join } from "node:path";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { BootSpec, VmmFeatures } from "../vmm/contract.ts";

// Enum values, exactly as the spec lists them (a unit test keeps them in step).
const CACHE_TYPES = ["Unsafe", "Writeback"] as const;
const IO_ENGINES = ["Sync", "Async"] as const;
const ACTION_TYPES = ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"] as const;
const INSTANCE_STATES = ["Not started", "Running", "Paused"] as const;
const VM_STATES = ["Paused", "Resumed"] as const;
const LOG_LEVELS = ["Error", "Warning", "Info", "Debug", "Trace", "Off"] as const;
const HUGE_PAGES = ["None", "2M"] as const;
const CPU_TEMPLATES = ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"] as const;
const SNAPSHOT_TYPES = ["Full", "Diff"] as const;
const MEMORY_BACKENDS = ["File", "Uffd"] as const;

export type CacheType = (typeof CACHE_TYPES)[number];
export type IoEngine = (typeof IO_ENGINES)[number];
export type ActionType = (typeof ACTION_TYPES)[number];
export type InstanceState = (typeof INSTANCE_STATES)[number];
export type VmState = (typeof VM_STATES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];
export type HugePages = (typeof HUGE_PAGES)[number];
export type CpuTemplate = (typeof CPU_TEMPLATES)[number];

/**
 * Every enum of the spec definitions modelled here, keyed `Definition.property`
 * (`CpuTemplate` is itself a string enum). The spec-drift test compares this
 * table with the YAML in both directions.
 */
export const MODELLED_SPEC_ENUMS: Readonly<Record<string, readonly string[]>> = {
  "Drive.cache_type": CACHE_TYPES,
  "Drive.io_engine": IO_ENGINES,
  "InstanceActionInfo.action_type": ACTION_TYPES,
  "InstanceInfo.state": INSTANCE_STATES,
  "Vm.state": VM_STATES,
  "Logger.level": LOG_LEVELS,
  "MachineConfiguration.huge_pages": HUGE_PAGES,
  CpuTemplate: CPU_TEMPLATES,
  "SnapshotCreateParams.snapshot_type": SNAPSHOT_TYPES,
  "MemoryBackend.backend_type": MEMORY_BACKENDS,
};

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: (typeof SNAPSHOT_TYPES)[number];
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: (typeof MEMORY_BACKENDS)[number]; backend_path: string };
  network_overrides?: { iface_id: string; host_dev_name: string }[];
  vsock_override?: { uds_path: string };
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
}

export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

export interface RateLimiter {
  bandwidth?: TokenBucket;
  ops?: TokenBucket;
}

export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: HugePages;
  cpu_template?: CpuTemplate;
}

export interface BootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  path_on_host?: string;
  is_read_only?: boolean;
  partuuid?: string;
  cache_type?: CacheType;
  io_engine?: IoEngine;
  rate_limiter?: RateLimiter;
  socket?: string;
}

export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
  mtu?: number;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

export interface EntropyDevice {
  rate_limiter?: RateLimiter;
}

export interface InstanceActionInfo {
  action_type: ActionType;
}

/** Body of `PATCH /vm` (the spec's `Vm` definition). */
export interface VmStateUpdate {
  state: VmState;
}

export interface Logger {
  log_path?: string;
  level?: LogLevel;
  show_level?: boolean;
  show_log_origin?: boolean;
  module?: string;
}

export interface Metrics {
  metrics_path: string;
}

/** `GET /` reply. */
export interface InstanceInfo {
  app_name: string;
  id: string;
  state: InstanceState;
  vmm_version: string;
}

export type FirecrackerMethod = "GET" | "PUT" | "PATCH";

export type FirecrackerRequestBody =
  | MachineConfiguration
  | BootSource
  | Drive
  | NetworkInterface
  | Vsock
  | EntropyDevice
  | InstanceActionInfo
  | VmStateUpdate
  | Logger
  | Metrics
  | SnapshotCreateParams
  | SnapshotLoadParams;

export interface FirecrackerCall {
  method: FirecrackerMethod;
  path: string;
  body?: FirecrackerRequestBody;
}

/** Firecracker's private files in a VM's directory. */
export const FIRECRACKER_FILES = {
  api: "api.sock",
  vsock: "vsock.sock",
  /** A FIFO: Firecracker's stdout (the serial console), drained by the daemon into console.log. */
  console: "console.fifo",
  log: "firecracker.log",
  metrics: "metrics.json",
} as const;

/** The absolute paths of Firecracker's files for the VM whose directory is `vmDir`. */
export function firecrackerFiles(vmDir: string): Record<keyof typeof FIRECRACKER_FILES, string> {
  return {
    api: join(vmDir, FIRECRACKER_FILES.api),
    vsock: join(vmDir, FIRECRACKER_FILES.vsock),
    console: join(vmDir, FIRECRACKER_FILES.console),
    log: join(vmDir, FIRECRACKER_FILES.log),
    metrics: join(vmDir, FIRECRACKER_FILES.metrics),
  };
}

/**
 * Guest CID of the vsock device. Firecracker's vsock is a private hybrid UDS
 * per VM (no host AF_VSOCK), so every guest can use the lowest legal CID.
 */
const GUEST_CID = 3;
const ROOT_DRIVE_ID = "rootfs";
/** The read-only second drive (/dev/vdb): the kernel's own image under an OCI image. */
const BASE_DRIVE_ID = "base";
const GUEST_IFACE_ID = "eth0";

/**
 * The root drive's path as Firecracker is given it: relative to the VM
 * directory (Firecracker's working directory) when the disk is in it, so a
 * snapshot, which records the path, restores onto each clone's own disk.
 */
function drivePath(spec: BootSpec): string {
  const prefix = `${spec.vmDir}/`;
  return spec.disk.path.startsWith(prefix) ? spec.disk.path.slice(prefix.length) : spec.disk.path;
}

/** `PUT /snapshot/create` of a paused VM into `dir` (its vmstate, then its memory). */
export function planSnapshotCreate(files: { state: string; memory: string }): FirecrackerCall {
  return {
    method: "PUT",
    path: "/snapshot/create",
    body: {
      snapshot_path: files.state,
      mem_file_path: files.memory,
      snapshot_type: "Full",
    } satisfies SnapshotCreateParams,
  };
}

/**
 * `PUT /snapshot/load` into a fresh process for the VM of `spec`: the
 * clone's tap and vsock socket replace the source's; the drive is the
 * relative path the source recorded (see drivePath). The VM is resumed.
 */
export function planSnapshotLoad(spec: BootSpec, files: { state: string; memory: string }): FirecrackerCall {
  return {
    method: "PUT",
    path: "/snapshot/load",
    body: {
      snapshot_path: files.state,
      mem_backend: { backend_type: "File", backend_path: files.memory },
      network_overrides: [{ iface_id: GUEST_IFACE_ID, host_dev_name: spec.tap }],
      vsock_override: { uds_path: firecrackerFiles(spec.vmDir).vsock },
      resume_vm: true,
    } satisfies SnapshotLoadParams,
  };
}

/**
 * The API calls that configure and boot a VM, in order: machine-config,
 * boot-source (the caller's command line, always explicit so Firecracker's
 * default with `nomodule` never applies), the raw root drive, eth0 on the
 * tap, vsock, entropy, then InstanceStart.
 */
export function planFirecrackerBoot(spec: BootSpec, caps: FirecrackerCapabilities): FirecrackerCall[] {
  if (spec.disk.format !== "raw") {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `firecracker cannot open the ${spec.disk.format} disk ${spec.disk.path}`,
      { hint: "Firecracker boots raw disks only; convert the image or use the qemu VMM" },
    );
  }
  const bootSource: BootSource = { kernel_image_path: spec.kernel, boot_args: spec.kernelCmdline };
  if (spec.initrd !== null) bootSource.initrd_path = spec.initrd;
  const calls: FirecrackerCall[] = [
    {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: spec.cpus, mem_size_mib: spec.memoryMib } satisfies MachineConfiguration,
    },
    { method: "PUT", path: "/boot-source", body: bootSource },
    {
      method: "PUT",
      path: `/drives/${ROOT_DRIVE_ID}`,
      body: {
        drive_id: ROOT_DRIVE_ID,
        path_on_host: drivePath(spec),
        is_root_device: true,
        is_read_only: false,
      } satisfies Drive,
    },
    ...(spec.baseDisk === undefined
      ? []
      : [
          {
            method: "PUT" as const,
            path: `/drives/${BASE_DRIVE_ID}`,
            body: {
              drive_id: BASE_DRIVE_ID,
              path_on_host: spec.baseDisk,
              is_root_device: false,
              is_read_only: true,
            } satisfies Drive,
          },
        ]),
    {
      method: "PUT",
      path: `/network-interfaces/${GUEST_IFACE_ID}`,
      body: {
        iface_id: GUEST_IFACE_ID,
        host_dev_name: spec.tap,
        guest_mac: spec.mac,
      } satisfies NetworkInterface,
    },
    {
      method: "PUT",
      path: "/vsock",
      body: { guest_cid: GUEST_CID, uds_path: firecrackerFiles(spec.vmDir).vsock } satisfies Vsock,
    },
    { method: "PUT", path: "/entropy", body: {} satisfies EntropyDevice },
    { method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } satisfies InstanceActionInfo },
  ];
  // Every capability-dependent call goes here; v1.16.1 needs none for this plan.
  void caps;
  return calls;
}

export interface FirecrackerVersion {
  major: number;
  minor: number;
  patch: number;
  /** As printed, without the leading "v" (e.g. "1.17.0-dev"). */
  text: string;
}

/** Parses the first line of `firecracker --version` ("Firecracker v1.16.1"). */
export function parseFirecrackerVersion(output: string): FirecrackerVersion {
  const match = /Firecracker v?(\d+)\.(\d+)\.(\d+)(\S*)/.exec(output);
  if (!match) {
    throw new BangerError(
      ErrorCode.TOOL_MISSING,
      `cannot read a Firecracker version from: ${JSON.stringify(output.split("\n")[0] ?? "")}`,
      { hint: "check that the configured firecracker binary is Firecracker" },
    );
  }
  const [, major, minor, patch, suffix] = match;
  return {
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch),
    text: `${major}.${minor}.${patch}${suffix ?? ""}`,
  };
}

export interface FirecrackerCapabilities {
  /** ACPI tables: stock kernels find virtio-mmio devices (>= 1.8). */
  acpi: boolean;
  /** PVH entry for ELF kernels that carry the Xen note (>= 1.12). */
  pvh: boolean;
  /** `--enable-pci` (>= 1.13). */
  pci: boolean;
  /** `PUT /serial` (>= 1.14). */
  serialEndpoint: boolean;
  /** `vsock_override` on snapshot load (>= 1.16). */
  vsockOverride: boolean;
  /** Boots a bzImage directly (>= 1.17). */
  bzImage: boolean;
}

const MINIMUM_FIRECRACKER = { major: 1, minor: 8 } as const;

export function capabilitiesFor(version: FirecrackerVersion): FirecrackerCapabilities {
  const atLeast = (minor: number) => version.major > 1 || (version.major === 1 && version.minor >= minor);
  if (!atLeast(MINIMUM_FIRECRACKER.minor)) {
    throw new BangerError(
      ErrorCode.TOOL_MISSING,
      `Firecracker v${version.text} is too old; banger needs v${MINIMUM_FIRECRACKER.major}.${MINIMUM_FIRECRACKER.minor} or newer`,
      {
        hint: "install a newer Firecracker release (v1.16.1 is tested) from github.com/firecracker-microvm/firecracker/releases",
        data: { version: version.text },
      },
    );
  }
  return {
    acpi: atLeast(8),
    pvh: atLeast(12),
    pci: atLeast(13),
    serialEndpoint: atLeast(14),
    vsockOverride: atLeast(16),
    bzImage: atLeast(17),
  };
}

/** Driver features for a probed binary: bzImage kernels only where Firecracker boots them. */
export function firecrackerFeatures(caps: FirecrackerCapabilities | undefined): VmmFeatures {
  return {
    diskFormats: ["raw"],
    kernelFormats: caps?.bzImage ? ["elf", "bzImage"] : ["elf"],
    pauseResume: true,
    vsock: true,
    softwareEmulation: false,
    // A clone's vsock socket is its own only with `vsock_override` on load (>= 1.16).
    snapshots: caps?.vsockOverride === true,
  };
}
