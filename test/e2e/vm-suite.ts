/**
 * The main job on real guests, run once per VMM driver: run, exec with
 * streams and exit codes, stop/start keeping the disk, vm set growing the
 * disk, two VMs that reach each other, ssh through the daemon, VMs that
 * outlive a kill -9 of the daemon, the reaper noticing a VMM killed behind
 * the daemon's back, kill, delete, Ctrl-C, and nothing left behind.
 * Firecracker runs through the test double (test/doubles/firecracker),
 * which serves the real API and boots the same guest with QEMU.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { bangerBin, daemonPid, TEST_IMAGE_ENV } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason, IMAGE_CACHE } from "../helpers/e2e.ts";

export const FIRECRACKER_DOUBLE = join(import.meta.dirname, "..", "doubles", "firecracker", "firecracker");

export interface VmSuiteOptions {
  vmm: "qemu" | "firecracker";
  /** The firecracker binary; the double unless given. */
  firecrackerBinary?: string | undefined;
  /** Why the suite cannot run here, if it cannot. */
  skip?: string | undefined;
}

/** Config that makes the driver the default, so every command below uses it. */
export function vmmConfig(vmm: VmSuiteOptions["vmm"], firecrackerBinary = FIRECRACKER_DOUBLE): string {
  return vmm === "qemu"
    ? '[vmm]\ndefault = "qemu"\n'
    : `[vmm]\ndefault = "firecracker"\nfirecracker_binary = ${JSON.stringify(firecrackerBinary)}\n`;
}

const GIB = 1024 ** 3;

