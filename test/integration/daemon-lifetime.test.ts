/**
 * The daemon's lifetime stack, in-process with real parts (SQLite, the
 * socket, the reaper's timer) and recording host features registered in
 * place of capabilities.ts: a start that fails half-way undoes everything
 * it made, in reverse; stop disposes everything once, in reverse. "Nothing
 * left" means no socket, no pid file, no open descriptor on the database
 * and no timer left behind. The log file is the one descriptor that stays
 * open for the life of the process, so late lines are never lost.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { Capabilities, HostFeature } from "../../src/daemon/compose/capabilities.ts";
import { startDaemon } from "../../src/daemon/compose/index.ts";
import { ErrorCode, isBangerError } from "../../src/protocol/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const homes: Array<{ cleanup(): void }> = [];
after(() => {
  for (const home of homes) home.cleanup();
});

function newHome(configToml?: string): string {
  const home = makeTempDir("bgl-");
  homes.push(home);
  if (configToml) {
    mkdirSync(join(home.path, "config"), { recursive: true });
    writeFileSync(join(home.path, "config", "config.toml"), configToml);
  }
  return home.path;
}

/** Host features that record ensure and teardown; `failing` throws from its ensure. */
function recordingFeatures(names: string[], failing?: string) {
  const events: string[] = [];
  const features: HostFeature[] = names.map((name) => ({
    name,
    async ensure(signal) {
      events.push(`ensure ${name}`);
      assert.equal(signal.aborted, false);
      if (name === failing) throw new Error(`${name} cannot start`);
    },
    async teardown() {
      events.push(`teardown ${name}`);
    },
  }));
  const register = (): Capabilities => ({ hostFeatures: features, vmHooks: [], imageSources: [] });
  return { events, register };
}

const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;

/** Paths under `home` this process still holds open, except the daemon log. */
function openUnder(home: string): string[] {
  const open: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(home) && !target.endsWith("bangerd.log")) open.push(target);
    } catch {
      // The descriptor readdir itself used, gone by now.
    }
  }
  return open;
}

function assertNothingLeft(home: string, timersBefore: number): void {
  assert.equal(existsSync(join(home, "run", "bangerd.sock")), false, "socket removed");
  assert.equal(existsSync(join(home, "run", "bangerd.pid")), false, "pid file removed");
  assert.deepEqual(openUnder(home), [], "no descriptor left open under BANGER_HOME");
  assert.equal(timers(), timersBefore, "no timer left running (the reaper is stopped)");
}

describe("daemon lifetime", () => {
  it("a host feature that fails at start undoes itself and the features before it, in reverse", async () => {
    const home = newHome();
    const timersBefore = timers();
    const { events, register } = recordingFeatures(["nat", "dns", "broken"], "broken");
    await assert.rejects(
      startDaemon({ env: { BANGER_HOME: home }, logToStderr: false, registerCapabilities: register }),
      /broken cannot start/,
    );
    assert.deepEqual(events, [
      "ensure nat",
      "ensure dns",
      "ensure broken",
      "teardown broken",
      "teardown dns",
      "teardown nat",
    ]);
    assertNothingLeft(home, timersBefore);
  });

  it("a failure after the reaper and the features are up unwinds all of it", async () => {
    const home = newHome('[daemon]\nsocket_group = "no-such-group-banger-test"\n');
    const timersBefore = timers();
    const { events, register } = recordingFeatures(["nat", "dns"]);
    await assert.rejects(
      startDaemon({ env: { BANGER_HOME: home }, logToStderr: false, registerCapabilities: register }),
      (error) =>
        isBangerError(error) && error.code === ErrorCode.CONFIG_INVALID && /socket_group/.test(error.message),
    );
    assert.deepEqual(events, ["ensure nat", "ensure dns", "teardown dns", "teardown nat"]);
    assertNothingLeft(home, timersBefore);
    // Nothing left means a new daemon starts on the same state.
    const daemon = await startDaemon({ env: { BANGER_HOME: newHome() }, logToStderr: false });
    await daemon.stop("test");
  });

  it("stop disposes everything once, in reverse order, however often it is called", async () => {
    const home = newHome();
    const timersBefore = timers();
    const { events, register } = recordingFeatures(["nat", "dns"]);
    const daemon = await startDaemon({
      env: { BANGER_HOME: home },
      logToStderr: false,
      registerCapabilities: register,
    });
    assert.equal(existsSync(join(home, "run", "bangerd.sock")), true);
    assert.equal(existsSync(join(home, "run", "bangerd.pid")), true);
    assert.ok(timers() > timersBefore, "the reaper runs");
    assert.deepEqual(events, ["ensure nat", "ensure dns"]);
    const first = daemon.stop("test");
    const second = daemon.stop("again");
    await Promise.all([first, second, daemon.stopped]);
    await daemon.stop("after stopped");
    assert.deepEqual(events, ["ensure nat", "ensure dns", "teardown dns", "teardown nat"]);
    assertNothingLeft(home, timersBefore);
  });
});
