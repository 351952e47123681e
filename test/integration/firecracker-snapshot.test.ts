/**
 * The Firecracker double's `PUT /snapshot/create` and `PUT /snapshot/load`,
 * through QEMU's migration, with a real guest kernel under TCG (it has no
 * root disk driver and hangs in its panic, which is memory like any other).
 * A second double in another directory loads the snapshot with its own tap
 * and its own relative drive path, as a clone does. Every exchange is
 * checked against the pinned spec.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createFirecrackerClient, waitForApi } from "../../src/sys/firecracker/index.ts";
import { extractVmlinux } from "../../src/sys/kernel/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { TEST_KERNEL_SKIP_REASON, testKernel } from "../helpers/test-kernel.ts";

const DOUBLE = fileURLToPath(new URL("../doubles/firecracker/firecracker", import.meta.url));
const NETNS = `banger-fcsnap-${process.pid}`;
const kernel = await testKernel();

/** The children of `pid` (its main thread's). */
async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

async function stateOf(socket: string): Promise<string> {
  return ((await createFirecrackerClient(socket).request("GET", "/")).body as { state: string }).state;
}

describe("Firecracker double snapshots", { skip: kernel ? false : TEST_KERNEL_SKIP_REASON }, () => {
  let dir: string;
  let vmlinux: string;
  let strictLog: string;
  let wrapper: string;
  const children: ChildProcess[] = [];

  async function spawnDouble(vmDir: string): Promise<{ socket: string; child: ChildProcess }> {
    await mkdir(vmDir, { recursive: true });
    await writeFile(join(vmDir, "root.img"), Buffer.alloc(4 * 1024 * 1024));
    const socket = join(vmDir, "api.sock");
    // Firecracker resolves relative paths against its working directory; so does the double.
    const child = spawn(wrapper, ["--api-sock", socket, "--id", "snap"], { cwd: vmDir, stdio: "ignore" });
    children.push(child);
    await waitForApi(socket, Date.now() + 20_000);
    return { socket, child };
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fc-snap-"));
    strictLog = join(dir, "strict.jsonl");
    vmlinux = join(dir, "vmlinux");
    await extractVmlinux(createProcessRunner(), kernel!, vmlinux);
    execFileSync("ip", ["netns", "add", NETNS]);
    for (const tap of ["tap0", "tap1"]) {
      execFileSync("ip", ["-n", NETNS, "tuntap", "add", "dev", tap, "mode", "tap"]);
      execFileSync("ip", ["-n", NETNS, "link", "set", tap, "up"]);
    }
    wrapper = join(dir, "firecracker");
    await writeFile(
      wrapper,
      `#!/bin/sh\nexport FC_DOUBLE_STRICT_LOG=${strictLog}\nexec ip netns exec ${NETNS} ${DOUBLE} "$@"\n`,
    );
    await chmod(wrapper, 0o755);
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    spawnSync("ip", ["netns", "delete", NETNS]);
    await rm(dir, { recursive: true, force: true });
  });

  it("saves a paused VM and loads it into a fresh process with another tap and disk", async () => {
    const source = await spawnDouble(join(dir, "source"));
    const api = createFirecrackerClient(source.socket);
    await api.request("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 128 });
    await api.request("PUT", "/boot-source", {
      kernel_image_path: vmlinux,
      boot_args: "console=ttyS0 reboot=k panic=0",
    });
    await api.request("PUT", "/drives/rootfs", {
      drive_id: "rootfs",
      path_on_host: "root.img",
      is_root_device: true,
      is_read_only: false,
    });
    await api.request("PUT", "/network-interfaces/eth0", {
      iface_id: "eth0",
      host_dev_name: "tap0",
      guest_mac: "06:00:ac:10:00:02",
    });
    await api.request("PUT", "/actions", { action_type: "InstanceStart" });

    const snapDir = join(dir, "snap");
    await mkdir(snapDir);
    const create = { snapshot_path: join(snapDir, "state"), mem_file_path: join(snapDir, "memory") };
    await assert.rejects(api.request("PUT", "/snapshot/create", create), /The microVM must be paused/);
    await api.request("PATCH", "/vm", { state: "Paused" });
    await api.request("PUT", "/snapshot/create", create);
    assert.equal(await stateOf(source.socket), "Paused");
    assert.ok((await stat(join(snapDir, "memory"))).size > 1024 * 1024, "the memory file holds the guest");
    // The source goes on after its snapshot.
    await api.request("PATCH", "/vm", { state: "Resumed" });
    assert.equal(await stateOf(source.socket), "Running");

    const clone = await spawnDouble(join(dir, "clone"));
    const cloneApi = createFirecrackerClient(clone.socket);
    await cloneApi.request("PUT", "/snapshot/load", {
      snapshot_path: create.snapshot_path,
      mem_backend: { backend_type: "File", backend_path: create.mem_file_path },
      network_overrides: [{ iface_id: "eth0", host_dev_name: "tap1" }],
      resume_vm: true,
    });
    assert.equal(await stateOf(clone.socket), "Running");
    const config = (await cloneApi.request("GET", "/vm/config")).body as {
      "network-interfaces": { host_dev_name: string }[];
      "machine-config": { mem_size_mib: number };
    };
    assert.equal(config["network-interfaces"][0]?.host_dev_name, "tap1");
    assert.equal(config["machine-config"].mem_size_mib, 128);

    // The clone's QEMU runs in the clone's directory, so "root.img" is the clone's own disk.
    const qemuPid = await qemuPidOf(clone.child.pid!);
    assert.equal(await readlink(`/proc/${qemuPid}/cwd`), join(dir, "clone"));
    const cmdline = (await readFile(`/proc/${qemuPid}/cmdline`, "utf8")).split("\0");
    assert.ok(cmdline.some((arg) => arg.startsWith("id=rootfs,file=root.img")));
    assert.ok(cmdline.some((arg) => arg.includes("ifname=tap1")));
    assert.deepEqual(cmdline.slice(cmdline.indexOf("-incoming"), cmdline.indexOf("-incoming") + 2), [
      "-incoming",
      "fd:3",
    ]);
  });

  it("refuses a load after configuration and a load of a missing file (which ends the process)", async () => {
    const configured = await spawnDouble(join(dir, "configured"));
    const api = createFirecrackerClient(configured.socket);
    await api.request("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 128 });
    await assert.rejects(
      api.request("PUT", "/snapshot/load", { snapshot_path: "/nowhere", mem_file_path: "/nowhere" }),
      /not allowed after configuring boot-specific resources/,
    );
    const fresh = await spawnDouble(join(dir, "missing"));
    await assert.rejects(
      createFirecrackerClient(fresh.socket).request("PUT", "/snapshot/load", {
        snapshot_path: join(dir, "missing", "nothing"),
        mem_backend: { backend_type: "File", backend_path: join(dir, "missing", "nothing") },
      }),
      /Load snapshot error: .*No such file or directory/,
    );
    const code = await new Promise<number | null>((resolve) => {
      if (fresh.child.exitCode !== null) resolve(fresh.child.exitCode);
      else fresh.child.once("exit", (exitCode) => resolve(exitCode));
    });
    assert.notEqual(code, 0, "a failed load ends the process, as Firecracker's does");
  });

  it("sent only spec-valid requests and got only spec-valid responses", async () => {
    const lines = (await readFile(strictLog, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.ok(lines.some((line) => line.path === "/snapshot/create" && line.status === 204));
    assert.ok(lines.some((line) => line.path === "/snapshot/load" && line.status === 204));
    assert.deepEqual(
      lines.filter((line) => !line.requestValid || !line.responseValid),
      [],
    );
  });
});

/** The QEMU under a double: its child, or its grandchild through setpriv and ip netns exec. */
async function qemuPidOf(pid: number): Promise<number> {
  for (const child of await childrenOf(pid)) {
    const comm = (await readFile(`/proc/${child}/comm`, "utf8")).trim();
    if (comm.startsWith("qemu")) return child;
    const deeper = await qemuPidOf(child).catch(() => 0);
    if (deeper) return deeper;
  }
  throw new Error(`no QEMU under ${pid}`);
}
