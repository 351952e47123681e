/**
 * Memory snapshots on real guests, through the CLI, under both drivers
 * (QEMU with TCG, and Firecracker through the double, whose every API
 * exchange, /snapshot/create and /snapshot/load included, is checked
 * against Firecracker's spec): what
 * only a real guest proves. A source VM holds state in memory (a running
 * process, a file on tmpfs) and on disk; two clones restored from its
 * snapshot side by side each see all of it, have their own address, name,
 * host key and machine-id, resolve each other by name, write without
 * affecting each other or the source, and have the host's clock. The
 * source, suspended to disk, survives a daemon kill -9 with its process and
 * files, and an exec wakes it. A mismatched restore and deleting a
 * snapshot in use are refused. Nothing is left behind.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { daemonPid } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { vmmConfig } from "./vm-suite.ts";

const skip = e2eSkipReason();
/** exitStatusFor: SNAPSHOT_MISMATCH and BAD_STATE. */
const MISMATCH_STATUS = 6;

for (const vmm of ["qemu", "firecracker"] as const) defineSnapshotSuite(vmm);

function defineSnapshotSuite(vmm: "qemu" | "firecracker"): void {
  describe(`snapshots, clones and suspend on real guests (${vmm === "qemu" ? "QEMU" : "firecracker double"})`, {
    skip,
  }, () => {
    let env: E2eEnv;
    let holderPid: string;
    const exec = async (vm: string, script: string) => {
      const result = await env.banger(["vm", "exec", vm, "--", "sh", "-c", script]);
      assert.equal(result.code, 0, `${vm}: ${script}: ${result.stderr}`);
      return result.stdout.trim();
    };

    /** The guest's clock, read by an exec, lies within 1 s of the host's time around that exec. */
    const assertHostClock = async (vm: string) => {
      const before = Date.now() / 1000;
      const clock = Number(await exec(vm, "date +%s.%N"));
      const after = Date.now() / 1000;
      assert.ok(
        clock > before - 1 && clock < after + 1,
        `${vm}'s clock ${clock} is within 1 s of the host's [${before}, ${after}]`,
      );
    };

    before(async () => {
      env = createE2eEnv({
        name: `snap-${vmm.slice(0, 2)}`,
        config: vmmConfig(vmm),
        // The double records every API exchange with its spec validation result.
        env: (home) => (vmm === "firecracker" ? { FC_DOUBLE_STRICT_LOG: strictLog(home) } : {}),
      });
      const created = await env.banger(["vm", "create", "src"]);
      assert.equal(created.code, 0, created.stderr);
      await exec("src", "echo on-disk > /root/marker && sync");
      // Memory only: a file on tmpfs and a process that holds a value and keeps running.
      await exec("src", "echo in-memory > /run/memproof");
      holderPid = await exec(
        "src",
        "setsid sh -c 'v=held-by-a-process; while :; do sleep 1; done' >/dev/null 2>&1 & echo $!",
      );
    });

    after(async () => {
      await env?.dispose();
    });

    it("two clones of one snapshot run side by side with their own identity and the source's state", async () => {
      const snap = await env.banger(["vm", "snapshot", "src", "warm", "--json"]);
      assert.equal(snap.code, 0, snap.stderr);
      const info = JSON.parse(snap.stdout);
      assert.equal(info.sourceVm, "src");
      assert.ok(info.memoryBytes > 0);
      const [c1, c2] = await Promise.all(
        ["c1", "c2"].map((name) => env.banger(["vm", "create", name, "--from", "warm", "--json"])),
      );
      assert.equal(c1?.code, 0, c1?.stderr);
      assert.equal(c2?.code, 0, c2?.stderr);
      const source = JSON.parse((await env.banger(["vm", "show", "src", "--json"])).stdout);
      assert.equal(source.state, "running", "the source runs on after its snapshot");
      const clones = [JSON.parse(c1!.stdout), JSON.parse(c2!.stdout)];
      // Read at once: a restore sets the clock; a TCG guest on a host this loaded may then lag behind it.
      await Promise.all(["c1", "c2"].map(assertHostClock));

      const identity = async (vm: string) => ({
        disk: await exec(vm, "cat /root/marker"),
        memory: await exec(vm, "cat /run/memproof"),
        process: await exec(vm, `tr '\\0' ' ' </proc/${holderPid}/cmdline`),
        hostname: await exec(vm, "hostname"),
        address: await exec(vm, "ip -4 -o addr show dev eth0 | awk '{print $4}'"),
        mac: await exec(vm, "cat /sys/class/net/eth0/address"),
        machineId: await exec(vm, "cat /etc/machine-id"),
        hostKey: await exec(vm, "cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub"),
        clock: Number(await exec(vm, "date +%s.%N")),
      });
      const seen = await Promise.all(["src", "c1", "c2"].map(identity));
      const now = Date.now() / 1000;
      for (const [index, vm] of [source, ...clones].entries()) {
        const got = seen[index]!;
        assert.equal(got.disk, "on-disk", `${vm.name} has the disk's file`);
        assert.equal(got.memory, "in-memory", `${vm.name} has the tmpfs file`);
        assert.match(got.process, /held-by-a-process/, `${vm.name} has the running process`);
        assert.equal(got.hostname, vm.name);
        assert.equal(got.address, `${vm.guestIp}/24`);
        assert.equal(got.mac, vm.mac);
        // Within a second of the host's clock (read after the guests answered, so only later).
        assert.ok(
          now - got.clock < 10 && got.clock - now < 1,
          `${vm.name}'s clock ${got.clock} vs host ${now}`,
        );
      }
      for (const field of ["address", "mac", "machineId", "hostKey", "hostname"] as const) {
        assert.equal(new Set(seen.map((got) => got[field])).size, 3, `three distinct ${field}s`);
      }

      // By name, and their writes stay their own.
      assert.equal(await exec("c1", "getent hosts c2 | awk '{print $1}'"), clones[1].guestIp);
      await exec("c1", "echo c1-only > /root/mine && sync");
      assert.equal(await exec("c2", "cat /root/mine 2>/dev/null || echo absent"), "absent");
      assert.equal(await exec("src", "cat /root/mine 2>/dev/null || echo absent"), "absent");

      // The host made each clone's key and pinned it; sshd serves it (ssh checks the pin strictly).
      for (const clone of ["c1", "c2"]) {
        const ssh = await env.banger(["vm", "ssh", clone, "--", "hostname"]);
        assert.equal(ssh.code, 0, ssh.stderr);
        assert.equal(ssh.stdout.trim(), clone);
      }
    });

    it("suspends to disk, survives a daemon kill -9, and resumes with its process and files", async () => {
      const state = async (vm: string) =>
        JSON.parse((await env.banger(["vm", "show", vm, "--json"])).stdout).state;
      const suspended = await env.banger(["vm", "suspend", "src"]);
      assert.equal(suspended.code, 0, suspended.stderr);
      assert.equal(await state("src"), "suspended");
      const qemuBefore = env.qemuPids().length;
      const pid = daemonPid(env.home)!;
      process.kill(pid, "SIGKILL");
      while (alive(pid)) await sleep(20);
      // The next command starts a new daemon, which reconciles: the VM stays suspended, with no VMM.
      assert.equal(await state("src"), "suspended");
      assert.equal(env.qemuPids().length, qemuBefore, "no VMM was started for the suspended VM");
      const resumed = await env.banger(["vm", "resume", "src"]);
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.equal(await state("src"), "running");
      assert.equal(await exec("src", "cat /run/memproof /root/marker"), "in-memory\non-disk");
      assert.match(await exec("src", `tr '\\0' ' ' </proc/${holderPid}/cmdline`), /held-by-a-process/);
      await assertHostClock("src");
      // Any exec wakes a suspended VM.
      assert.equal((await env.banger(["vm", "suspend", "src"])).code, 0);
      assert.equal(await exec("src", "cat /run/memproof"), "in-memory");
      assert.equal(await state("src"), "running");
    });

    it("refuses a mismatched restore and deleting a snapshot in use, then deletes cleanly", async () => {
      const mismatch = await env.banger(["vm", "create", "c3", "--from", "warm", "--cpus", "2"]);
      assert.equal(mismatch.code, MISMATCH_STATUS, mismatch.stderr);
      assert.match(mismatch.stderr, /vCPUs 1; this restore has 2/);
      const inUse = await env.banger(["snapshot", "rm", "warm"]);
      assert.equal(inUse.code, MISMATCH_STATUS, inUse.stderr);
      assert.match(inUse.stderr, /backs the disks of 'c1', 'c2'/);
      const run = await env.banger(["vm", "run", "--rm", "--from", "warm", "--", "cat", "/run/memproof"]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), "in-memory");
      for (const vm of ["c1", "c2", "src"]) {
        const deleted = await env.banger(["vm", "delete", "--force", vm]);
        assert.equal(deleted.code, 0, deleted.stderr);
      }
      const rm = await env.banger(["snapshot", "rm", "warm"]);
      assert.equal(rm.code, 0, rm.stderr);
      const listed = JSON.parse((await env.banger(["snapshot", "ls", "--json"])).stdout);
      assert.deepEqual(listed, []);
      assert.deepEqual(env.vmDirs(), []);
      assert.deepEqual(env.taps(), []);
    });

    it("sent Firecracker only spec-valid snapshot, load and other API requests, and got spec-valid replies", {
      skip: vmm !== "firecracker",
    }, () => {
      const lines = readFileSync(strictLog(env.home), "utf8")
        .trim()
        .split("\n")
        .map(
          (line) =>
            JSON.parse(line) as {
              method: string;
              path: string;
              requestValid: boolean;
              responseValid: boolean;
            },
        );
      const paths = new Set(lines.map((line) => line.path));
      for (const path of ["/snapshot/create", "/snapshot/load"])
        assert.ok(paths.has(path), `the double saw ${path}`);
      assert.deepEqual(
        lines.filter((line) => !line.requestValid || !line.responseValid),
        [],
      );
    });
  });
}

const strictLog = (home: string) => join(home, "firecracker-exchanges.jsonl");

/** Alive and not a zombie (a killed daemon's parent may not have reaped it yet). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
