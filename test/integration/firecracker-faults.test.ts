/**
 * Contract: every kind of fault the Firecracker double returns reaches the
 * caller of the real client as a BangerError with a stable code, whose
 * message is `firecracker METHOD PATH: <fault_message>` and whose data
 * carries the status and the fault text unchanged. One double, spawned with
 * the driver's flags, never booted (no kernel, no tap, no netns): rows run in
 * order against its accumulating state, each row's `setup` calls succeed
 * first, and after every fault `GET /` must still answer "Not started".
 *
 * Faults that need a booted VM (a second InstanceStart, pre-boot-only calls
 * after boot, PCI-only hotplug, snapshot/create while Running, post-boot
 * "Device not found" patches, QMP failures) are not covered here.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { FirecrackerMethod } from "../../src/core/firecracker/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import {
  createFirecrackerClient,
  type FirecrackerClient,
  pauseFirecracker,
  resumeFirecracker,
  waitForApi,
} from "../../src/sys/firecracker/index.ts";
import { readProcStat } from "../../src/sys/proc/index.ts";

const DOUBLE = fileURLToPath(new URL("../doubles/firecracker/firecracker", import.meta.url));
const SERDE = "An error occurred when deserializing the json body of a request: ";
const PRE_BOOT = "The requested operation is not supported before starting the microVM.";
const VCPUS =
  "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.";
const MEMORY =
  "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.";
const BAD_ID = "API Resource IDs can only contain alphanumeric characters and underscores.";
const ID_MISMATCH = "The id from the path does not match the id from the body!";
/** banger never sends DELETE (the client's method type leaves it out); the double still routes it. */
const DELETE = "DELETE" as string as FirecrackerMethod;

interface Call {
  method: FirecrackerMethod;
  path: string;
  body?: unknown;
}

interface FaultRow {
  /** The fault category the row proves. */
  name: string;
  /** Calls that must succeed first, to put the double in the state the fault needs. */
  setup?: readonly Call[];
  call: Call;
  code: ErrorCode;
  /** Firecracker's fault_message, exactly. */
  fault: string;
  /** Set when the client's error for this fault is known to be unclear. */
  todo?: string;
}