async function until<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export function defineVmSuite(options: VmSuiteOptions): void {
  const { vmm } = options;
  const diskFile = vmm === "qemu" ? "root.qcow2" : "root.raw";
  const throughDouble = vmm === "firecracker" && options.firecrackerBinary === undefined;
  const label = vmm === "firecracker" ? (throughDouble ? "firecracker double" : "real firecracker") : vmm;

  describe(`VMs on real guests (${label})`, { skip: options.skip ?? e2eSkipReason() }, () => {
    let env: E2eEnv;
    const show = async (name: string) => {
      const shown = await env.banger(["vm", "show", name, "--json"]);
      assert.equal(shown.code, 0, shown.stderr);
      return JSON.parse(shown.stdout) as {
        state: string;
        pid: number | null;
        lastError: string | null;
        dir: string;
      };
    };
    const strictLog = (home: string) => join(home, "firecracker-exchanges.jsonl");
    before(() => {
      env = createE2eEnv({
        name: vmm.slice(0, 4),
        config: vmmConfig(vmm, options.firecrackerBinary),
        // The double records every API exchange with its spec validation result.
        env: (home) => (throughDouble ? { FC_DOUBLE_STRICT_LOG: strictLog(home) } : {}),
      });
    });
    after(async () => {
      await env?.dispose();
    });

    it(`vm run --rm --vmm ${vmm} runs a command in a fresh guest and leaves nothing behind`, async () => {
      const run = await env.banger(["vm", "run", "--rm", "--vmm", vmm, "--", "uname", "-a"]);
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
      assert.equal(info.vmm, vmm);
      assert.ok(existsSync(join(info.dir, diskFile)), `${diskFile} exists`);

      const failing = await env.banger([
        "vm",
        "exec",
        "alpha",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
      ]);
      assert.equal(failing.code, 7);
      assert.equal(failing.stdout, "out\n");
      assert.match(failing.stderr, /^err$/m);

      const piped = await env.banger(["vm", "exec", "-i", "alpha", "--", "sh", "-c", "tr a-z A-Z"], {
        input: "hello guest\n",
      });
      assert.equal(piped.code, 0, piped.stderr);
      assert.equal(piped.stdout, "HELLO GUEST\n");

      const args = await env.banger([
        "vm",
        "exec",
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
        "exec",
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

    it("keeps disk contents across stop and start; vm cp copies in and out", async () => {
      const write = await env.banger([
        "vm",
        "exec",
        "alpha",
        "--",
        "sh",
        "-c",
        "echo persisted > /root/marker && sync",
      ]);
      assert.equal(write.code, 0, write.stderr);
      const stop = await env.banger(["vm", "stop", "alpha"]);
      assert.equal(stop.code, 0, stop.stderr);
      const shown = await show("alpha");
      assert.equal(shown.state, "stopped");
      assert.equal(shown.pid, null);
      assert.deepEqual(env.qemuPids(), []);
      assert.deepEqual(env.taps(), []);
      const start = await env.banger(["vm", "start", "alpha"]);
      assert.equal(start.code, 0, start.stderr);
      const read = await env.banger(["vm", "exec", "alpha", "--", "cat", "/root/marker"]);
      assert.equal(read.stdout, "persisted\n");
      // vm cp through this driver's agent channel, both ways.
      const local = mkdtempSync(join(tmpdir(), "bg-cp-"));
      try {
        writeFileSync(join(local, "in.txt"), "copied in\n", { mode: 0o640 });
        const copyIn = await env.banger(["vm", "cp", join(local, "in.txt"), "alpha:/root/in.txt"]);
        assert.equal(copyIn.code, 0, copyIn.stderr);
        const seen = await env.banger(["vm", "exec", "alpha", "--", "stat", "-c", "%a %s", "/root/in.txt"]);
        assert.equal(seen.stdout, "640 10\n");
        const copyOut = await env.banger(["vm", "cp", "alpha:/root/marker", join(local, "marker")]);
        assert.equal(copyOut.code, 0, copyOut.stderr);
        assert.equal(readFileSync(join(local, "marker"), "utf8"), "persisted\n");
      } finally {
        rmSync(local, { recursive: true, force: true });
      }
    });

    it("vm set grows the disk and vCPUs of a stopped VM, and the guest sees both", async () => {
      const sizeOfRoot = async () => {
        const df = await env.banger(["vm", "exec", "alpha", "--", "df", "-B1", "--output=size", "/"]);
        assert.equal(df.code, 0, df.stderr);
        return Number(df.stdout.trim().split("\n").at(-1));
      };
      const before = await sizeOfRoot();
      const running = await env.banger(["vm", "set", "alpha", "--disk", "4"]);
      assert.equal(running.code, 6, "refused while running");
      assert.match(running.stderr, /VM 'alpha' is running; vm set needs it stopped/);
      assert.equal((await env.banger(["vm", "stop", "alpha"])).code, 0);
      const shrink = await env.banger(["vm", "set", "alpha", "--disk", "1"]);
      assert.equal(shrink.code, 2, "a smaller disk is refused");
      assert.match(shrink.stderr, /disks only grow/);
      const set = await env.banger(["vm", "set", "alpha", "--disk", "4", "--cpus", "2", "--json"]);
      assert.equal(set.code, 0, set.stderr);
      assert.equal(JSON.parse(set.stdout).diskGib, 4);
      assert.equal((await env.banger(["vm", "start", "alpha"])).code, 0);
      const after = await sizeOfRoot();
      assert.ok(after > before + GIB, `root filesystem grew from ${before} to ${after} bytes`);
      const nproc = await env.banger(["vm", "exec", "alpha", "--", "nproc"]);
      assert.equal(nproc.stdout.trim(), "2");
      const marker = await env.banger(["vm", "exec", "alpha", "--", "cat", "/root/marker"]);
      assert.equal(marker.stdout, "persisted\n", "contents survive the resize");
    });

    it("runs two VMs at once that reach each other", async () => {
      const created = await env.banger(["vm", "create", "beta", "--json"]);
      assert.equal(created.code, 0, created.stderr);
      const beta = JSON.parse(created.stdout);
      const probe = await env.banger([
        "vm",
        "exec",
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

    it("VMs outlive a kill -9 of the daemon and stay usable", async () => {
      const pidsBefore = [(await show("alpha")).pid, (await show("beta")).pid];
      const daemon = daemonPid(env.home);
      assert.ok(daemon, "a daemon is running");
      process.kill(daemon, "SIGKILL");
      await until("the daemon to die", 10_000, async () =>
        existsSync(`/proc/${daemon}`) ? undefined : true,
      );
      // The next command starts a new daemon, which reconciles.
      for (const [i, name] of (["alpha", "beta"] as const).entries()) {
        const shown = await show(name);
        assert.equal(shown.state, "running", `${name} still running`);
        assert.equal(shown.pid, pidsBefore[i], `${name} kept its VMM`);
        const run = await env.banger(["vm", "exec", name, "--", "hostname"]);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout.trim(), name);
      }
      assert.notEqual(daemonPid(env.home), daemon);
      assert.equal(env.taps().length, 2);
    });

    it("pause freezes a VM, across a kill -9 of the daemon too, and resume lets it run", async () => {
      const pause = await env.banger(["vm", "pause", "alpha"]);
      assert.equal(pause.code, 0, pause.stderr);
      assert.equal((await show("alpha")).state, "paused");
      const refused = await env.banger(["vm", "exec", "alpha", "--", "true"]);
      assert.equal(refused.code, 6);
      assert.match(refused.stderr, /VM 'alpha' is paused/);
      const daemon = daemonPid(env.home);
      assert.ok(daemon);
      process.kill(daemon, "SIGKILL");
      await until("the daemon to die", 10_000, async () =>
        existsSync(`/proc/${daemon}`) ? undefined : true,
      );
      const shown = await show("alpha");
      assert.equal(shown.state, "paused", "the new daemon found it paused");
      assert.equal(shown.lastError, null, "its control channel answered");
      const resume = await env.banger(["vm", "resume", "alpha"]);
      assert.equal(resume.code, 0, resume.stderr);
      const run = await env.banger(["vm", "exec", "alpha", "--", "cat", "/root/marker"]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "persisted\n");
    });

    it("the reaper marks a VM whose VMM was killed behind its back as stopped, with the reason", async () => {
      const { pid } = await show("beta");
      assert.ok(pid);
      process.kill(pid, "SIGKILL");
      const reaped = await until("the reaper (10 s)", 10_000, async () => {
        const shown = await show("beta");
        return shown.state === "stopped" ? shown : undefined;
      });
      assert.match(reaped.lastError ?? "", /exited unexpectedly/);
      assert.equal(reaped.pid, null);
      assert.equal(env.taps().length, 1, "beta's tap is gone");
      const start = await env.banger(["vm", "start", "beta"]);
      assert.equal(start.code, 0, start.stderr);
      const run = await env.banger(["vm", "exec", "beta", "--", "true"]);
      assert.equal(run.code, 0, run.stderr);
    });

    it("the reaper marks a VM whose guest powered itself off as stopped, saying so", async () => {
      // The SSH connection may drop before the command's status arrives, so its exit code is not asserted.
      await env.banger(["vm", "exec", "beta", "--", "poweroff"]);
      const reaped = await until("the reaper after a guest poweroff", 30_000, async () => {
        const shown = await show("beta");
        return shown.state === "stopped" ? shown : undefined;
      });
      assert.match(reaped.lastError ?? "", /the guest powered off/);
      assert.equal(env.taps().length, 1, "beta's tap is gone");
      const start = await env.banger(["vm", "start", "beta"]);
      assert.equal(start.code, 0, start.stderr);
    });

    it("kill stops a VM at once; delete removes disk, tap and process", async () => {
      const kill = await env.banger(["vm", "kill", "beta"]);
      assert.equal(kill.code, 0, kill.stderr);
      assert.equal((await show("beta")).state, "stopped");
      assert.equal(env.taps().length, 1);

      const refused = await env.banger(["vm", "delete", "alpha"]);
      assert.equal(refused.code, 6, "a running VM is deleted only with --force");
      assert.match(refused.stderr, /VM 'alpha' is running; deleting it needs --force/);
      const del = await env.banger(["vm", "delete", "--force", "alpha", "beta"]);
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(JSON.parse((await env.banger(["vm", "ls", "--json"])).stdout), []);
      assert.deepEqual(env.taps(), []);
      assert.deepEqual(env.qemuPids(), []);
      assert.deepEqual(env.vmDirs(), []);
    });

    it("vm run --rm deletes the VM when interrupted with Ctrl-C", async () => {
      const child = spawn(bangerBin, ["vm", "run", "--rm", "--name", "ctrlc", "--", "sleep", "120"], {
        env: {
          ...TEST_IMAGE_ENV,
          ...process.env,
          BANGER_HOME: env.home,
          BANGER_NETNS: env.netns,
          BANGER_IMAGE_CACHE: IMAGE_CACHE,
        },
        stdio: ["pipe", "pipe", "pipe"],
      });
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      await until("ctrlc to run", 150_000, async () => {
        const shown = await env.banger(["vm", "show", "ctrlc", "--json"]);
        return shown.code === 0 && JSON.parse(shown.stdout).state === "running" ? true : undefined;
      });
      await new Promise((resolve) => setTimeout(resolve, 1500));
      child.kill("SIGINT");
      assert.equal(await exited, 130);
      const shown = await env.banger(["vm", "show", "ctrlc"]);
      assert.equal(shown.code, 4, "the VM is gone");
      assert.deepEqual(env.qemuPids(), []);
      assert.deepEqual(env.taps(), []);
    });

    it("sent the VMM only spec-valid API requests and got only spec-valid replies", {
      skip: !throughDouble,
    }, async () => {
      const lines = readFileSync(strictLog(env.home), "utf8")
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { requestValid: boolean; responseValid: boolean });
      assert.ok(lines.length > 40, `${lines.length} exchanges recorded`);
      assert.deepEqual(
        lines.filter((line) => !line.requestValid || !line.responseValid),
        [],
      );
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
}
