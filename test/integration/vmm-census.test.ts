import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { listVmmProcesses } from "../../src/sys/vmm/census.ts";
import { killAndWait } from "../../src/sys/vmm/process.ts";
import { makeTempDir } from "../helpers/tmp.ts";

/** A long-lived stand-in whose argv looks like a VMM's. */
function fakeVmm(...args: string[]) {
  return spawn(
    process.execPath,
    ["-e", "process.stdout.write('up'); setTimeout(() => {}, 60000)", "--", ...args],
    {
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
}

describe("VMM census", () => {
  it("finds every VMM of a home by its control socket on the command line, and only those", async () => {
    const home = makeTempDir();
    const other = makeTempDir();
    const vmsDir = join(home.path, "state", "vms");
    mkdirSync(vmsDir, { recursive: true });
    const qemu = fakeVmm("-qmp", `unix:${vmsDir}/aaa111/qmp.sock,server=on,wait=off`);
    const firecracker = fakeVmm("--api-sock", `${vmsDir}/bbb222/api.sock`);
    const ssh = fakeVmm("-o", `UserKnownHostsFile=${vmsDir}/aaa111/known_hosts`);
    const elsewhere = fakeVmm("-qmp", `unix:${join(other.path, "state", "vms")}/ccc333/qmp.sock`);
    const children = [qemu, firecracker, ssh, elsewhere];
    try {
      await Promise.all(
        children.map((child) => new Promise((resolve) => child.stdout.once("data", resolve))),
      );
      const found = await listVmmProcesses({ vmsDir, controlFiles: ["qmp.sock", "api.sock"] });
      assert.deepEqual(
        found.map((entry) => [entry.vmId, entry.handle.pid]).sort(),
        [
          ["aaa111", qemu.pid],
          ["bbb222", firecracker.pid],
        ].sort(),
      );
      for (const entry of found) await killAndWait(entry.handle, 5000);
      const after = await listVmmProcesses({ vmsDir, controlFiles: ["qmp.sock", "api.sock"] });
      assert.deepEqual(after, []);
    } finally {
      for (const child of children) child.kill("SIGKILL");
      home.cleanup();
      other.cleanup();
    }
  });
});
