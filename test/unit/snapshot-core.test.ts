import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  checkRestore,
  clockStep,
  defaultSnapshotName,
  forkNames,
  hostnameStep,
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
import { ed25519KeyFiles, parseHostKeyLine } from "../../src/core/ssh/index.ts";
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
    hostKey: ed25519KeyFiles(new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), 0x01020304),
  };

  it("is one program: the host key and RNG first, the network last, inputs as arguments and stdin only", () => {
    const step = planCloneIdentity(identity);
    assert.equal(step.name, "identity");
    assert.deepEqual(step.argv.slice(0, 2), ["sh", "-c"]);
    assert.deepEqual(step.argv.slice(3), [
      "banger-identity",
      "web-2",
      "0123456789abcdef0123456789abcdef",
      "10.77.0.9/24",
      "52:54:00:ab:cd:ef",
      "10.77.0.1",
      "eth0",
      "/.banger/agent",
      `ssh-ed25519 ${identity.hostKey.publicKey.base64}`,
    ]);
    assert.deepEqual(
      step.stdin,
      Buffer.concat([Buffer.from(identity.hostKey.privateKey), identity.seed]),
      "the private key, then the seed: secrets only on stdin",
    );
    const script = step.argv[2] ?? "";
    for (const value of [identity.hostname, identity.ip, identity.mac, identity.machineId]) {
      assert.ok(!script.includes(value), "the program text holds no input");
    }
    const order = ["step=host-key", "step=rng", "step=machine-id", "step=hostname", "step=network"].map(
      (marker) => script.indexOf(marker),
    );
    assert.ok(
      order.every((at) => at >= 0),
      "every step is named",
    );
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      order,
      "the steps run in order, the network last",
    );
  });

  it("every program parses under sh -n", () => {
    for (const step of [planCloneIdentity(identity), hostnameStep("web-2")]) {
      const result = spawnSync("sh", ["-n", "-c", step.argv[2]!], { encoding: "utf8" });
      assert.equal(result.status, 0, `${step.name}: ${result.stderr}`);
    }
  });

  it("runs in a scratch root: installs the host's key, reseeds with the rest of stdin, falls back from ip -batch, names a failing step", () => {
    // The program against stand-ins for the agent and ip that log what they get.
    const dir = mkdtempSync(join(tmpdir(), "bgid-"));
    try {
      const bin = join(dir, "bin");
      mkdirSync(bin);
      const log = join(dir, "log");
      const tool = (name: string, body: string) => {
        writeFileSync(join(bin, name), `#!/bin/sh\nPATH=/usr/bin:/bin\n${body}\n`, { mode: 0o755 });
      };
      tool("agent", `echo "agent $* $(od -An -v -tx1 | tr -d ' \\n')" >>${log}`);
      tool("ip", `case "$1" in -batch) echo "ip -batch" >>${log}; exit 1;; esac; echo "ip $*" >>${log}`);
      const step = planCloneIdentity(identity);
      // Rewrite only the absolute guest paths, so the same program runs against the scratch root.
      const script = (step.argv[2] ?? "")
        .replaceAll("/etc/", `${dir}/etc/`)
        .replaceAll("/proc/sys/kernel/hostname", `${dir}/hostname`)
        .replaceAll("/var/lib/dbus", `${dir}/dbus`)
        .replaceAll("/run/sshd.pid", `${dir}/sshd.pid`);
      assert.ok(!/[ >]\/etc\//.test(script), "every guest path is in the scratch root");
      mkdirSync(join(dir, "etc", "ssh"), { recursive: true });
      writeFileSync(join(dir, "etc", "ssh", "ssh_host_rsa_key"), "the source's key");
      const args = step.argv.slice(3);
      args[7] = join(bin, "agent");
      const run = () =>
        spawnSync("/bin/sh", ["-c", script, ...args], {
          input: Buffer.from(step.stdin ?? []),
          encoding: "utf8",
          env: { PATH: `${bin}:/usr/bin:/bin` },
        });
      const result = run();
      assert.equal(result.status, 0, result.stderr);
      const key = join(dir, "etc", "ssh", "ssh_host_ed25519_key");
      assert.equal(readFileSync(key, "utf8"), identity.hostKey.privateKey);
      assert.equal(statSync(key).mode & 0o777, 0o600);
      assert.equal(readFileSync(`${key}.pub`, "utf8"), `ssh-ed25519 ${identity.hostKey.publicKey.base64}\n`);
      assert.equal(
        existsSync(join(dir, "etc", "ssh", "ssh_host_rsa_key")),
        false,
        "the source's other keys go",
      );
      assert.deepEqual(parseHostKeyLine(result.stdout), identity.hostKey.publicKey);
      assert.equal(readFileSync(join(dir, "etc", "machine-id"), "utf8"), `${identity.machineId}\n`);
      assert.equal(readFileSync(join(dir, "hostname"), "utf8"), "web-2\n");
      assert.match(readFileSync(join(dir, "etc", "hosts"), "utf8"), /127\.0\.1\.1\tweb-2/);
      const calls = readFileSync(log, "utf8").trim().split("\n");
      assert.equal(
        calls[0],
        `agent reseed ${Buffer.from(identity.seed).toString("hex")}`,
        "the agent gets the seed, all of it",
      );
      assert.equal(calls[1], "ip -batch");
      assert.deepEqual(calls.slice(2, 4), [
        "ip link set dev eth0 down",
        "ip link set dev eth0 address 52:54:00:ab:cd:ef",
      ]);
      assert.equal(calls.at(-1), "ip neigh flush dev eth0");

      rmSync(join(dir, "etc", "ssh"), { recursive: true });
      rmSync(log);
      const noSsh = run();
      assert.equal(noSsh.status, 0, noSsh.stderr);
      assert.equal(parseHostKeyLine(noSsh.stdout), undefined, "no sshd, no key to pin");
      assert.match(
        readFileSync(log, "utf8"),
        /^agent reseed [0-9a-f]{128}\n/,
        "the key was read past, not fed to the agent",
      );

      tool("ip", "echo 'RTNETLINK answers: Operation not permitted' >&2; exit 2");
      const failed = run();
      assert.notEqual(failed.status, 0);
      assert.match(failed.stderr.trim().split("\n").at(-1) ?? "", /the network step failed/);
      assert.match(failed.stderr, /Operation not permitted/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
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

  it("refuses a host key that is not an OpenSSH key file", () => {
    const hostKey = { ...identity.hostKey, privateKey: "not a key" };
    assert.throws(() => planCloneIdentity({ ...identity, hostKey }), /clone identity: bad host key/);
  });
});
