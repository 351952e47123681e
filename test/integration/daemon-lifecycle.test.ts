import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { daemonPid, repoRoot, runBanger, stopDaemon } from "../helpers/cli.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const homes: string[] = [];
function newHome() {
  const dir = makeTempDir("bgd-");
  homes.push(dir.path);
  return dir.path;
}

after(async () => {
  for (const home of homes) await stopDaemon(home);
  const { rmSync } = await import("node:fs");
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

describe("daemon lifecycle through the CLI", () => {
  it("autostarts on first use, answers ping, and stops", async () => {
    const home = newHome();
    const ping = await runBanger(["ping"], { home });
    assert.equal(ping.code, 0, ping.stderr);
    assert.match(ping.stdout, /pong/);
    const pid = daemonPid(home);
    assert.ok(pid && pid > 0);
    const socket = join(home, "run", "bangerd.sock");
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const status = await runBanger(["daemon", "status", "--json"], { home });
    assert.equal(JSON.parse(status.stdout).pid, pid);
    const stop = await runBanger(["daemon", "stop"], { home });
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(existsSync(socket), false, "socket removed on stop");
    const after = await runBanger(["daemon", "status"], { home });
    assert.equal(after.code, 10);
    assert.match(after.stdout, /not running/);
  });

  it("with --no-autostart or BANGER_NO_AUTOSTART=1 it refuses with a hint instead", async () => {
    const home = newHome();
    const flag = await runBanger(["--no-autostart", "ping"], { home });
    assert.equal(flag.code, 10);
    assert.match(flag.stderr, /not running/);
    assert.match(flag.stderr, /hint:/);
    const env = await runBanger(["ping"], { home, env: { BANGER_NO_AUTOSTART: "1" } });
    assert.equal(env.code, 10);
    assert.equal(daemonPid(home), undefined);
  });

  it("replaces a dead socket whose daemon is gone", async () => {
    const home = newHome();
    mkdirSync(join(home, "run"), { recursive: true });
    const socket = join(home, "run", "bangerd.sock");
    // A socket file nobody listens on: a child listens, then dies without unlinking it.
    const child = spawn(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(socket)}, () => process.stdout.write("up"))`,
    ]);
    await new Promise((resolve) => child.stdout.once("data", resolve));
    writeFileSync(join(home, "run", "bangerd.pid"), `${child.pid}\n`);
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    assert.ok(existsSync(socket), "a stale socket file is left behind");
    const ping = await runBanger(["ping"], { home });
    assert.equal(ping.code, 0, ping.stderr);
    assert.notEqual(daemonPid(home), child.pid);
  });

  it("restarts an idle daemon that speaks another protocol", async () => {
    const home = newHome();
    mkdirSync(join(home, "run"), { recursive: true });
    const old = spawn(join(repoRoot, "node_modules/node/bin/node"), [
      join(repoRoot, "test/fixtures/old-daemon.ts"),
      join(home, "run", "bangerd.sock"),
      join(home, "run", "bangerd.pid"),
      "0",
    ]);
    await new Promise((resolve) => old.stdout.once("data", resolve));
    const exited = new Promise((resolve) => old.once("exit", resolve));
    const ping = await runBanger(["ping"], { home });
    assert.equal(ping.code, 0, ping.stderr);
    await exited;
    assert.notEqual(daemonPid(home), old.pid);
  });

  it("refuses, with a hint, to restart a mismatched daemon that has running VMs", async () => {
    const home = newHome();
    mkdirSync(join(home, "run"), { recursive: true });
    const old = spawn(join(repoRoot, "node_modules/node/bin/node"), [
      join(repoRoot, "test/fixtures/old-daemon.ts"),
      join(home, "run", "bangerd.sock"),
      join(home, "run", "bangerd.pid"),
      "2",
    ]);
    await new Promise((resolve) => old.stdout.once("data", resolve));
    try {
      const ping = await runBanger(["ping"], { home });
      assert.equal(ping.code, 3);
      assert.match(ping.stderr, /protocol 0/);
      assert.match(ping.stderr, /2 running VMs/);
    } finally {
      old.kill("SIGKILL");
    }
  });

  it("refuses to start with a bad config, naming the key and the file", async () => {
    const home = newHome();
    mkdirSync(join(home, "config"), { recursive: true });
    writeFileSync(join(home, "config", "config.toml"), "[vm]\ncpus = 0\n");
    const bad = await runBanger(["ping"], { home });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /config\.toml: vm\.cpus/);
    writeFileSync(join(home, "config", "config.toml"), "[vm]\ncolour = 'red'\n");
    const unknown = await runBanger(["ping"], { home });
    assert.match(unknown.stderr, /vm\.colour: unknown key/);
  });

  it("doctor lists checks with a status each, as JSON too", async () => {
    const home = newHome();
    const doctor = await runBanger(["doctor", "--json"], { home });
    const { checks } = JSON.parse(doctor.stdout) as { checks: { name: string; status: string }[] };
    const names = checks.map((check) => check.name);
    for (const name of [
      "node",
      "privileges",
      "kvm",
      "qemu-img",
      "ip",
      "mkfs.ext4",
      "disk",
      "socket-dir",
      "firecracker",
      "cow-strategy",
      "accelerator",
      "image-blob-cache",
      "oci-tools",
      "setfattr",
      "buildah",
    ]) {
      assert.ok(names.includes(name), `doctor has a ${name} check`);
    }
    assert.equal(names.filter((name) => name === "firecracker").length, 1);
    assert.ok(checks.every((check) => ["ok", "warn", "fail"].includes(check.status)));
  });

  it("doctor names the Firecracker version and capabilities, and why a COW strategy was chosen", async () => {
    const home = newHome();
    const double = join(repoRoot, "test", "doubles", "firecracker", "firecracker");
    mkdirSync(join(home, "config"), { recursive: true });
    writeFileSync(
      join(home, "config", "config.toml"),
      `[vmm]\nfirecracker_binary = ${JSON.stringify(double)}\n`,
    );
    const doctor = await runBanger(["doctor", "--json"], { home });
    const { checks } = JSON.parse(doctor.stdout) as {
      checks: { name: string; status: string; detail: string }[];
    };
    const firecracker = checks.find((check) => check.name === "firecracker");
    assert.equal(firecracker?.status, "ok");
    assert.match(
      firecracker?.detail ?? "",
      /is Firecracker v1\.16\.1 \(acpi, pvh, pci, serialEndpoint, vsockOverride\)/,
    );
    const cow = checks.find((check) => check.name === "cow-strategy");
    assert.match(cow?.detail ?? "", /^raw root disks use (reflink|dm-snapshot|sparse-copy): /);
  });
});
