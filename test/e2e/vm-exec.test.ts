/**
 * `vm.exec` through the guest agent on real guests, once per driver (QEMU's
 * virtio-serial port; Firecracker's hybrid vsock through the double): env,
 * cwd, user and stdin, exit statuses and signals, a PTY, `$/signal`, a
 * cancel that takes the guest process group with it, a timeout, 16 execs at
 * once, the guest clock after a 30 s pause, and `vm stop` during an exec.
 * Drives the daemon over its RPC socket, as the CLI does.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { RpcClient } from "../../src/cli/rpc/client.ts";
import { BangerError, ErrorCode, type ParamsOf } from "../../src/protocol/index.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { connectDaemon, execCollect } from "../helpers/rpc-exec.ts";
import { FIRECRACKER_DOUBLE, vmmConfig } from "./vm-suite.ts";

const skip = e2eSkipReason();

for (const vmm of ["qemu", "firecracker"] as const) {
  describe(`vm.exec through the guest agent (${vmm === "qemu" ? "QEMU" : "firecracker double"})`, {
    skip,
  }, () => {
    let env: E2eEnv;
    let client: RpcClient;
    const VM = "box";

    const exec = (params: Omit<ParamsOf<"vm.exec">, "name">, stdin?: string) =>
      execCollect(client, { name: VM, ...params }, stdin);

    before(async () => {
      env = createE2eEnv({ name: `exec-${vmm}`, config: vmmConfig(vmm, FIRECRACKER_DOUBLE) });
      const created = await env.banger(["vm", "create", VM]);
      assert.equal(created.code, 0, created.stderr);
      client = await connectDaemon(env.home);
    });
    after(async () => {
      client?.close();
      await env?.dispose();
    });

    it("runs an argv with env, cwd, user and stdin", async () => {
      const r = await exec(
        {
          argv: ["sh", "-c", 'echo "$FOO|$(pwd)|$(id -un)"; cat'],
          env: ["FOO=a b"],
          cwd: "/tmp",
          user: "nobody",
        },
        "from stdin\n",
      );
      assert.deepEqual(r, { exitCode: 0, signal: null, stdout: "a b|/tmp|nobody\nfrom stdin\n", stderr: "" });
      const argv = await exec({ argv: ["printf", "%s|", "$HOME", "a b", "*"] });
      assert.equal(argv.stdout, "$HOME|a b|*|", "no shell re-splits the argv");
    });

    it("reports exit statuses, deaths by signal and timeouts", async () => {
      for (const code of [0, 1, 2, 126, 127, 128, 255]) {
        const r = await exec({ argv: ["sh", "-c", `exit ${code}`] });
        assert.equal(r.exitCode, code);
      }
      const killed = await exec({ argv: ["sh", "-c", "kill -USR1 $$"] });
      assert.deepEqual([killed.exitCode, killed.signal], [null, "SIGUSR1"]);
      const missing = await exec({ argv: ["no-such-command"] });
      assert.equal(missing.exitCode, 127);
      const timedOut = await exec({ argv: ["sleep", "1000"], timeoutMs: 500 });
      assert.deepEqual([timedOut.exitCode, timedOut.signal, timedOut.timedOut], [null, "SIGKILL", true]);
    });

    it("gives a PTY its size", async () => {
      const r = await exec({ argv: ["stty", "size"], tty: { cols: 100, rows: 30 } });
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout.trim(), "30 100");
    });

    it("delivers $/signal to the process group, and a cancel kills the group", async () => {
      let pid = "";
      const first = client.start(
        "vm.exec",
        { name: VM, argv: ["sh", "-c", "sleep 1000 & echo $!; wait"] },
        {
          onStream: (ch, data) => {
            if (ch === "stdout" && data) pid += data.toString();
          },
        },
      );
      for (let i = 0; i < 100 && !pid.endsWith("\n"); i++) await new Promise((r) => setTimeout(r, 100));
      first.signal("SIGTERM");
      const result = await first.result;
      assert.equal(result.signal, "SIGTERM");
      const gone = await exec({
        argv: ["sh", "-c", `kill -0 ${pid.trim()} 2>/dev/null && echo alive || echo gone`],
      });
      assert.equal(gone.stdout, "gone\n");

      let pid2 = "";
      const controller = new AbortController();
      const second = client.start(
        "vm.exec",
        { name: VM, argv: ["sh", "-c", "sleep 1000 & echo $!; wait"] },
        {
          signal: controller.signal,
          onStream: (ch, data) => {
            if (ch === "stdout" && data) pid2 += data.toString();
          },
        },
      );
      for (let i = 0; i < 100 && !pid2.endsWith("\n"); i++) await new Promise((r) => setTimeout(r, 100));
      controller.abort();
      await assert.rejects(
        second.result,
        (e: unknown) => e instanceof BangerError && e.code === ErrorCode.CANCELLED,
      );
      let state = "";
      for (let i = 0; i < 50; i++) {
        state = (
          await exec({ argv: ["sh", "-c", `kill -0 ${pid2.trim()} 2>/dev/null && echo alive || echo gone`] })
        ).stdout;
        if (state === "gone\n") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(state, "gone\n", "the cancelled exec's background process is gone");
    });

    it("runs 16 execs at once on one VM", async () => {
      const results = await Promise.all(
        Array.from({ length: 16 }, (_, i) => exec({ argv: ["sh", "-c", `sleep 1; echo ${i}`] })),
      );
      assert.deepEqual(
        results.map((r) => [r.exitCode, r.stdout]),
        Array.from({ length: 16 }, (_, i) => [0, `${i}\n`]),
      );
    });

    it("sets the guest clock at resume: within 1 s of the host after a 30 s pause", async () => {
      assert.equal((await env.banger(["vm", "pause", VM])).code, 0);
      await new Promise((r) => setTimeout(r, 30_000));
      const resumed = await env.banger(["vm", "resume", VM]);
      assert.equal(resumed.code, 0, resumed.stderr);
      const before = Date.now();
      const r = await exec({ argv: ["date", "+%s%N"] });
      const after = Date.now();
      const guestMs = Number(BigInt(r.stdout.trim()) / 1_000_000n);
      assert.ok(
        guestMs >= before - 1000 && guestMs <= after + 1000,
        `guest ${guestMs}, host ${before}..${after}`,
      );
    });

    it("ends an exec with VM_STOPPED when the VM stops under it", async () => {
      const running = client.start("vm.exec", { name: VM, argv: ["sleep", "1000"] });
      // Listen before stopping: the exec ends while the stop is still running.
      const ended = assert.rejects(
        running.result,
        (e: unknown) =>
          e instanceof BangerError && e.code === ErrorCode.VM_STOPPED && /stopped while/.test(e.message),
      );
      await new Promise((r) => setTimeout(r, 500));
      const stopped = await env.banger(["vm", "stop", VM]);
      assert.equal(stopped.code, 0, stopped.stderr);
      await ended;
    });
  });
}
