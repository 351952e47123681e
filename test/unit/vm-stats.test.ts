import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  createVmStats,
  type GuestExec,
  type VmRuntime,
  type VmStatsDeps,
} from "../../src/daemon/vm/index.ts";
import { BangerError, ErrorCode, type VmInfo, type VmState } from "../../src/protocol/index.ts";

const GUEST_OUTPUT =
  "@uptime\n42.5 80.0\n@meminfo\nMemTotal: 1000 kB\nMemAvailable: 600 kB\n@df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 2000 500 1500 25% /\n";

function info(state: VmState): VmInfo {
  return {
    id: "abc123",
    name: "web",
    state,
    image: "debian",
    vmm: "qemu",
    cpus: 1,
    memoryMib: 512,
    diskGib: 2,
    guestIp: "10.0.0.2",
    mac: "02:00:00:00:00:01",
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
    lastError: null,
    dir: "/state/vms/abc123",
    pid: state === "running" ? 4242 : null,
  };
}

type ExecBehaviour = (exec: GuestExec) => Promise<{ exitCode: number | null; signal: string | null }>;

interface Fixture {
  state?: VmState;
  alive?: boolean;
  exec?: ExecBehaviour;
  banner?: { ok: true } | { ok: false; error: string };
  disk?: { allocatedBytes: number; apparentBytes: number } | undefined;
}

function setup(fixture: Fixture = {}) {
  const state = fixture.state ?? "running";
  const alive = fixture.alive ?? state === "running";
  const calls = { exec: [] as string[][], usage: 0, banner: 0 };
  const cpu = [10, 10.125];
  const clock = [1000, 1250];
  const runtime: VmRuntime = {
    info: info(state),
    alive,
    pid: alive ? 4242 : null,
    diskFile: "/state/vms/abc123/root.qcow2",
  };
  const deps: VmStatsDeps = {
    vms: {
      runtime: async (name) => {
        if (name !== "web") throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${name}'`);
        return runtime;
      },
      exec: async (_name, exec) => {
        calls.exec.push([...exec.argv]);
        return (
          fixture.exec ??
          (async (e) => {
            await e.onStdout?.(Buffer.from(e.argv[0] === "true" ? "" : GUEST_OUTPUT));
            return { exitCode: 0, signal: null };
          })
        )(exec);
      },
    },
    processUsage: async (pid) => {
      assert.equal(pid, 4242);
      calls.usage += 1;
      return { cpuSeconds: cpu.shift() ?? 99, rssBytes: 300 * 1024 * 1024 };
    },
    diskUsage: async () =>
      "disk" in fixture ? fixture.disk : { allocatedBytes: 1_048_576, apparentBytes: 2 * 1024 ** 3 },
    probeBanner: async () => {
      calls.banner += 1;
      return fixture.banner ?? { ok: true };
    },
    now: () => new Date("2026-01-02T03:04:05.000Z"),
    monotonicMs: () => clock.shift() ?? 2000,
    sleep: async () => undefined,
    guestTimeoutMs: 50,
  };
  return { stats: createVmStats(deps), calls };
}

/** A guest that never answers but stops when its signal aborts, like the real ssh exec. */
const hungGuest: ExecBehaviour = (exec) =>
  new Promise((_resolve, reject) => {
    exec.signal?.addEventListener("abort", () => reject(new BangerError(ErrorCode.CANCELLED, "cancelled")), {
      once: true,
    });
  });

/** A guest exec that ignores its signal altogether. */
const deafGuest: ExecBehaviour = () => new Promise(() => undefined);

const signal = () => new AbortController().signal;

