/**
 * The drivers' `snapshots` role against real QEMU under TCG (and the
 * Firecracker double, which runs QEMU too): a running guest (the test
 * kernel, hung in its panic) is paused, saved and resumed; a second VMM on
 * another tap, in another directory with its own disk, restores the saved
 * state and runs; both describe the same machine. The double's strict log
 * shows every Firecracker call was spec-valid.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chmod, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../../src/core/log/index.ts";
import { SnapshotFiles } from "../../src/core/snapshot/index.ts";
import type { BootSpec, VmmDriver, VmmHandle } from "../../src/core/vmm/index.ts";
import { createFirecrackerDriver } from "../../src/sys/firecracker/index.ts";
import { extractVmlinux } from "../../src/sys/kernel/index.ts";
import { connectQmp } from "../../src/sys/qmp/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { createQemuDriver } from "../../src/sys/vmm/index.ts";
import { hostTscKhz, TEST_KERNEL_SKIP_REASON, testKernel } from "../helpers/test-kernel.ts";

const kernel = await testKernel();
const runner = createProcessRunner();
const netns = `banger-vsnap-${process.pid}`;
const DOUBLE = fileURLToPath(new URL("../doubles/firecracker/firecracker", import.meta.url));

describe("VMM snapshots (real QEMU, TCG)", { skip: kernel ? false : TEST_KERNEL_SKIP_REASON }, () => {
  let dir: string;
  let cmdline: string;
  const handles: { driver: VmmDriver; handle: VmmHandle }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-vsnap-"));
    const tsc = await hostTscKhz();
    cmdline = `console=ttyS0 panic=0${tsc ? ` tsc_early_khz=${tsc}` : ""}`;
    await runner.run(["ip", "netns", "add", netns]);
    for (const tap of ["tapa", "tapb", "tapc", "tapd"]) {
      await runner.run(["ip", "-n", netns, "tuntap", "add", "dev", tap, "mode", "tap"]);
      await runner.run(["ip", "-n", netns, "link", "set", tap, "up"]);
    }
  });

  after(async () => {
    for (const { driver, handle } of handles) await driver.kill(handle).catch(() => undefined);
    await runner.run(["ip", "netns", "del", netns], { allowFailure: true });
    await rm(dir, { recursive: true, force: true });
  });

  async function spec(
    name: string,
    tap: string,
    options: { kernel: string; format: "qcow2" | "raw" },
  ): Promise<BootSpec> {
    const vmDir = join(dir, name);
    mkdirSync(vmDir, { recursive: true });
    const disk = join(vmDir, `root.${options.format}`);
    if (options.format === "qcow2")
      await runner.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"]);
    else await writeFile(disk, Buffer.alloc(16 * 1024 * 1024));
    return {
      vmId: `id-${name}`,
      vmName: name,
      cpus: 1,
      memoryMib: 128,
      kernel: options.kernel,
      initrd: null,
      kernelCmdline: cmdline,
      disk: { path: disk, format: options.format },
      tap,
      mac: `52:54:00:00:00:${tap === "tapa" ? "0a" : tap === "tapb" ? "0b" : tap === "tapc" ? "0c" : "0d"}`,
      consoleLog: join(vmDir, "console.log"),
      vmmLog: join(vmDir, "vmm.log"),
      vmDir,
    };
  }

  async function saveAndRestore(driver: VmmDriver, source: BootSpec, clone: BootSpec): Promise<VmmHandle> {
    const snapshots = driver.snapshots;
    assert.ok(snapshots);
    const handle = await driver.start(source, new AbortController().signal);
    handles.push({ driver, handle });
    assert.ok(driver.features.snapshots, "a started driver knows it can snapshot");
    const snapDir = join(dir, `snap-${source.vmName}`);
    mkdirSync(snapDir);
    await driver.pause(handle);
    await snapshots.save(handle, snapDir, new AbortController().signal);
    await driver.resume(handle);
    assert.equal(await driver.reattach(handle), "running", "the source runs on after its snapshot");
    assert.ok((await stat(join(snapDir, SnapshotFiles.state))).size > 0);
    assert.equal(
      (await snapshots.describe(source)).signature,
      (await snapshots.describe(clone)).signature,
      "source and clone are the same machine",
    );
    const restored = await snapshots.restore(clone, snapDir, new AbortController().signal);
    handles.push({ driver, handle: restored });
    assert.equal(await driver.isRunning(restored), true);
    assert.equal(await driver.reattach(restored), "running");
    return restored;
  }

  it("QEMU: migrates a paused guest to a file and loads it into a new QEMU with -incoming fd:3", async () => {
    const driver = createQemuDriver({
      binary: "qemu-system-x86_64",
      accel: async () => "tcg",
      logger: silentLogger,
      launcher: ["ip", "netns", "exec", netns],
    });
    const source = await spec("qsrc", "tapa", { kernel: kernel!, format: "qcow2" });
    const clone = await spec("qclone", "tapb", { kernel: kernel!, format: "qcow2" });
    const restored = await saveAndRestore(driver, source, clone);
    const argv = (await readFile(`/proc/${restored.pid}/cmdline`, "utf8")).split("\0");
    assert.deepEqual(argv.slice(argv.indexOf("-incoming"), argv.indexOf("-incoming") + 2), [
      "-incoming",
      "fd:3",
    ]);
    assert.ok(
      argv.some((arg) => arg.includes(`file=${clone.disk.path}`)),
      "the clone opens its own disk",
    );
    const qmp = await connectQmp({ socketPath: restored.controlSocket });
    try {
      assert.equal((await qmp.status()).status, "running");
    } finally {
      qmp.close();
    }
    const bigger = { ...clone, memoryMib: 256 };
    assert.notEqual(
      (await driver.snapshots!.describe(bigger)).signature,
      (await driver.snapshots!.describe(clone)).signature,
    );
  });

  it("Firecracker (the double): snapshot/create and snapshot/load through the driver, spec-valid", async () => {
    const strictLog = join(dir, "strict.jsonl");
    const wrapper = join(dir, "firecracker");
    await writeFile(
      wrapper,
      `#!/bin/sh\nexport FC_DOUBLE_STRICT_LOG=${strictLog}\nexec ip netns exec ${netns} ${DOUBLE} "$@"\n`,
    );
    await chmod(wrapper, 0o755);
    const vmlinux = join(dir, "vmlinux");
    await extractVmlinux(runner, kernel!, vmlinux);
    const driver = createFirecrackerDriver({ binary: wrapper, logger: silentLogger, runner });
    const source = await spec("fsrc", "tapc", { kernel: vmlinux, format: "raw" });
    const clone = await spec("fclone", "tapd", { kernel: vmlinux, format: "raw" });
    const restored = await saveAndRestore(driver, source, clone);
    // Firecracker runs in the clone's directory, where the recorded relative drive path is the clone's disk.
    assert.equal(await readlink(`/proc/${restored.pid}/cwd`), clone.vmDir);
    const described = await driver.snapshots!.describe(clone);
    assert.equal(described.vmmVersion, "1.16.1");
    const lines = (await readFile(strictLog, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.ok(lines.some((line) => line.path === "/snapshot/load" && line.status === 204));
    assert.deepEqual(
      lines.filter((line) => !line.requestValid || !line.responseValid),
      [],
    );
  });
});
