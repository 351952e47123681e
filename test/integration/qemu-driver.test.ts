/**
 * The QEMU driver against real QEMU under TCG. The guest is the test kernel
 * with no root filesystem: it boots, panics at mounting root and, with
 * `panic=0`, hangs in the panic, so QEMU stays up and ignores the power
 * button. QEMU runs inside a network namespace of its own (through the
 * driver's `launcher`), on a tap that is attached to a bridge there.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Logger } from "../../src/core/log/index.ts";
import {
  type BootSpec,
  qemuControlSocket,
  type VmmDriver,
  type VmmHandle,
} from "../../src/core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { processLiveness, readProcStat } from "../../src/sys/proc/index.ts";
import { connectQmp } from "../../src/sys/qmp/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { createQemuDriver } from "../../src/sys/vmm/index.ts";
import { hostTscKhz, TEST_KERNEL_SKIP_REASON, testKernel } from "../helpers/test-kernel.ts";

const kernel = await testKernel();
const runner = createProcessRunner();
const netns = `banger-qemu-${process.pid}`;

function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    debug: (msg) => lines.push(msg),
    info: (msg) => lines.push(msg),
    warn: (msg) => lines.push(msg),
    error: (msg) => lines.push(msg),
    child: () => logger,
  };
  return logger;
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe("QEMU driver (real QEMU, TCG)", { skip: kernel ? false : TEST_KERNEL_SKIP_REASON }, () => {
  let dir: string;
  let disk: string;
  let cmdline: string;
  const logLines: string[] = [];
  let driver: VmmDriver;
  const started: VmmHandle[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-qemu-int-"));
    disk = join(dir, "disk.raw");
    await writeFile(disk, Buffer.alloc(1024 * 1024));
    const tsc = await hostTscKhz();
    cmdline = `console=ttyS0 panic=0${tsc ? ` tsc_early_khz=${tsc}` : ""}`;
    await runner.run(["ip", "netns", "add", netns]);
    await runner.run(["ip", "-n", netns, "link", "add", "br0", "type", "bridge"]);
    for (const tap of ["tapa", "tapb", "tapc"]) {
      await runner.run(["ip", "-n", netns, "tuntap", "add", "dev", tap, "mode", "tap"]);
      await runner.run(["ip", "-n", netns, "link", "set", tap, "master", "br0", "up"]);
    }
    driver = createQemuDriver({
      binary: "qemu-system-x86_64",
      accel: async () => "tcg",
      logger: recordingLogger(logLines),
      launcher: ["ip", "netns", "exec", netns],
    });
  });

  after(async () => {
    for (const handle of started) {
      if (
        (await processLiveness({
          pid: handle.pid,
          startTicks: handle.pidStartTicks,
          marker: handle.controlSocket,
        })) === "alive"
      ) {
        process.kill(handle.pid, "SIGKILL");
      }
    }
    await runner.run(["ip", "netns", "del", netns], { allowFailure: true });
    await rm(dir, { recursive: true, force: true });
  });

  /** Each VM gets its own directory, where the driver puts its QMP socket. */
  function vmDirOf(name: string): string {
    const vmDir = join(dir, name);
    mkdirSync(vmDir, { recursive: true });
    return vmDir;
  }

  function bootSpec(name: string, tap: string, overrides: Partial<BootSpec> = {}): BootSpec {
    return {
      vmId: name,
      vmName: name,
      cpus: 1,
      memoryMib: 256,
      kernel: kernel ?? "",
      initrd: null,
      kernelCmdline: cmdline,
      disk: { path: disk, format: "raw" },
      tap,
      mac: "52:54:00:00:00:0a",
      consoleLog: join(dir, `${name}.console.log`),
      vmmLog: join(dir, `${name}.vmm.log`),
      vmDir: vmDirOf(name),
      ...overrides,
    };
  }

  it("starts, answers QMP, and stop falls through an ignored power button to quit", async () => {
    const spec = bootSpec("stopme", "tapa");
    await writeFile(spec.consoleLog, "EARLIER BOOT\n");
    const handle = await driver.start(spec, new AbortController().signal);
    started.push(handle);
    assert.equal(await driver.isRunning(handle), true);
    assert.ok(handle.pidStartTicks > 0);
    const qmp = await connectQmp({ socketPath: handle.controlSocket });
    assert.deepEqual(await qmp.status(), { running: true, status: "running" });
    qmp.close();
    await eventually("the kernel panic on the console", async () =>
      (await readFile(spec.consoleLog, "utf8")).includes("Kernel panic"),
    );
    const console = await readFile(spec.consoleLog, "utf8");
    assert.ok(console.startsWith("EARLIER BOOT\n"), "the console log is appended to, not truncated");
    assert.match(console, /Linux version/);

    logLines.length = 0;
    await driver.stop(handle, { timeoutMs: 1500 });
    assert.ok(logLines.includes("QEMU stopped after quit"), `stopped by quit: ${logLines.join(" | ")}`);
    assert.equal(await driver.isRunning(handle), false);
    assert.equal(await exists(handle.controlSocket), false, "control socket removed");
    await eventually(
      "the QEMU process to be reaped",
      async () => (await readProcStat(handle.pid)) === undefined,
    );
    await driver.stop(handle, { timeoutMs: 1500 });
    await driver.kill(handle);
  });

  it("kill ends QEMU at once and leaves no process or socket", async () => {
    const spec = bootSpec("killme", "tapb");
    const handle = await driver.start(spec, new AbortController().signal);
    started.push(handle);
    assert.equal(await driver.isRunning(handle), true);
    await driver.kill(handle);
    assert.equal(await driver.isRunning(handle), false);
    assert.equal(await exists(handle.controlSocket), false);
    await eventually(
      "the QEMU process to be reaped",
      async () => (await readProcStat(handle.pid)) === undefined,
    );
    await driver.kill(handle);
  });

  it("QEMU outlives the process that started it; a new process stops it from the handle", async () => {
    const spec = bootSpec("orphan", "tapc");
    const script = [
      `import { createQemuDriver } from ${JSON.stringify(new URL("../../src/sys/vmm/index.ts", import.meta.url).href)};`,
      `import { silentLogger } from ${JSON.stringify(new URL("../../src/core/log/index.ts", import.meta.url).href)};`,
      `const driver = createQemuDriver({ binary: "qemu-system-x86_64", accel: async () => "tcg", logger: silentLogger, launcher: ["ip", "netns", "exec", ${JSON.stringify(netns)}] });`,
      `const handle = await driver.start(${JSON.stringify(spec)}, new AbortController().signal);`,
      // Exit as a daemon that dies would: the console drain would otherwise keep this process alive.
      "process.stdout.write(JSON.stringify(handle), () => process.exit(0));",
    ].join("\n");
    const result = await runner.run([process.execPath, "--input-type=module", "-e", script]);
    const handle = JSON.parse(result.stdout) as VmmHandle;
    started.push(handle);
    assert.equal(await driver.isRunning(handle), true, "QEMU kept running after its parent exited");
    assert.notEqual((await readProcStat(handle.pid))?.ppid, process.pid);
    assert.equal(await driver.reattach(handle), "running", "a new process re-opens QMP from the handle");
    await driver.stop(handle, { timeoutMs: 1500 });
    assert.equal(await driver.isRunning(handle), false);
    assert.equal(await exists(handle.controlSocket), false);
  });

  it("a QEMU that exits during start is BOOT_FAILED with its log tail", async () => {
    const spec = bootSpec("broken", "tapc", { kernel: join(dir, "no-such-kernel") });
    const failure = await driver.start(spec, new AbortController().signal).catch((error: unknown) => error);
    assert.ok(failure instanceof BangerError, String(failure));
    assert.equal(failure.code, ErrorCode.BOOT_FAILED);
    assert.match(failure.message, /exited with status 1 during start/);
    assert.match(failure.hint ?? "", /no-such-kernel/);
    assert.equal(await exists(qemuControlSocket(spec.vmDir)), false);
  });

  it("a start cancelled before it begins launches nothing", async () => {
    const controller = new AbortController();
    controller.abort();
    const spec = bootSpec("cancelled", "tapc");
    await assert.rejects(
      driver.start(spec, controller.signal),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.CANCELLED,
    );
    assert.equal(await exists(spec.vmmLog), false);
  });
});
