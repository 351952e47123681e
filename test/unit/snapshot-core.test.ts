import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import {
  checkRestore,
  clockStep,
  defaultSnapshotName,
  forkNames,
  incomingLoaded,
  machineSignature,
  maskBootSpec,
  migrationProgress,
  parseManifest,
  planCloneIdentity,
  planQemuIncoming,
  planQemuSave,
  type RestoreTarget,
  SNAPSHOT_FORMAT,
  type SnapshotManifest,
} from "../../src/core/snapshot/index.ts";
import type { BootSpec } from "../../src/core/vmm/contract.ts";
import { planQemuArgv } from "../../src/core/vmm/index.ts";
import { BangerError, ErrorCode, exitStatusFor, SnapshotNameSchema } from "../../src/protocol/index.ts";

const signature = "a".repeat(64);

function manifest(overrides: Partial<SnapshotManifest> = {}): SnapshotManifest {
  return {
    format: SNAPSHOT_FORMAT,
    id: "0123456789abcdef",
    name: "warm",
    createdAt: "2026-11-30T22:00:00.000Z",
    source: { vmId: "vm1", vmName: "dev", guestIp: "10.77.0.2", mac: "52:54:00:00:00:01" },
    driver: "qemu",
    vmmVersion: null,
    accel: "tcg",
    machine: { cpus: 1, memoryMib: 512, signature },
    image: { id: "img", name: "debian-bookworm" },
    kernel: { file: "vmlinuz", sizeBytes: 1000 },
    disk: { file: "disk.qcow2", format: "qcow2", sizeBytes: 4 * 1024 ** 3 },
    stateBytes: 110_000_000,
    includesSecrets: false,
    ...overrides,
  };
}

function target(overrides: Partial<RestoreTarget> = {}): RestoreTarget {
  return {
    driver: "qemu",
    vmmVersion: null,
    accel: "tcg",
    cpus: 1,
    memoryMib: 512,
    signature,
    kernel: { file: "vmlinuz", sizeBytes: 1000 },
    ...overrides,
  };
}

function mismatch(run: () => void, pattern: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof BangerError);
    assert.equal(error.code, ErrorCode.SNAPSHOT_MISMATCH);
    assert.match(error.message, pattern);
    assert.ok(error.hint, "a mismatch carries a hint");
    return true;
  });
}

describe("snapshot manifest", () => {
  it("round-trips through JSON", () => {
    const saved = manifest();
    assert.deepEqual(parseManifest(JSON.stringify(saved), "/s/manifest.json"), saved);
  });

  it("refuses another format, a torn file and unknown fields, naming the file", () => {
    mismatch(() => parseManifest(JSON.stringify({ ...manifest(), format: 2 }), "/s/m.json"), /format 2/);
    mismatch(() => parseManifest("{", "/s/m.json"), /\/s\/m\.json is not JSON/);
    mismatch(() => parseManifest(JSON.stringify({ ...manifest(), extra: 1 }), "/s/m.json"), /not a valid/);
    mismatch(
      () =>
        parseManifest(JSON.stringify({ ...manifest(), disk: { ...manifest().disk, file: "../x" } }), "/m"),
      /disk\.file/,
    );
  });

  it("a restore passes only onto the same machine", () => {
    checkRestore(manifest(), target());
    mismatch(() => checkRestore(manifest(), target({ driver: "firecracker" })), /VMM qemu.*firecracker/);
    mismatch(() => checkRestore(manifest(), target({ cpus: 2 })), /vCPUs 1; this restore has 2/);
    mismatch(() => checkRestore(manifest(), target({ memoryMib: 1024 })), /memory \(MiB\) 512/);
    mismatch(() => checkRestore(manifest(), target({ accel: "kvm" })), /accelerator tcg/);
    mismatch(() => checkRestore(manifest(), target({ signature: "b".repeat(64) })), /device layout/);
    mismatch(() => checkRestore(manifest(), target({ kernel: undefined })), /no such image/);
    mismatch(() => checkRestore(manifest(), target({ kernel: { file: "vmlinuz", sizeBytes: 9 } })), /kernel/);
    const fc = manifest({ driver: "firecracker", vmmVersion: "1.16.1", accel: null });
    checkRestore(fc, target({ driver: "firecracker", vmmVersion: "1.16.1", accel: "kvm" }));
    mismatch(
      () => checkRestore(fc, target({ driver: "firecracker", vmmVersion: "1.17.0" })),
      /firecracker version 1\.16\.1/,
    );
  });

  it("the mismatch code has its own exit status and hint", () => {
    assert.equal(exitStatusFor.SNAPSHOT_MISMATCH, 6);
    assert.equal(exitStatusFor.SNAPSHOT_NOT_FOUND, 4);
    assert.match(new BangerError(ErrorCode.SNAPSHOT_SECRETS, "x").hint ?? "", /--include-secrets/);
  });
});

