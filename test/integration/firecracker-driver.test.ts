/**
 * The Firecracker driver against the test double, up to InstanceStart with a
 * real guest kernel under QEMU/TCG. The double runs in a private network
 * namespace holding the tap (through an `ip netns exec` wrapper as the
 * driver's binary). The kernel has no root disk driver built in and is
 * booted with panic=0, so the guest hangs in its panic and QEMU stays up
 * until the driver stops or kills it.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { firecrackerFiles } from "../../src/core/firecracker/index.ts";
import { silentLogger } from "../../src/core/log/index.ts";
import type { BootSpec, VmmHandle } from "../../src/core/vmm/contract.ts";
import {
  createFirecrackerClient,
  createFirecrackerDriver,
  pauseFirecracker,
  resumeFirecracker,
} from "../../src/sys/firecracker/index.ts";
import { extractVmlinux } from "../../src/sys/kernel/index.ts";
import { processLiveness, readProcStat } from "../../src/sys/proc/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";

const DOUBLE = fileURLToPath(new URL("../doubles/firecracker/firecracker", import.meta.url));
const KERNEL_DIR = "/var/tmp/banger-test-kernel";
const NETNS = `banger-fc-${process.pid}`;

function findKernel(): string | undefined {
  const boot = join(KERNEL_DIR, "root", "boot");
  if (!existsSync(boot)) return undefined;
  const image = readdirSync(boot).find((file) => file.startsWith("vmlinuz-"));
  return image ? join(boot, image) : undefined;
}

function childrenOf(pid: number): number[] {
  try {
    return execFileSync("cat", [`/proc/${pid}/task/${pid}/children`], { encoding: "utf8" })
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

describe("Firecracker driver against the double", {
  skip: findKernel() ? false : "no test kernel in /var/tmp/banger-test-kernel",
}, () => {
  let dir: string;
  let vmlinux: string;
  let strictLog: string;
  let wrapper: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fc-driver-"));
    strictLog = join(dir, "strict.jsonl");
    vmlinux = join(dir, "vmlinux");
    await extractVmlinux(createProcessRunner(), findKernel()!, vmlinux);
    await writeFile(join(dir, "root.img"), Buffer.alloc(16 * 1024 * 1024));
    execFileSync("ip", ["netns", "add", NETNS]);
    execFileSync("ip", ["-n", NETNS, "link", "add", "br0", "type", "bridge"]);
    execFileSync("ip", ["-n", NETNS, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    execFileSync("ip", ["-n", NETNS, "link", "set", "tap0", "master", "br0"]);
    execFileSync("ip", ["-n", NETNS, "link", "set", "tap0", "up"]);
    execFileSync("ip", ["-n", NETNS, "link", "set", "br0", "up"]);
    wrapper = join(dir, "firecracker");
    await writeFile(
      wrapper,
      `#!/bin/sh\nexport FC_DOUBLE_STRICT_LOG=${strictLog}\nexec ip netns exec ${NETNS} ${DOUBLE} "$@"\n`,
    );
    await chmod(wrapper, 0o755);
  });

  after(async () => {
    spawnSync("ip", ["netns", "delete", NETNS]);
    await rm(dir, { recursive: true, force: true });
  });

  function bootSpec(name: string): BootSpec {
    const vmDir = join(dir, name);
    execFileSync("mkdir", ["-p", vmDir]);
    return {
      vmId: `id-${name}`,
      vmName: name,
      cpus: 1,
      memoryMib: 256,
      kernel: vmlinux,
      initrd: null,
      kernelCmdline: "console=ttyS0 reboot=k panic=0",
      disk: { path: join(dir, "root.img"), format: "raw" },
      tap: "tap0",
      mac: "06:00:ac:10:00:02",
      consoleLog: join(vmDir, "console.log"),
      vmmLog: join(vmDir, "vmm.log"),
      vmDir,
    };
  }

  async function qemuOf(handle: VmmHandle) {
    const [qemu] = childrenOf(handle.pid);
    assert.ok(qemu, "the double runs QEMU as its child");
    const stat = await readProcStat(qemu);
    return { pid: qemu, startTicks: stat!.startTicks, marker: "microvm" };
  }

  it("starts, pauses, resumes and stops gracefully (Ctrl-Alt-Del ignored, then SIGTERM)", async () => {
    const driver = createFirecrackerDriver({
      binary: wrapper,
      logger: silentLogger,
      signalTimeoutMs: 10_000,
    });
    const spec = bootSpec("graceful");
    const handle = await driver.start(spec, new AbortController().signal);
    assert.equal(await driver.isRunning(handle), true);
    assert.deepEqual(driver.features.kernelFormats, ["elf"]);
    const qemu = await qemuOf(handle);
    assert.equal(await processLiveness(qemu), "alive");

    const api = createFirecrackerClient(firecrackerFiles(spec.vmDir).api);
    assert.equal(((await api.request("GET", "/")).body as { state: string }).state, "Running");
    assert.equal(await driver.reattach(handle), "running");
    await pauseFirecracker(handle);
    assert.equal(((await api.request("GET", "/")).body as { state: string }).state, "Paused");
    assert.equal(await driver.reattach(handle), "paused");
    await resumeFirecracker(handle);
    assert.equal(((await api.request("GET", "/")).body as { state: string }).state, "Running");
    await assert.rejects(api.request("PUT", "/actions", { action_type: "InstanceStart" }), {
      code: "BAD_STATE",
      message:
        "firecracker PUT /actions: The requested operation is not supported after starting the microVM.",
    });
    assert.equal(existsSync(firecrackerFiles(spec.vmDir).vsock), true);

    await driver.stop(handle, { timeoutMs: 1000 });
    assert.equal(await driver.isRunning(handle), false);
    assert.notEqual(await processLiveness(qemu), "alive");
    assert.equal(existsSync(firecrackerFiles(spec.vmDir).api), false);
    await driver.stop(handle, { timeoutMs: 1000 }); // idempotent
  });

  it("drains the serial console through its FIFO into a capped, rotating console.log, also after a reattach", async () => {
    const cap = { maxBytes: 1024, files: 2 };
    const driver = createFirecrackerDriver({ binary: wrapper, logger: silentLogger, console: cap });
    const spec = bootSpec("console");
    const handle = await driver.start(spec, new AbortController().signal);
    const qemu = await qemuOf(handle);
    try {
      const logs = () =>
        ["", ".1", ".2"].map((suffix) => spec.consoleLog + suffix).filter((file) => existsSync(file));
      // The kernel prints several KiB (bounded wait: 600 × 100 ms).
      for (let tries = 0; tries < 600 && logs().length < 3; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(logs().length, 3, "the console rotated");
      const text = (await Promise.all(logs().map((file) => readFile(file, "utf8")))).join("");
      assert.match(text, /\[ *\d+\.\d+\] /, "kernel messages arrived through the FIFO");
      for (const file of logs()) assert.ok(statSync(file).size <= cap.maxBytes, `${file} is within its cap`);
      // A daemon that restarts (a new driver) drains the same FIFO again without error.
      const restarted = createFirecrackerDriver({ binary: wrapper, logger: silentLogger, console: cap });
      assert.equal(await restarted.reattach(handle), "running");
      await restarted.kill(handle);
      // The next test's VM needs tap0: wait (bounded) until this one's QEMU has let it go.
      for (let tries = 0; (await processLiveness(qemu)) === "alive" && tries < 100; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      // Whatever failed above, no VMM outlives the test.
      await driver.kill(handle);
    }
    assert.equal(existsSync(firecrackerFiles(spec.vmDir).console), false, "the FIFO goes with its VMM");
  });

  it("kills immediately, taking QEMU with it", async () => {
    const driver = createFirecrackerDriver({ binary: wrapper, logger: silentLogger });
    const spec = bootSpec("killed");
    const handle = await driver.start(spec, new AbortController().signal);
    const qemu = await qemuOf(handle);
    await driver.kill(handle);
    assert.equal(await driver.isRunning(handle), false);
    for (let tries = 0; (await processLiveness(qemu)) === "alive" && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.notEqual(await processLiveness(qemu), "alive");
    await driver.kill(handle); // idempotent
  });

  it("kills the VMM and removes its socket when a configuration call fails", async () => {
    const driver = createFirecrackerDriver({ binary: wrapper, logger: silentLogger });
    const spec = { ...bootSpec("badtap"), tap: "no-such-tap" };
    await assert.rejects(
      driver.start(spec, new AbortController().signal),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, "BOOT_FAILED");
        assert.match(
          error.message,
          /^firecracker PUT \/network-interfaces\/eth0: Network config error: Cannot open\/create the tap device/,
        );
        return true;
      },
    );
    assert.equal(existsSync(firecrackerFiles(spec.vmDir).api), false);
  });

  it("sent only spec-valid requests and got only spec-valid responses", async () => {
    const lines = (await readFile(strictLog, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.ok(lines.length >= 8);
    assert.deepEqual(
      lines.filter((line) => !line.requestValid || !line.responseValid),
      [],
    );
  });
});
