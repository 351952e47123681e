import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createFirecrackerClient, waitForApi } from "../../src/sys/firecracker/index.ts";

const DOUBLE = fileURLToPath(new URL("../doubles/firecracker/firecracker", import.meta.url));

async function fault(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    return error as { code: string; message: string };
  }
  assert.fail("expected a fault");
}

describe("Firecracker double (pre-boot API)", () => {
  let dir: string;
  let socket: string;
  let strictLog: string;
  let child: ReturnType<typeof spawn>;
  let exited: Promise<number | null>;
  const api = () => createFirecrackerClient(socket);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fc-double-"));
    socket = join(dir, "api.sock");
    strictLog = join(dir, "strict.jsonl");
    await writeFile(join(dir, "vmlinux"), "not really a kernel");
    await writeFile(join(dir, "root.img"), Buffer.alloc(1024 * 1024));
    child = spawn(DOUBLE, ["--api-sock", socket, "--id", "double-test", "--log-path", join(dir, "fc.log")], {
      stdio: "ignore",
      env: { ...process.env, FC_DOUBLE_STRICT_LOG: strictLog },
    });
    exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    await waitForApi(socket, Date.now() + 20_000);
  });

  after(async () => {
    if (child.exitCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("answers GET / with a spec-valid InstanceInfo in state Not started", async () => {
    const reply = await api().request("GET", "/");
    assert.deepEqual(reply.body, {
      id: "double-test",
      state: "Not started",
      vmm_version: "1.16.1",
      app_name: "Firecracker",
    });
    assert.deepEqual((await api().request("GET", "/version")).body, { firecracker_version: "1.16.1" });
  });

  it("refuses to start on an existing socket path, as Firecracker does", async () => {
    const second = spawn(DOUBLE, ["--api-sock", socket], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    second.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise((resolve) => second.once("exit", resolve));
    assert.equal(code, 1);
    assert.match(stderr, /FailedToBindSocket/);
  });

  it("routes unknown paths and methods, empty bodies and GET bodies like parsed_request.rs", async () => {
    const cases: [string, string, unknown, string][] = [
      ["GET", "/foo", undefined, "Invalid request method and/or path: GET foo."],
      ["PUT", "/vm", { state: "Paused" }, "Invalid request method and/or path: PUT vm."],
      ["PUT", "/machine-config", undefined, "Empty PUT request."],
      ["PATCH", "/vm", undefined, "Empty PATCH request."],
      ["GET", "/machine-config", { vcpu_count: 1 }, "GET request cannot have a body."],
      [
        "PUT",
        "/drives/root-fs",
        {},
        "API Resource IDs can only contain alphanumeric characters and underscores.",
      ],
    ];
    for (const [method, path, body, message] of cases) {
      const error = await fault(api().request(method as "GET", path, body));
      assert.equal(error.code, "INTERNAL", "a request Firecracker cannot route or parse is a banger bug");
      assert.equal(error.message, `firecracker ${method} ${path}: ${message}`);
    }
  });

  it("validates bodies against the spec with serde-style messages", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["/machine-config", { vcpu_count: 2 }, /missing field `mem_size_mib`/],
      [
        "/machine-config",
        { vcpu_count: 2, mem_size_mib: 256, bogus: true },
        /unknown field `bogus`, expected one of/,
      ],
      [
        "/drives/rootfs",
        { drive_id: "rootfs", is_root_device: true, io_engine: "Fast" },
        /unknown variant `Fast`, expected `Sync` or `Async`/,
      ],
      ["/vsock", { guest_cid: 2, uds_path: join(tmpdir(), "x.sock") }, /expected >= 3/],
      ["/actions", { action_type: "Reboot" }, /unknown variant `Reboot`/],
    ];
    for (const [path, body, pattern] of cases) {
      const error = await fault(api().request("PUT", path, body));
      assert.match(error.message, /An error occurred when deserializing the json body of a request: /);
      assert.match(error.message, pattern);
    }
  });

  it("ignores `required` on PATCH /machine-config and keeps the other fields", async () => {
    await api().request("PUT", "/machine-config", { vcpu_count: 2, mem_size_mib: 256 });
    await api().request("PATCH", "/machine-config", { mem_size_mib: 300 });
    const reply = await api().request("GET", "/machine-config");
    assert.deepEqual(reply.body, {
      vcpu_count: 2,
      mem_size_mib: 300,
      smt: false,
      track_dirty_pages: false,
      huge_pages: "None",
    });
  });

  it("applies the runtime-only rules", async () => {
    const expectFault = async (path: string, body: unknown, message: string) =>
      assert.equal(
        (await fault(api().request("PUT", path, body))).message,
        `firecracker PUT ${path}: ${message}`,
      );
    await expectFault(
      "/machine-config",
      { vcpu_count: 33, mem_size_mib: 128 },
      "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
    );
    await expectFault(
      "/drives/rootfs",
      { drive_id: "other", is_root_device: true },
      "The id from the path does not match the id from the body!",
    );
    assert.match(
      (await fault(api().request("PUT", "/drives/rootfs", { drive_id: "rootfs", is_root_device: true })))
        .message,
      /path_on_host and is_read_only are required/,
    );
    const root = { path_on_host: join(dir, "root.img"), is_root_device: true, is_read_only: false };
    await api().request("PUT", "/drives/rootfs", { drive_id: "rootfs", ...root });
    await api().request("PUT", "/drives/rootfs", { drive_id: "rootfs", ...root }); // update in place is fine
    await expectFault(
      "/drives/second",
      { drive_id: "second", ...root },
      "Drive config error: A root block device already exists!",
    );
    assert.match(
      (await fault(api().request("PUT", "/boot-source", { kernel_image_path: join(dir, "none") }))).message,
      /The kernel file cannot be opened/,
    );
    assert.match(
      (
        await fault(
          api().request("PUT", "/network-interfaces/eth0", {
            iface_id: "eth0",
            host_dev_name: "no-such-tap0",
          }),
        )
      ).message,
      /Cannot open\/create the tap device/,
    );
  });

  it("keeps pre/post-boot allow-lists before boot", async () => {
    for (const [method, path, body] of [
      ["PATCH", "/vm", { state: "Paused" }],
      ["PUT", "/actions", { action_type: "SendCtrlAltDel" }],
      ["PUT", "/actions", { action_type: "FlushMetrics" }],
      ["PATCH", "/drives/rootfs", { drive_id: "rootfs" }],
    ] as const) {
      const error = await fault(api().request(method, path, body));
      assert.equal(error.code, "BAD_STATE");
      assert.equal(
        error.message,
        `firecracker ${method} ${path}: The requested operation is not supported before starting the microVM.`,
      );
    }
    assert.match(
      (await fault(api().request("PUT", "/snapshot/load", { snapshot_path: "/s", mem_file_path: "/m" })))
        .message,
      /Loading a microVM snapshot not allowed after configuring boot-specific resources/,
    );
  });

  it("binds the vsock UDS at PUT /vsock and closes host connections before boot", async () => {
    const uds = join(dir, "v.sock");
    await api().request("PUT", "/vsock", { guest_cid: 3, uds_path: uds });
    assert.equal(existsSync(uds), true);
    const closed = await new Promise<string>((resolve) => {
      let data = "";
      const connection = connect(uds, () => connection.write("CONNECT 52\n"));
      connection.on("data", (chunk) => (data += chunk.toString()));
      connection.on("close", () => resolve(data));
    });
    assert.equal(closed, "");
    await api().request("PUT", "/entropy", {});
    const config = (await api().request("GET", "/vm/config")).body as Record<string, unknown>;
    assert.deepEqual(config.vsock, { guest_cid: 3, uds_path: uds });
    assert.deepEqual(config.entropy, {});
  });

  it("refuses InstanceStart without a kernel", async () => {
    assert.match(
      (await fault(api().request("PUT", "/actions", { action_type: "InstanceStart" }))).message,
      /Cannot start microvm without kernel configuration/,
    );
  });

  it("logs every exchange with its validation result; every response was spec-valid", async () => {
    const lines = (await readFile(strictLog, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.ok(lines.length > 20);
    assert.deepEqual(
      lines.filter((line) => !line.responseValid),
      [],
    );
    const invalid = lines.filter((line) => !line.requestValid).map((line) => `${line.method} ${line.path}`);
    assert.ok(invalid.includes("PUT /machine-config"));
    assert.ok(
      lines.some((line) =>
        line.requestIssues.some((issue: string) => issue.startsWith("additionalProperties")),
      ),
    );
  });
});
