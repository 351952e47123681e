/**
 * One daemon per home: the flock taken before anything else, concurrent
 * autostarts, and pid files that name a zombie or another program.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { daemonPid, repoRoot, runBanger, stopDaemon } from "../helpers/cli.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const homes: string[] = [];
function newHome() {
  const dir = makeTempDir("bgl-");
  homes.push(dir.path);
  return dir.path;
}

after(async () => {
  for (const home of homes) await stopDaemon(home);
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

/** Leaves a socket file nobody listens on (its listener was killed). */
async function plantStaleSocket(home: string): Promise<void> {
  mkdirSync(join(home, "run"), { recursive: true });
  const socket = join(home, "run", "bangerd.sock");
  const child = spawn(process.execPath, [
    "-e",
    `require("net").createServer().listen(${JSON.stringify(socket)}, () => process.stdout.write("up"))`,
  ]);
  await new Promise((resolve) => child.stdout.once("data", resolve));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  assert.ok(existsSync(socket));
}

function runDaemonDirectly(home: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(join(repoRoot, "bin", "bangerd"), [], {
      env: { ...process.env, BANGER_HOME: home },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

describe("one daemon per home", () => {
  it("8 concurrent autostarts end with exactly one daemon, and every CLI reaches it", async () => {
    const home = newHome();
    const pings = await Promise.all(Array.from({ length: 8 }, () => runBanger(["ping"], { home })));
    for (const ping of pings) assert.equal(ping.code, 0, ping.stderr);
    const log = readFileSync(join(home, "state", "bangerd.log"), "utf8");
    assert.equal(log.split("\n").filter((line) => line.includes('"daemon started"')).length, 1);
    const status = await runBanger(["daemon", "status", "--json"], { home });
    assert.equal(JSON.parse(status.stdout).pid, daemonPid(home));
  });

  it("a second bangerd exits at once naming the first, and leaves its socket and pid file alone", async () => {
    const home = newHome();
    assert.equal((await runBanger(["ping"], { home })).code, 0);
    const pid = daemonPid(home);
    const second = await runDaemonDirectly(home);
    assert.equal(second.code, 13);
    assert.match(second.stderr, new RegExp(`already running \\(pid ${pid}\\)`));
    assert.equal(second.stderr.trim().split("\n").length, 2, second.stderr);
    assert.equal(daemonPid(home), pid);
    const ping = await runBanger(["--no-autostart", "ping"], { home });
    assert.equal(ping.code, 0, ping.stderr);
  });

  it("autostarts although the pid file names a zombie (a dead daemon nobody reaped)", async () => {
    const home = newHome();
    await plantStaleSocket(home);
    // sh forks a short sleep and then execs a long one, which never reaps it: a zombie once the
    // short one ends (it still runs when sh execs, so sh cannot have reaped it first).
    const parent = spawn("sh", ["-c", "sleep 0.3 & echo $!; exec sleep 60"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    const zombie = Number.parseInt(
      await new Promise<string>((resolve) => parent.stdout.once("data", (data) => resolve(String(data)))),
      10,
    );
    try {
      while (!readFileSync(`/proc/${zombie}/stat`, "utf8").includes(") Z "))
        await new Promise((resolve) => setTimeout(resolve, 10));
      writeFileSync(join(home, "run", "bangerd.pid"), `${zombie}\n`);
      const ping = await runBanger(["ping"], { home });
      assert.equal(ping.code, 0, ping.stderr);
      assert.notEqual(daemonPid(home), zombie);
    } finally {
      parent.kill("SIGKILL");
    }
  });

  it("autostarts although the pid file names another live program (a reused pid)", async () => {
    const home = newHome();
    await plantStaleSocket(home);
    const foreign = spawn("sleep", ["60"]);
    writeFileSync(join(home, "run", "bangerd.pid"), `${foreign.pid}\n`);
    try {
      const ping = await runBanger(["ping"], { home });
      assert.equal(ping.code, 0, ping.stderr);
      assert.notEqual(daemonPid(home), foreign.pid);
    } finally {
      foreign.kill("SIGKILL");
    }
  });
});

describe("startup errors end the daemon with one clear line the CLI shows", () => {
  it("a damaged database", async () => {
    const home = newHome();
    mkdirSync(join(home, "state"), { recursive: true });
    writeFileSync(join(home, "state", "banger.db"), Buffer.alloc(8192, 0x5a));
    const ping = await runBanger(["ping"], { home });
    assert.equal(ping.code, 10);
    assert.match(ping.stderr, /bangerd exited with status 14/);
    assert.match(ping.stderr, /bangerd: cannot use the state database .*banger\.db: file is not a database/);
    assert.match(ping.stderr, /hint: if it is damaged, move it aside/);
    const log = readFileSync(join(home, "state", "bangerd.log"), "utf8");
    assert.doesNotMatch(log, /sonic boom|at openStore/);
  });

  it("a database from a newer banger", async () => {
    const home = newHome();
    mkdirSync(join(home, "state"), { recursive: true });
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(join(home, "state", "banger.db"));
    db.exec("PRAGMA user_version = 99");
    db.close();
    const ping = await runBanger(["ping"], { home });
    assert.equal(ping.code, 10);
    assert.match(ping.stderr, /schema version 99, newer than this banger/);
  });
});