describe("vm stats", () => {
  it("reports VMM, disk and guest numbers for a running VM", async () => {
    const { stats, calls } = setup();
    const result = await stats.stats("web", signal());
    assert.deepEqual(result, {
      name: "web",
      state: "running",
      sampledAt: "2026-01-02T03:04:05.000Z",
      vmm: { pid: 4242, cpuPercent: 50, sampleMs: 250, rssBytes: 300 * 1024 * 1024 },
      vmmUnavailable: null,
      disk: { path: "/state/vms/abc123/root.qcow2", allocatedBytes: 1_048_576, apparentBytes: 2 * 1024 ** 3 },
      diskUnavailable: null,
      guest: {
        uptimeSeconds: 42.5,
        memoryTotalBytes: 1024000,
        memoryAvailableBytes: 614400,
        rootfsSizeBytes: 2048000,
        rootfsUsedBytes: 512000,
        rootfsAvailableBytes: 1536000,
      },
      guestUnavailable: null,
    });
    assert.equal(calls.exec.length, 1, "one guest command for every guest number");
  });

  it("reports only disk bytes for a stopped VM, and says why the rest is missing", async () => {
    const { stats, calls } = setup({ state: "stopped" });
    const result = await stats.stats("web", signal());
    assert.equal(result.vmm, null);
    assert.equal(result.guest, null);
    assert.match(result.vmmUnavailable ?? "", /not running.*stopped/);
    assert.match(result.guestUnavailable ?? "", /not running/);
    assert.equal(result.disk?.allocatedBytes, 1_048_576);
    assert.equal(calls.usage, 0);
    assert.equal(calls.exec.length, 0);
  });

  it("gives a partial result when the guest does not answer", async () => {
    for (const exec of [hungGuest, deafGuest]) {
      const { stats } = setup({ exec });
      const result = await stats.stats("web", signal());
      assert.equal(result.vmm?.cpuPercent, 50);
      assert.equal(result.guest, null);
      assert.match(result.guestUnavailable ?? "", /did not answer through its agent: no answer within 50 ms/);
    }
  });

  it("says why when the guest answers with nothing usable", async () => {
    const { stats } = setup({
      exec: async (exec) => {
        await exec.onStderr?.(Buffer.from("Permission denied (publickey).\n"));
        return { exitCode: 255, signal: null };
      },
    });
    const result = await stats.stats("web", signal());
    assert.equal(result.guest, null);
    assert.match(result.guestUnavailable ?? "", /ssh exited 255 \(Permission denied/);
  });

  it("reports a missing disk file instead of failing", async () => {
    const { stats } = setup({ disk: undefined });
    const result = await stats.stats("web", signal());
    assert.equal(result.disk, null);
    assert.match(result.diskUnavailable ?? "", /does not exist/);
    assert.ok(result.guest);
  });

  it("passes VM_NOT_FOUND through and stops when the caller cancels", async () => {
    const { stats } = setup();
    await assert.rejects(stats.stats("nope", signal()), { code: ErrorCode.VM_NOT_FOUND });
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(setup({ exec: hungGuest }).stats.stats("web", controller.signal), {
      code: ErrorCode.CANCELLED,
    });
  });
});

describe("vm health", () => {
  it("is healthy when the VMM runs, `true` succeeds through the agent and sshd answers", async () => {
    const { stats, calls } = setup();
    const health = await stats.health("web", signal());
    assert.equal(health.healthy, true);
    assert.deepEqual(
      health.checks.map((check) => [check.name, check.ok]),
      [
        ["vmm", true],
        ["agent", true],
        ["ssh-banner", true],
      ],
    );
    assert.deepEqual(calls.exec, [["true"]]);
  });

  it("fails the vmm check of a stopped VM and does not touch the guest", async () => {
    const { stats, calls } = setup({ state: "stopped" });
    const health = await stats.health("web", signal());
    assert.equal(health.healthy, false);
    assert.equal(health.checks[0]?.name, "vmm");
    assert.equal(health.checks[0]?.ok, false);
    assert.ok(health.checks.slice(1).every((check) => !check.ok && check.detail.startsWith("not checked")));
    assert.equal(calls.banner, 0);
    assert.equal(calls.exec.length, 0);
  });

  it("names the banner when sshd does not answer; the agent check stands on its own", async () => {
    const { stats, calls } = setup({ banner: { ok: false, error: "ECONNREFUSED" } });
    const health = await stats.health("web", signal());
    assert.equal(health.healthy, false);
    const banner = health.checks.find((check) => check.name === "ssh-banner");
    assert.equal(banner?.ok, false);
    assert.match(banner?.detail ?? "", /ECONNREFUSED/);
    assert.equal(health.checks.find((check) => check.name === "agent")?.ok, true);
    assert.equal(calls.exec.length, 1);
  });

  it("fails the agent check when the command hangs or fails, without hanging itself", async () => {
    const hung = await setup({ exec: hungGuest }).stats.health("web", signal());
    assert.equal(hung.healthy, false);
    assert.match(hung.checks[1]?.detail ?? "", /no answer within/);

    const failing = await setup({
      exec: async () => ({ exitCode: 1, signal: null }),
    }).stats.health("web", signal());
    assert.equal(failing.checks[1]?.ok, false);
    assert.match(failing.checks[1]?.detail ?? "", /exited 1/);
  });
});
