/**
 * `vm.suspend_after_idle`: the setting's parsing, the activity marks, and
 * the periodic pass over fake VMs: only a running VM with no exec in
 * flight, no exec event and no tap byte for the idle time is suspended; a
 * VM whose counters cannot be read, whose lock is held, or that is not
 * running is left alone; a failed suspend is logged and the wait starts over.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultConfig, parseConfig } from "../../src/core/config/index.ts";
import { parseDurationMs } from "../../src/core/units.ts";
import { idleSuspendMs, observeActivity, tapNameForVmId } from "../../src/core/vm/index.ts";
import { createIdleSuspender } from "../../src/daemon/idle-suspend.ts";
import type { VmInfo } from "../../src/protocol/index.ts";
import { fakeVmInfo } from "../fakes/cli.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";

describe("suspend_after_idle setting and marks", () => {
  it("reads off and durations, and refuses anything else naming the key", () => {
    assert.equal(defaultConfig().vm.suspend_after_idle, "off");
    assert.equal(idleSuspendMs("off"), undefined);
    assert.equal(idleSuspendMs("10m"), 600_000);
    assert.equal(idleSuspendMs("90"), 90_000);
    assert.equal(parseDurationMs("0s"), undefined);
    assert.equal(parseDurationMs("soon"), undefined);
    assert.equal(parseConfig('[vm]\nsuspend_after_idle = "30s"\n', "c.toml").vm.suspend_after_idle, "30s");
    assert.throws(() => parseConfig('[vm]\nsuspend_after_idle = "later"\n', "c.toml"), /suspend_after_idle/);
  });

  it("keeps `since` while the signature stays, and moves it when the signature changes", () => {
    const first = observeActivity(undefined, "1:100", 1000);
    assert.deepEqual(first, { signature: "1:100", since: 1000 });
    assert.equal(observeActivity(first, "1:100", 5000), first);
    assert.deepEqual(observeActivity(first, "1:164", 5000), { signature: "1:164", since: 5000 });
  });
});

describe("the idle-suspend pass", () => {
  function setup(vms: VmInfo[]) {
    let now = 0;
    const bytes = new Map<string, number | undefined>(vms.map((vm) => [tapNameForVmId(vm.id), 100]));
    const execs = new Map<string, { events: number; inFlight: number }>();
    const busy = new Set<string>();
    const failing = new Set<string>();
    const suspended: string[] = [];
    const logger = createMemoryLogger();
    const pass = createIdleSuspender({
      idleMs: 60_000,
      listVms: async () => vms,
      execActivity: (id) => execs.get(id) ?? { events: 0, inFlight: 0 },
      tapBytes: async (tap) => bytes.get(tap),
      isBusy: (id) => busy.has(id),
      suspend: async (name) => {
        if (failing.has(name)) throw new Error("the VMM did not answer");
        suspended.push(name);
      },
      now: () => now,
      logger,
    });
    return {
      pass,
      bytes,
      execs,
      busy,
      failing,
      suspended,
      logger,
      at: (ms: number) => {
        now = ms;
      },
    };
  }
  const vm = (name: string, id: string, state: VmInfo["state"] = "running") =>
    fakeVmInfo({ name, id, state });

  it("suspends only the VM that stayed idle for the whole time", async () => {
    const quiet = vm("quiet", "q000000000000001");
    const chatty = vm("chatty", "c000000000000002");
    const working = vm("working", "w000000000000003");
    const unknown = vm("unknown", "u000000000000004");
    const stopped = vm("stopped", "s000000000000005", "stopped");
    const w = setup([quiet, chatty, working, unknown, stopped]);
    w.bytes.set(tapNameForVmId(unknown.id), undefined);
    w.at(0);
    assert.deepEqual(await w.pass(), []);
    w.at(30_000);
    w.bytes.set(tapNameForVmId(chatty.id), 5000);
    w.execs.set(working.id, { events: 1, inFlight: 1 });
    assert.deepEqual(await w.pass(), []);
    w.at(61_000);
    assert.deepEqual(await w.pass(), ["quiet"], "60 s without activity, and only it");
    w.at(95_000);
    assert.deepEqual(await w.pass(), ["chatty"], "idle 60 s after its last traffic");
    assert.deepEqual(w.suspended, ["quiet", "chatty"]);
  });

  it("skips a VM whose lock is held, and logs a failed suspend and waits again", async () => {
    const locked = vm("locked", "l000000000000001");
    const broken = vm("broken", "b000000000000002");
    const w = setup([locked, broken]);
    w.busy.add(locked.id);
    w.failing.add("broken");
    w.at(0);
    await w.pass();
    w.at(70_000);
    assert.deepEqual(await w.pass(), []);
    assert.ok(w.logger.lines.some((line) => line.level === "warn" && line.fields.vm === "broken"));
    w.busy.delete(locked.id);
    w.failing.delete("broken");
    w.at(80_000);
    assert.deepEqual(await w.pass(), ["locked"], "the lock freed, its idle time still counts");
    w.at(139_000);
    assert.deepEqual(await w.pass(), [], "the failed one waits a whole idle time again");
    w.at(141_000);
    assert.deepEqual(await w.pass(), ["broken"]);
  });
});
