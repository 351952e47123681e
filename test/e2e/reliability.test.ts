/**
 * The daemon under faults, with a real QEMU guest: descriptor exhaustion
 * (prlimit on the running daemon) touches no VM and the daemon answers
 * afterwards; a daemon killed between spawning QEMU and recording it, or
 * whose VM's handles.json is then torn, leaves no QEMU behind once the next
 * daemon reconciles, and the VM starts again.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { daemonPid } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";

interface Shown {
  id: string;
  state: string;
  pid: number | null;
}

describe("the daemon under faults (QEMU)", { skip: e2eSkipReason() }, () => {
  let env: E2eEnv;
  before(() => {
    env = createE2eEnv({ name: "faults" });
  });
  after(async () => {
    await env?.dispose();
  });

  const show = async (name: string): Promise<Shown> => {
    const result = await env.banger(["vm", "show", name, "--json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as Shown;
  };

  async function killDaemon(): Promise<void> {
    const pid = daemonPid(env.home)!;
    process.kill(pid, "SIGKILL");
    while (isRunning(pid)) await sleep(20);
  }

  it("descriptor exhaustion refuses connections for a while, touches no VM, and the daemon answers after", async () => {
    const create = await env.banger(["vm", "create", "web"]);
    assert.equal(create.code, 0, create.stderr);
    const before = await show("web");
    const daemon = daemonPid(env.home)!;
    const open = readdirSync(`/proc/${daemon}/fd`).length;
    const soft = readFileSync(`/proc/${daemon}/limits`, "utf8").match(/^Max open files\s+(\d+)/m)![1];
    // The soft limit a few descriptors above what the daemon holds: new connections and /proc reads run out.
    // (Only the soft limit: raising a hard limit back may need more than root has here.)
    execFileSync("prlimit", ["--pid", String(daemon), `--nofile=${open + 4}:`]);
    const flood: Socket[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const socket = connect(join(env.home, "run", "bangerd.sock"));
        socket.on("error", () => {});
        flood.push(socket);
      }
      // Several reaper passes run out of descriptors meanwhile.
      await sleep(3000);
      assert.ok(isRunning(daemon), "the daemon survived");
    } finally {
      for (const socket of flood) socket.destroy();
      execFileSync("prlimit", ["--pid", String(daemon), `--nofile=${soft}:`]);
    }
    const ping = await env.banger(["ping"]);
    assert.equal(ping.code, 0, ping.stderr);
    assert.equal(daemonPid(env.home), daemon, "the same daemon answers");
    const afterwards = await show("web");
    assert.equal(afterwards.state, "running");
    assert.equal(afterwards.pid, before.pid, "the VM was not touched");
    const log = readFileSync(join(env.home, "state", "bangerd.log"), "utf8");
    assert.doesNotMatch(log, /exited unexpectedly/);
  });

  it("a daemon killed between spawning QEMU and recording it leaves no QEMU once reconciled", async () => {
    assert.equal((await env.banger(["vm", "stop", "web"])).code, 0);
    const vm = await show("web");
    const logFile = join(env.home, "state", "bangerd.log");
    const mark = readFileSync(logFile, "utf8").length;
    const starting = env.banger(["vm", "start", "web"]);
    // Killed as soon as QEMU exists, before QMP answers and handles.json gets its pid.
    while (!readFileSync(logFile, "utf8").slice(mark).includes('"QEMU started"')) await sleep(5);
    await killDaemon();
    assert.notEqual((await starting).code, 0, "the CLI saw the start fail");
    assert.ok(env.qemuPids().length > 0, "QEMU outlived its daemon");

    const listed = await env.banger(["vm", "ls", "--json"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(env.qemuPids(), [], "reconcile killed the unrecorded QEMU");
    assert.equal((await show("web")).state, "stopped");
    const started = await env.banger(["vm", "start", "web"]);
    assert.equal(started.code, 0, started.stderr);
    assert.equal((await show("web")).id, vm.id);
  });

  for (const damage of ["torn", "missing"] as const) {
    it(`a ${damage} handles.json with a live QEMU ends with no QEMU and a startable VM`, async () => {
      const vm = await show("web");
      if (vm.state !== "running") assert.equal((await env.banger(["vm", "start", "web"])).code, 0);
      await killDaemon();
      const handles = join(env.home, "state", "vms", vm.id, "handles.json");
      if (damage === "torn") writeFileSync(handles, '{"pid": 4');
      else execFileSync("rm", ["-f", handles]);
      assert.ok(env.qemuPids().length > 0);

      const listed = await env.banger(["vm", "ls", "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.deepEqual(env.qemuPids(), []);
      assert.equal((await show("web")).state, "stopped");
      const started = await env.banger(["vm", "start", "web"]);
      assert.equal(started.code, 0, started.stderr);
    });
  }

  it("vm delete leaves no QEMU behind", async () => {
    const deleted = await env.banger(["vm", "delete", "--force", "web"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.vmDirs(), []);
  });
});

function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