function faultRows(dir: string): FaultRow[] {
  const rootImage = join(dir, "root.img");
  const kernel = join(dir, "vmlinux");
  const rootDrive = { path_on_host: rootImage, is_root_device: true, is_read_only: false };
  return [
    // ---- routing (parsed_request.rs) ----
    {
      name: "unknown path",
      call: { method: "GET", path: "/foo" },
      code: ErrorCode.INTERNAL,
      fault: "Invalid request method and/or path: GET foo.",
    },
    {
      name: "method not served on a known path",
      call: { method: "PUT", path: "/vm", body: { state: "Paused" } },
      code: ErrorCode.INTERNAL,
      fault: "Invalid request method and/or path: PUT vm.",
    },
    {
      name: "PATCH on a PUT-only resource",
      call: { method: "PATCH", path: "/boot-source", body: { kernel_image_path: kernel } },
      code: ErrorCode.INTERNAL,
      fault: "Invalid request method and/or path: PATCH boot-source.",
    },
    {
      name: "unknown snapshot sub-resource",
      call: { method: "PUT", path: "/snapshot/foo", body: { snapshot_path: "/s" } },
      code: ErrorCode.INTERNAL,
      fault: "Invalid request method and/or path: PUT snapshot.",
    },
    {
      name: "empty PUT body",
      call: { method: "PUT", path: "/machine-config" },
      code: ErrorCode.INTERNAL,
      fault: "Empty PUT request.",
    },
    {
      name: "empty PATCH body",
      call: { method: "PATCH", path: "/vm" },
      code: ErrorCode.INTERNAL,
      fault: "Empty PATCH request.",
    },
    {
      name: "GET with a body",
      call: { method: "GET", path: "/machine-config", body: { vcpu_count: 1 } },
      code: ErrorCode.INTERNAL,
      fault: "GET request cannot have a body.",
    },
    {
      name: "DELETE with a body",
      call: { method: DELETE, path: "/drives/rootfs", body: { drive_id: "rootfs" } },
      code: ErrorCode.INTERNAL,
      fault: "Empty Delete request.",
    },

    // ---- resource ids (checked_id, request/drive.rs, request/net.rs) ----
    {
      name: "empty id",
      call: { method: "PUT", path: "/drives/", body: { drive_id: "", ...rootDrive } },
      code: ErrorCode.INTERNAL,
      fault: "The ID cannot be empty.",
    },
    {
      name: "bad characters in a drive id",
      call: { method: "PUT", path: "/drives/root-fs", body: { drive_id: "root-fs", ...rootDrive } },
      code: ErrorCode.INTERNAL,
      fault: BAD_ID,
    },
    {
      name: "bad characters in an interface id",
      call: {
        method: "PUT",
        path: "/network-interfaces/eth.0",
        body: { iface_id: "eth.0", host_dev_name: "tap0" },
      },
      code: ErrorCode.INTERNAL,
      fault: BAD_ID,
    },
    {
      name: "drive_id differs from the path id",
      call: { method: "PUT", path: "/drives/rootfs", body: { drive_id: "other", ...rootDrive } },
      code: ErrorCode.INTERNAL,
      fault: ID_MISMATCH,
    },
    {
      name: "iface_id differs from the path id",
      call: {
        method: "PUT",
        path: "/network-interfaces/eth0",
        body: { iface_id: "eth1", host_dev_name: "tap0" },
      },
      code: ErrorCode.INTERNAL,
      fault: ID_MISMATCH,
    },
    {
      name: "PATCH drive_id differs from the path id (checked before the state)",
      call: { method: "PATCH", path: "/drives/rootfs", body: { drive_id: "other" } },
      code: ErrorCode.INTERNAL,
      fault: ID_MISMATCH,
    },

    // ---- snapshot/load on a fresh process (must precede any boot-configuring call) ----
    {
      name: "snapshot load with both memory sources",
      call: {
        method: "PUT",
        path: "/snapshot/load",
        body: {
          snapshot_path: "/s",
          mem_file_path: "/m",
          mem_backend: { backend_type: "File", backend_path: "/m" },
        },
      },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}too many fields: either \`mem_backend\` or \`mem_file_path\` exclusively is required..`,
    },
    {
      name: "snapshot load with no memory source",
      call: { method: "PUT", path: "/snapshot/load", body: { snapshot_path: "/s" } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}missing field: either \`mem_backend\` or \`mem_file_path\` is required.`,
    },

    // ---- body against the spec (serde, deny_unknown_fields) ----
    {
      name: "missing required field",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: 2 } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}missing field \`mem_size_mib\`.`,
    },
    {
      name: "unknown field",
      call: {
        method: "PUT",
        path: "/machine-config",
        body: { vcpu_count: 2, mem_size_mib: 256, bogus: true },
      },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}unknown field \`bogus\`, expected one of \`cpu_template\`, \`smt\`, \`mem_size_mib\`, \`track_dirty_pages\`, \`vcpu_count\`, \`huge_pages\`.`,
    },
    {
      name: "wrong field type",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: "2", mem_size_mib: 256 } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}invalid type: string "2", expected integer.`,
    },
    {
      name: "body that is not an object",
      call: { method: "PATCH", path: "/vm", body: "Paused" },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}invalid type: string "Paused", expected object.`,
    },
    {
      name: "unknown enum variant (drive io_engine)",
      call: {
        method: "PUT",
        path: "/drives/rootfs",
        body: { drive_id: "rootfs", ...rootDrive, io_engine: "Fast" },
      },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}unknown variant \`Fast\`, expected \`Sync\` or \`Async\`.`,
    },
    {
      name: "unknown action",
      call: { method: "PUT", path: "/actions", body: { action_type: "Reboot" } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}unknown variant \`Reboot\`, expected one of \`FlushMetrics\`, \`InstanceStart\`, \`SendCtrlAltDel\`.`,
    },
    {
      name: "action without action_type",
      call: { method: "PUT", path: "/actions", body: {} },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}missing field \`action_type\`.`,
    },
    {
      name: "unknown VM state",
      call: { method: "PATCH", path: "/vm", body: { state: "Stopped" } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}unknown variant \`Stopped\`, expected \`Paused\` or \`Resumed\`.`,
    },
    {
      name: "guest_cid below 3",
      call: { method: "PUT", path: "/vsock", body: { guest_cid: 2, uds_path: join(dir, "v.sock") } },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}invalid value: integer \`2\`, expected >= 3.`,
    },
    {
      name: "malformed MAC",
      call: {
        method: "PUT",
        path: "/network-interfaces/eth0",
        body: { iface_id: "eth0", host_dev_name: "tap0", guest_mac: "06:00:zz" },
      },
      code: ErrorCode.INTERNAL,
      fault: `${SERDE}invalid value: string "06:00:zz", expected a MAC address.`,
    },

    // ---- runtime-only rules ----
    {
      name: "vcpu_count 0",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: 0, mem_size_mib: 128 } },
      code: ErrorCode.BOOT_FAILED,
      fault: VCPUS,
    },
    {
      name: "vcpu_count 33",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: 33, mem_size_mib: 128 } },
      code: ErrorCode.BOOT_FAILED,
      fault: VCPUS,
    },
    {
      name: "odd vcpu_count with SMT",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: 3, mem_size_mib: 128, smt: true } },
      code: ErrorCode.BOOT_FAILED,
      fault: VCPUS,
    },
    {
      name: "vcpu_count out of range in a partial PATCH",
      call: { method: "PATCH", path: "/machine-config", body: { vcpu_count: 33 } },
      code: ErrorCode.BOOT_FAILED,
      fault: VCPUS,
    },
    {
      name: "zero memory",
      call: { method: "PUT", path: "/machine-config", body: { vcpu_count: 1, mem_size_mib: 0 } },
      code: ErrorCode.BOOT_FAILED,
      fault: MEMORY,
    },
    {
      name: "memory not a multiple of 2M huge pages",
      call: {
        method: "PUT",
        path: "/machine-config",
        body: { vcpu_count: 1, mem_size_mib: 257, huge_pages: "2M" },
      },
      code: ErrorCode.BOOT_FAILED,
      fault: MEMORY,
    },
    {
      name: "kernel that cannot be opened",
      call: { method: "PUT", path: "/boot-source", body: { kernel_image_path: join(dir, "no-kernel") } },
      code: ErrorCode.BOOT_FAILED,
      fault: "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
    },
    {
      name: "initrd that cannot be opened",
      call: {
        method: "PUT",
        path: "/boot-source",
        body: { kernel_image_path: kernel, initrd_path: join(dir, "no-initrd") },
      },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
    },
    {
      name: "virtio-blk drive without path_on_host and is_read_only",
      call: { method: "PUT", path: "/drives/rootfs", body: { drive_id: "rootfs", is_root_device: true } },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "Drive config error: Unable to create the virtio block device: path_on_host and is_read_only are required for a virtio-blk drive",
    },
    {
      name: "drive backing file that cannot be opened",
      call: {
        method: "PUT",
        path: "/drives/rootfs",
        body: { drive_id: "rootfs", ...rootDrive, path_on_host: join(dir, "no-disk.img") },
      },
      code: ErrorCode.BOOT_FAILED,
      fault: `Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) ${join(dir, "no-disk.img")}`,
    },
    {
      name: "snapshot load after boot resources are configured",
      setup: [{ method: "PUT", path: "/machine-config", body: { vcpu_count: 1, mem_size_mib: 128 } }],
      call: { method: "PUT", path: "/snapshot/load", body: { snapshot_path: "/s", mem_file_path: "/m" } },
      code: ErrorCode.BAD_STATE,
      fault:
        "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.",
    },
    {
      name: "a second root device",
      setup: [{ method: "PUT", path: "/drives/rootfs", body: { drive_id: "rootfs", ...rootDrive } }],
      call: { method: "PUT", path: "/drives/second", body: { drive_id: "second", ...rootDrive } },
      code: ErrorCode.BOOT_FAILED,
      fault: "Drive config error: A root block device already exists!",
    },
    {
      name: "tap device that does not exist",
      call: {
        method: "PUT",
        path: "/network-interfaces/eth0",
        body: { iface_id: "eth0", host_dev_name: "no-such-tap0" },
      },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "Network config error: Cannot open/create the tap device: Open tap device failed: Error while creating ifreq structure: No such device (os error 19). Invalid TUN/TAP Backend provided by no-such-tap0. Check our documentation on setting up the network devices.",
    },
    {
      // The double accepts any existing interface name as host_dev_name until
      // InstanceStart; `lo` registers eth0 without creating a tap.
      name: "duplicate guest MAC",
      setup: [
        {
          method: "PUT",
          path: "/network-interfaces/eth0",
          body: { iface_id: "eth0", host_dev_name: "lo", guest_mac: "06:00:ac:10:00:02" },
        },
      ],
      call: {
        method: "PUT",
        path: "/network-interfaces/eth1",
        body: { iface_id: "eth1", host_dev_name: "lo", guest_mac: "06:00:AC:10:00:02" },
      },
      code: ErrorCode.BOOT_FAILED,
      fault: "Network config error: The MAC address is already in use: 06:00:AC:10:00:02",
    },
    {
      name: "vsock UDS path already in use",
      call: { method: "PUT", path: "/vsock", body: { guest_cid: 3, uds_path: rootImage } },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address in use (os error 98)",
    },
    {
      name: "metrics configured twice (--metrics-path already did)",
      call: { method: "PUT", path: "/metrics", body: { metrics_path: join(dir, "other-metrics.json") } },
      code: ErrorCode.BOOT_FAILED,
      fault: "Metrics error: Reinitialization of metrics not allowed.",
    },
    {
      name: "MMDS config naming an unknown interface",
      call: { method: "PUT", path: "/mmds/config", body: { network_interfaces: ["eth9"] } },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "MMMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
    },
    {
      name: "balloon read before one is configured",
      call: { method: "GET", path: "/balloon" },
      code: ErrorCode.BOOT_FAILED,
      fault: "Balloon config error: No balloon device found.",
    },
    {
      name: "operation the double does not emulate (pmem)",
      call: { method: "PUT", path: "/pmem/pmem0", body: { id: "pmem0", path_on_host: rootImage } },
      code: ErrorCode.BOOT_FAILED,
      fault:
        "The requested operation is not supported: pmem devices (the Firecracker test double does not emulate them)",
    },

    // ---- state machine: post-boot-only calls before InstanceStart ----
    ...(
      [
        ["pause", { method: "PATCH", path: "/vm", body: { state: "Paused" } }],
        ["resume", { method: "PATCH", path: "/vm", body: { state: "Resumed" } }],
        ["Ctrl-Alt-Del", { method: "PUT", path: "/actions", body: { action_type: "SendCtrlAltDel" } }],
        ["FlushMetrics", { method: "PUT", path: "/actions", body: { action_type: "FlushMetrics" } }],
        [
          "drive patch",
          { method: "PATCH", path: "/drives/rootfs", body: { drive_id: "rootfs", path_on_host: rootImage } },
        ],
        [
          "interface patch",
          { method: "PATCH", path: "/network-interfaces/eth0", body: { iface_id: "eth0" } },
        ],
        ["balloon update", { method: "PATCH", path: "/balloon", body: { amount_mib: 64 } }],
        ["balloon update without a body", { method: "PATCH", path: "/balloon" }],
        ["balloon statistics", { method: "GET", path: "/balloon/statistics" }],
        ["memory hotplug status", { method: "GET", path: "/hotplug/memory" }],
        [
          "snapshot create",
          { method: "PUT", path: "/snapshot/create", body: { snapshot_path: "/s", mem_file_path: "/m" } },
        ],
        ["drive hot-unplug", { method: DELETE, path: "/drives/rootfs" }],
      ] satisfies [string, Call][]
    ).map(
      ([what, call]): FaultRow => ({
        name: `${what} before boot`,
        call,
        code: ErrorCode.BAD_STATE,
        fault: PRE_BOOT,
      }),
    ),
    {
      name: "InstanceStart without a boot source",
      call: { method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } },
      code: ErrorCode.BOOT_FAILED,
      fault: "Start microvm error: Cannot start microvm without kernel configuration.",
    },
  ];
}

