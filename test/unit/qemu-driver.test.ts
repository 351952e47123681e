/**
 * The QEMU driver's process handling against a fake QEMU: a small Node
 * script that serves QMP on the `-qmp unix:` socket it is given and behaves
 * as its `-append` line says (obey the power button, ignore everything, or
 * never open QMP). Real QEMU is covered by test/integration/qemu-driver.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Logger } from "../../src/core/log/index.ts";
import type { BootSpec, VmmHandle } from "../../src/core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { createQemuDriver } from "../../src/sys/vmm/index.ts";

const FAKE_QEMU = `#!${process.execPath}
import { createServer } from "node:net";
const argv = process.argv.slice(2);
const mode = argv[argv.indexOf("-append") + 1];
const qmp = argv[argv.indexOf("-qmp") + 1].replace(/^unix:/, "").split(",")[0];
process.on("SIGTERM", () => { if (mode !== "stubborn" && mode !== "silent") process.exit(0); });
setInterval(() => {}, 1000);
const chardev = argv[argv.indexOf("-chardev") + 1];
const consolePath = chardev.startsWith("socket,") ? chardev.split(",").find((part) => part.startsWith("path=")).slice(5) : undefined;
if (mode !== "silent") {
  if (consolePath)
    createServer((socket) => {
      if (mode !== "flood") return void socket.write("fake console\\n");
      // A guest running \`yes > /dev/ttyS0\`: 24 MiB, then a marker.
      const block = Buffer.from("y\\n".repeat(32768));
      let left = 384;
      const more = () => {
        while (left > 0) {
          left--;
          if (!socket.write(block)) return void socket.once("drain", more);
        }
        socket.write("FLOOD DONE\\n");
      };
      more();
    }).listen(consolePath);
  createServer((socket) => {
    socket.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + "\\n");
    socket.on("data", (chunk) => {
      for (const line of String(chunk).split("\\n").filter(Boolean)) {
        const request = JSON.parse(line);
        socket.write(JSON.stringify({ return: {}, id: request.id }) + "\\n");
        if (request.execute === "system_powerdown" && mode === "obedient") process.exit(0);
        if (request.execute === "quit" && mode !== "stubborn") process.exit(0);
      }
    });
  }).listen(qmp);
}
`;

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

const CONSOLE_CAP = 1024 * 1024;

describe("QEMU driver (fake QEMU)", () => {
  let dir: string;
  let binary: string;
  const lines: string[] = [];
  const handles: VmmHandle[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-qemu-unit-"));
    binary = join(dir, "fake-qemu.mjs");
    await writeFile(binary, FAKE_QEMU);
    await chmod(binary, 0o755);
  });
  after(async () => {
    for (const handle of handles) {
      try {
        process.kill(handle.pid, "SIGKILL");
      } catch {}
    }
    await rm(dir, { recursive: true, force: true });
  });

  const driver = () =>
    createQemuDriver({
      binary,
      accel: async () => "tcg",
      logger: recordingLogger(lines),
      qmpTimeoutMs: 1500,
      console: { maxBytes: CONSOLE_CAP, files: 2 },
    });
  /** Each VM gets its own directory, where the driver puts its QMP socket. */
  function vmDirOf(name: string): string {
    const vmDir = join(dir, name);
    mkdirSync(vmDir, { recursive: true });
    return vmDir;
  }
  function spec(name: string, mode: string): BootSpec {
    return {
      vmId: name,
      vmName: name,
      cpus: 1,
      memoryMib: 128,
      kernel: "/k",
      initrd: null,
      kernelCmdline: mode,
      disk: { path: "/d", format: "raw" },
      tap: "tap0",
      mac: "52:54:00:00:00:01",
      consoleLog: join(dir, `${name}.console`),
      vmmLog: join(dir, `${name}.vmm.log`),
      vmDir: vmDirOf(name),
    };
  }
  async function start(name: string, mode: string): Promise<VmmHandle> {
    const handle = await driver().start(spec(name, mode), new AbortController().signal);
    handles.push(handle);
    return handle;
  }

  it("stop ends at the power button when the guest obeys it", async () => {
    const handle = await start("obedient", "obedient");
    lines.length = 0;
    await driver().stop(handle, { timeoutMs: 2000 });
    assert.ok(lines.includes("QEMU stopped after system_powerdown"), lines.join(" | "));
    assert.equal(await driver().isRunning(handle), false);
  });

  it("drains the console into console.log before the guest runs, and a flood stays under its cap", async () => {
    const quiet = await start("quiet", "obedient");
    // The drain attached during start, so the first output reaches the file.
    while (!(await readFile(spec("quiet", "obedient").consoleLog, "utf8")).includes("fake console"))
      await new Promise((resolve) => setTimeout(resolve, 10));
    await driver().kill(quiet);

    const flooding = await start("flood", "flood");
    const log = spec("flood", "flood").consoleLog;
    while (!(await readFile(log, "utf8").catch(() => "")).includes("FLOOD DONE"))
      await new Promise((resolve) => setTimeout(resolve, 20));
    const files = (await readdir(dir)).filter((name) => name.startsWith("flood.console")).sort();
    assert.deepEqual(files, ["flood.console", "flood.console.1", "flood.console.2"]);
    for (const name of files) assert.ok((await stat(join(dir, name))).size <= CONSOLE_CAP, name);
    await driver().kill(flooding);
  });

  it("stop escalates to SIGKILL when QEMU ignores powerdown and quit", async () => {
    const handle = await start("stubborn", "stubborn");
    lines.length = 0;
    await driver().stop(handle, { timeoutMs: 200 });
    assert.ok(lines.includes("QEMU ignored a graceful stop; sending SIGKILL"), lines.join(" | "));
    assert.equal(await driver().isRunning(handle), false);
    await assert.rejects(stat(handle.controlSocket), { code: "ENOENT" });
  });

  it("start kills a QEMU whose QMP never answers and reports BOOT_FAILED", async () => {
    lines.length = 0;
    const failure = await driver()
      .start(spec("silent", "silent"), new AbortController().signal)
      .catch((error: unknown) => error);
    assert.ok(failure instanceof BangerError);
    assert.equal(failure.code, ErrorCode.BOOT_FAILED);
    assert.match(failure.message, /did not answer/);
    assert.ok(lines.includes("QEMU start failed; killing it"), lines.join(" | "));
  });

  it("a cancelled start kills what it spawned", async () => {
    const controller = new AbortController();
    const pending = driver().start(spec("cancel", "silent"), controller.signal);
    setTimeout(() => controller.abort(), 100);
    await assert.rejects(
      pending,
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.CANCELLED,
    );
    assert.ok(lines.includes("QEMU start failed; killing it"));
  });

  it("a missing binary is TOOL_MISSING", async () => {
    const missing = createQemuDriver({
      binary: join(dir, "nope"),
      accel: async () => "tcg",
      logger: recordingLogger([]),
    });
    await assert.rejects(
      missing.start(spec("missing", "x"), new AbortController().signal),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING,
    );
  });

  it("stop and kill on a handle whose process is gone are no-ops", async () => {
    const gone: VmmHandle = { pid: 2 ** 22 + 1, pidStartTicks: 1, controlSocket: join(dir, "gone.qmp") };
    await driver().stop(gone, { timeoutMs: 100 });
    await driver().kill(gone);
    assert.equal(await driver().isRunning(gone), false);
  });
});