describe("machineSignature of a masked spec", () => {
  const spec = (vm: string, tap: string, mac: string, ip: string): BootSpec => ({
    vmId: `id-${vm}`,
    vmName: vm,
    cpus: 1,
    memoryMib: 512,
    kernel: "/img/abc/vmlinuz",
    initrd: `/h/vms/${vm}/initrd.img`,
    kernelCmdline: `console=ttyS0 ip=${ip}`,
    disk: { path: `/h/vms/${vm}/root.qcow2`, format: "qcow2" },
    tap,
    mac,
    consoleLog: `/h/vms/${vm}/console.log`,
    vmmLog: `/h/vms/${vm}/vmm.log`,
    vmDir: `/h/vms/${vm}`,
  });
  const argv = (s: BootSpec) => planQemuArgv({ spec: s, accel: "tcg", binary: "qemu-system-x86_64" });

  it("is equal for two VMs of one layout and differs when the layout does", () => {
    const a = machineSignature(argv(maskBootSpec(spec("a1", "bgr-1", "52:54:00:00:00:01", "10.77.0.2"))));
    const b = machineSignature(argv(maskBootSpec(spec("b22", "bgr-2", "52:54:00:00:00:02", "10.77.0.3"))));
    assert.equal(a, b);
    assert.match(a, /^[0-9a-f]{64}$/);
    const bigger = { ...spec("a1", "bgr-1", "m", "x"), memoryMib: 1024 };
    assert.notEqual(machineSignature(argv(maskBootSpec(bigger))), a);
    const otherDisk = {
      ...spec("a1", "bgr-1", "m", "x"),
      disk: { path: "/h/vms/a1/root.raw", format: "raw" as const },
    };
    assert.notEqual(machineSignature(argv(maskBootSpec(otherDisk))), a);
    const masked = maskBootSpec(spec("a1", "bgr-1", "m", "x"));
    assert.equal(masked.disk.path, "<vm-dir>/root.qcow2");
    assert.equal(masked.kernel, "<kernel>");
    assert.equal(masked.kernelCmdline, "<cmdline>");
  });
});

describe("snapshot names", () => {
  it("defaults to the VM and the UTC time, within a DNS label's length", () => {
    const now = new Date("2026-11-30T22:05:09.123Z");
    assert.equal(defaultSnapshotName("dev", now), "dev-20261130-220509");
    const long = defaultSnapshotName("x".repeat(63), now);
    assert.equal(long.length, 63);
    assert.ok(SnapshotNameSchema.safeParse(long).success);
  });

  it("fork names: NEW for one, NEW-1..N for more", () => {
    assert.deepEqual(forkNames("w", 1), ["w"]);
    assert.deepEqual(forkNames("w", 3), ["w-1", "w-2", "w-3"]);
  });
});

describe("QEMU save and restore plans", () => {
  it("saves over a Unix socket with the bandwidth cap lifted, restores from fd 3", () => {
    const calls = planQemuSave("/h/vms/a/migrate.sock");
    assert.deepEqual(
      calls.map((call) => call.execute),
      ["migrate-set-parameters", "migrate"],
    );
    assert.deepEqual(calls[1]?.arguments, { uri: "unix:/h/vms/a/migrate.sock" });
    assert.ok(Number(calls[0]?.arguments?.["max-bandwidth"]) >= 1024 ** 3);
    assert.deepEqual(planQemuIncoming(), ["-incoming", "fd:3"]);
  });

  it("reads query-migrate and query-status", () => {
    assert.deepEqual(migrationProgress({ status: "active" }), { done: false });
    assert.deepEqual(migrationProgress({ status: "setup" }), { done: false });
    assert.deepEqual(migrationProgress({ status: "completed", ram: { transferred: 42 } }), {
      done: true,
      ok: true,
      bytes: 42,
    });
    assert.deepEqual(migrationProgress({ status: "failed", "error-desc": "Broken pipe" }), {
      done: true,
      ok: false,
      reason: "Broken pipe",
    });
    assert.deepEqual(migrationProgress(null), { done: false });
    assert.equal(incomingLoaded("inmigrate"), false);
    assert.equal(incomingLoaded("paused"), true);
  });
});

describe("clone identity plan", () => {
  const identity = {
    hostname: "web-2",
    ip: "10.77.0.9",
    prefixLength: 24,
    gateway: "10.77.0.1",
    mac: "52:54:00:ab:cd:ef",
    machineId: "0123456789abcdef0123456789abcdef",
    seed: new Uint8Array(64).fill(7),
  };

  it("orders the steps so the network changes last, inputs as arguments only", () => {
    const steps = planCloneIdentity(identity);
    assert.deepEqual(
      steps.map((step) => step.name),
      ["machine-id", "rng", "hostname", "host-key", "network"],
    );
    const network = steps.at(-1)!;
    assert.deepEqual(network.argv.slice(-4), ["10.77.0.9/24", "52:54:00:ab:cd:ef", "10.77.0.1", "eth0"]);
    assert.deepEqual(steps[1]?.stdin, identity.seed);
    for (const step of steps) {
      for (const value of [identity.hostname, identity.ip, identity.mac, identity.machineId]) {
        const script = step.argv[2] ?? "";
        assert.ok(!script.includes(value), `${step.name}'s program text holds no input`);
      }
    }
  });

  it("every program parses under sh -n", () => {
    for (const step of planCloneIdentity(identity)) {
      if (step.argv[0] !== "sh") continue;
      const result = spawnSync("sh", ["-n", "-c", step.argv[2]!], { encoding: "utf8" });
      assert.equal(result.status, 0, `${step.name}: ${result.stderr}`);
    }
  });

  it("refuses malformed values before anything reaches a guest", () => {
    for (const bad of [
      { hostname: "-x" },
      { ip: "10.77.0.300" },
      { gateway: "x" },
      { mac: "52:54:00:ab:cd" },
      { machineId: "xyz" },
      { prefixLength: 33 },
      { seed: new Uint8Array(4) },
      { device: "eth0; reboot" },
    ]) {
      assert.throws(() => planCloneIdentity({ ...identity, ...bad }), /clone identity: bad/);
    }
  });

  it("sets the clock to the millisecond", () => {
    assert.deepEqual(clockStep(1_700_000_000_042).argv, ["date", "-u", "-s", "@1700000000.042"]);
  });

  it("prints the new host key the way banger-init does, for the same parser", () => {
    const hostKey = planCloneIdentity(identity).find((step) => step.name === "host-key")!;
    assert.match(hostKey.argv[2] ?? "", /printf 'banger-init: hostkey %s %s\\n'/);
  });
});
