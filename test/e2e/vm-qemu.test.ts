/**
 * The main job on real guests under QEMU (TCG here): run, exec with streams
 * and exit codes, stop/start keeping the disk, kill, two VMs that reach each
 * other, ssh through the daemon, delete, and nothing left behind.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { bangerBin } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason, IMAGE_CACHE } from "../helpers/e2e.ts";

const skip = e2eSkipReason();

describe("VMs on real guests (QEMU)", { skip }, () => {
  let env: E2eEnv;
  before(() => {
    env = createE2eEnv({ name: "qemu" });
  });
  after(async () => {
    await env?.dispose();
  });

  it("vm run --rm runs a command in a fresh guest and leaves nothing behind", async () => {
    const run = await env.banger(["vm", "run", "--rm", "--", "uname", "-a"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^Linux vm-[0-9a-f]{6} .*x86_64 GNU\/Linux$/m);
    const list = await env.banger(["vm", "ls", "--json"]);
    assert.deepEqual(JSON.parse(list.stdout), []);
    assert.deepEqual(env.taps(), []);
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.vmDirs(), []);
  });

  it("creates a VM and propagates exit codes, stdout, stderr and stdin", async () => {
    const created = await env.banger(["vm", "create", "alpha", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const info = JSON.parse(created.stdout);
    assert.equal(info.state, "running");
    assert.ok(existsSync(join(info.dir, "root.qcow2")));

    const failing = await env.banger([
      "vm",
      "run",
      "--name",
      "alpha",
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 7",
    ]);
    assert.equal(failing.code, 7);
    assert.equal(failing.stdout, "out\n");
    assert.match(failing.stderr, /^err$/m);

    const piped = await env.banger(["vm", "run", "--name", "alpha", "--", "sh", "-c", "tr a-z A-Z"], {
      input: "hello guest\n",
    });
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout, "HELLO GUEST\n");

    const args = await env.banger([
      "vm",
      "run",
      "--name",
      "alpha",
      "--",
      "printf",
      "%s|",
      "a b",
      "$HOME",
      "'q'",
      "",
    ]);
    assert.equal(args.stdout, "a b|$HOME|'q'||");
  });

  it("streams 10 MB of output intact", async () => {
    const big = await env.banger([
      "vm",
      "run",
      "--name",
      "alpha",
      "--",
      "sh",
      "-c",
      "head -c 10485760 /dev/zero | tr '\\0' 'x'",
    ]);
    assert.equal(big.code, 0, big.stderr);
    assert.equal(big.stdout.length, 10 * 1024 * 1024);
    const expected = createHash("sha256")
      .update("x".repeat(10 * 1024 * 1024))
      .digest("hex");
    assert.equal(createHash("sha256").update(big.stdout).digest("hex"), expected);
  });

  it("keeps disk contents across stop and start", async () => {
    const write = await env.banger([
      "vm",
      "run",
      "--name",
      "alpha",
      "--",
      "sh",
      "-c",
      "echo persisted > /root/marker && sync",
    ]);
    assert.equal(write.code, 0, write.stderr);
    const stop = await env.banger(["vm", "stop", "alpha"]);
    assert.equal(stop.code, 0, stop.stderr);
    const shown = JSON.parse((await env.banger(["vm", "show", "alpha", "--json"])).stdout);
    assert.equal(shown.state, "stopped");
    assert.equal(shown.pid, null);
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.taps(), []);
    const start = await env.banger(["vm", "start", "alpha"]);
    assert.equal(start.code, 0, start.stderr);
    const read = await env.banger(["vm", "run", "--name", "alpha", "--", "cat", "/root/marker"]);
    assert.equal(read.stdout, "persisted\n");
  });

  it("runs two VMs at once that reach each other", async () => {
    const created = await env.banger(["vm", "create", "beta", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const beta = JSON.parse(created.stdout);
    const probe = await env.banger([
      "vm",
      "run",
      "--name",
      "alpha",
      "--",
      "bash",
      "-c",
      `exec 3<>/dev/tcp/${beta.guestIp}/22 && head -c 4 <&3`,
    ]);
    assert.equal(probe.code, 0, probe.stderr);
    assert.equal(probe.stdout, "SSH-");
    assert.equal(env.taps().length, 2);
  });

  it("opens ssh through the daemon with the pinned host key", async () => {
    const ssh = await env.banger(["vm", "ssh", "beta", "--", "hostname"]);
    assert.equal(ssh.code, 0, ssh.stderr);
    assert.equal(ssh.stdout.trim(), "beta");
  });

  it("kill stops a VM at once; delete removes overlay, tap and process", async () => {
    const kill = await env.banger(["vm", "kill", "beta"]);
    assert.equal(kill.code, 0, kill.stderr);
    const shown = JSON.parse((await env.banger(["vm", "show", "beta", "--json"])).stdout);
    assert.equal(shown.state, "stopped");
    assert.equal(env.taps().length, 1);

    const del = await env.banger(["vm", "delete", "alpha", "beta"]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(JSON.parse((await env.banger(["vm", "ls", "--json"])).stdout), []);
    assert.deepEqual(env.taps(), []);
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.vmDirs(), []);
  });

  it("vm run --rm deletes the VM when interrupted with Ctrl-C", async () => {
    const child = spawn(bangerBin, ["vm", "run", "--rm", "--name", "ctrlc", "--", "sleep", "120"], {
      env: {
        ...process.env,
        BANGER_HOME: env.home,
        BANGER_NETNS: env.netns,
        BANGER_IMAGE_CACHE: IMAGE_CACHE,
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    for (let i = 0; i < 600; i++) {
      const shown = await env.banger(["vm", "show", "ctrlc", "--json"]);
      if (shown.code === 0 && JSON.parse(shown.stdout).state === "running") break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    child.kill("SIGINT");
    assert.equal(await exited, 130);
    const shown = await env.banger(["vm", "show", "ctrlc"]);
    assert.equal(shown.code, 4, "the VM is gone");
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.taps(), []);
  });

  it("answers errors with their code and a hint, and keeps serving", async () => {
    const missing = await env.banger(["vm", "stop", "nope"]);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /no VM named 'nope'/);
    assert.match(missing.stderr, /hint:/);
    const bad = await env.banger(["vm", "create", "Bad_Name"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /DNS label/);
    const ping = await env.banger(["ping"]);
    assert.equal(ping.code, 0);
  });
});