/** The rejection of `promise`, which must be a BangerError. */
async function rejection(promise: Promise<unknown>): Promise<BangerError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof BangerError, `expected a BangerError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

describe("Firecracker faults reach the caller as clear BangerErrors", () => {
  const dir = mkdtempSync(join(tmpdir(), "fc-faults-"));
  const socket = join(dir, "api.sock");
  const logPath = join(dir, "firecracker.log");
  let child: ChildProcess;
  let exited: Promise<void>;
  let api: FirecrackerClient;

  before(async () => {
    await writeFile(join(dir, "vmlinux"), "not really a kernel");
    await writeFile(join(dir, "root.img"), Buffer.alloc(1024 * 1024));
    // Firecracker opens --log-path and --metrics-path without O_CREAT.
    await writeFile(logPath, "");
    await writeFile(join(dir, "metrics.json"), "");
    const vmmLog = openSync(join(dir, "vmm.log"), "a");
    try {
      child = spawn(
        DOUBLE,
        [
          "--api-sock",
          socket,
          "--id",
          "faults",
          "--log-path",
          logPath,
          "--level",
          "Info",
          "--metrics-path",
          join(dir, "metrics.json"),
        ],
        { stdio: ["ignore", "ignore", vmmLog] },
      );
    } finally {
      closeSync(vmmLog);
    }
    exited = new Promise((resolve) => child.once("exit", () => resolve()));
    await waitForApi(socket, Date.now() + 20_000, { isAlive: () => child.exitCode === null });
    api = createFirecrackerClient(socket);
  });

  after(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, "SIGTERM");
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  async function assertStillServing(): Promise<void> {
    assert.equal(child.exitCode, null, "the double exited");
    const reply = await api.request("GET", "/");
    assert.equal((reply.body as { state: string }).state, "Not started");
  }

  const rows = faultRows(dir);
  for (const row of rows) {
    const { method, path, body } = row.call;
    it(`${row.name}: ${method} ${path}`, row.todo ? { todo: row.todo } : {}, async () => {
      for (const step of row.setup ?? []) await api.request(step.method, step.path, step.body);
      const error = await rejection(api.request(method, path, body));
      assert.equal(error.message, `firecracker ${method} ${path}: ${row.fault}`);
      assert.equal(error.code, row.code);
      assert.deepEqual(error.data, { status: 400, fault: row.fault });
      assert.ok(error.hint, "a hint says what to do next");
      await assertStillServing();
    });
  }

  it("pause and resume through the driver name PATCH /vm and refuse before boot", async () => {
    const stat = await readProcStat(child.pid!);
    assert.ok(stat, "the double's /proc entry");
    const handle = { pid: child.pid!, pidStartTicks: stat.startTicks, controlSocket: socket };
    for (const change of [pauseFirecracker, resumeFirecracker]) {
      const error = await rejection(change(handle));
      assert.equal(error.code, ErrorCode.BAD_STATE);
      assert.equal(error.message, `firecracker PATCH /vm: ${PRE_BOOT}`);
      await assertStillServing();
    }
  });

  it("logs every fault in firecracker.log, as the hints say", async () => {
    const log = await readFile(logPath, "utf8");
    for (const row of rows) {
      assert.ok(log.includes(`Message: ${row.fault}`), `firecracker.log lacks: ${row.fault}`);
    }
  });
});
