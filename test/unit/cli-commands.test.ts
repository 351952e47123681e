/**
 * CLI commands run in-process against a fake daemon client: what each prints,
 * what it asks the daemon, and the exit status it ends with.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  BangerError,
  ErrorCode,
  exitStatusFor,
  type OperationInfo,
  type VmInfo,
} from "../../src/protocol/index.ts";
import { FakeDaemonClient, type FakeHandlers, fakeCli, fakeVmInfo as vmInfo } from "../fakes/cli.ts";

function operation(overrides: Partial<OperationInfo> = {}): OperationInfo {
  return {
    id: "op-1",
    kind: "vm.create",
    state: "running",
    step: "queued",
    message: "queued",
    vmName: "web",
    error: null,
    startedAt: new Date().toISOString(),
    finishedAt: null,
    ...overrides,
  };
}

const notFound = (name: string) => new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${name}'`);

describe("vm list and show", () => {
  it("lists VMs as a table, and as JSON with --json", async () => {
    const client = new FakeDaemonClient({
      "vm.list": () => ({ vms: [vmInfo(), vmInfo({ name: "db", state: "stopped" })] }),
    });
    const table = fakeCli({ client });
    assert.equal(await table.run(["vm", "ls"]), 0);
    const lines = table.stdout().trimEnd().split("\n");
    assert.match(lines[0]!, /^NAME\s+STATE\s+IMAGE/);
    assert.match(
      lines[1]!,
      /^web\s+running\s+debian-bookworm\s+qemu\s+1\s+1024M\s+4G\s+172\.30\.0\.2\s+1 second ago\s+-$/,
    );
    assert.match(lines[2]!, /^db\s+stopped/);
    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["vm", "list", "--json"]), 0);
    assert.deepEqual(
      (JSON.parse(asJson.stdout()) as VmInfo[]).map((vm) => vm.name),
      ["web", "db"],
    );
  });

  it("a missing VM exits with VM_NOT_FOUND's status, the message and a hint", async () => {
    const cli = fakeCli({
      client: new FakeDaemonClient({
        "vm.show": (params) => {
          throw notFound(params.name);
        },
      }),
    });
    assert.equal(await cli.run(["vm", "show", "nope"]), exitStatusFor[ErrorCode.VM_NOT_FOUND]);
    assert.match(cli.stderr(), /^banger: no VM named 'nope'\nhint: run `banger vm list`/);
    assert.equal(cli.stdout(), "");
  });
});

describe("vm create", () => {
  const creating = (finalOp: Partial<OperationInfo>, vm: VmInfo | null) => {
    const steps: Partial<OperationInfo>[] = [
      { step: "vm.disk", message: "creating the root disk of web" },
      { step: "vm.boot", message: "booting web (qemu)" },
      finalOp,
    ];
    let index = 0;
    return new FakeDaemonClient({
      "vm.create.begin": () => ({ operation: operation() }),
      "vm.create.status": () => {
        const op = operation(steps[Math.min(index, steps.length - 1)]);
        index++;
        return { operation: op, vm: op.state === "succeeded" ? vm : null };
      },
    });
  };

  it("sends sizes with units, prints the name, and shows the daemon's steps and its final line once", async () => {
    const client = creating(
      { state: "succeeded", step: "vm.ready", message: "web is running (172.30.0.2)" },
      vmInfo(),
    );
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "create", "web", "--memory", "1g", "--disk", "8GiB", "--cpus", "2"]),
      0,
    );
    assert.deepEqual(client.callsOf("vm.create.begin")[0]!.params, {
      name: "web",
      start: true,
      cpus: 2,
      memoryMib: 1024,
      diskGib: 8,
    });
    assert.equal(cli.stdout(), "web\n");
    assert.match(
      cli.stderr(),
      /… creating the root disk of web\n… booting web \(qemu\)\n✓ web is running \(172\.30\.0\.2\)\n/,
    );
    assert.equal(cli.stderr().match(/is running/g)?.length, 1);
  });

  it("--no-start says the VM is stopped, not running", async () => {
    const client = creating(
      { state: "succeeded", step: "vm.disk", message: "creating the root disk of web" },
      vmInfo({ state: "stopped", pid: null }),
    );
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "create", "web", "--no-start"]), 0);
    assert.equal((client.callsOf("vm.create.begin")[0]!.params as { start?: boolean }).start, false);
    assert.match(cli.stderr(), /✓ web created, stopped \(`banger vm start web` boots it\)\n$/);
    assert.doesNotMatch(cli.stderr(), /running/);
  });

  it("refuses a size it cannot read, naming the flag, before asking the daemon", async () => {
    const client = creating({ state: "succeeded" }, vmInfo());
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "create", "web", "--memory", "lots"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(cli.stderr(), /--memory must be a size such as 2g or 512m, not 'lots'/);
    assert.equal(client.calls.length, 0);
  });

  it("Ctrl-C cancels the operation, and the CLI says it unwound", async () => {
    let cancelled = false;
    const cli = fakeCli({
      client: new FakeDaemonClient({
        "vm.create.begin": () => ({ operation: operation() }),
        "vm.create.status": async () => {
          await new Promise((resolve) => setImmediate(resolve));
          return {
            operation: cancelled
              ? operation({ state: "cancelled", step: "vm.boot", message: "cancelled" })
              : operation({ step: "vm.boot", message: "booting web (qemu)" }),
            vm: null,
          };
        },
        "vm.create.cancel": () => {
          cancelled = true;
          return { operation: operation({ state: "cancelled" }) };
        },
      }),
    });
    const status = cli.run(["vm", "create", "web"]);
    while (!cli.stderr().includes("booting")) await new Promise((resolve) => setImmediate(resolve));
    cli.signal("SIGINT");
    assert.equal(await status, exitStatusFor[ErrorCode.CANCELLED]);
    assert.match(cli.stderr(), /SIGINT: cancelling…/);
    assert.match(
      cli.stderr(),
      /banger: VM creation cancelled\nhint: the operation was cancelled and its partial work undone/,
    );
  });

  it("a failed operation exits with its error's code and hint", async () => {
    const cli = fakeCli({
      client: creating(
        {
          state: "failed",
          error: { code: "BOOT_FAILED", message: "VM 'web' failed to start", hint: "see banger vm logs web" },
        },
        null,
      ),
    });
    assert.equal(await cli.run(["vm", "create", "web"]), exitStatusFor[ErrorCode.BOOT_FAILED]);
    assert.match(cli.stderr(), /banger: VM 'web' failed to start\nhint: see banger vm logs web/);
  });
});

describe("vm lifecycle verbs", () => {
  it("acts on every VM, prints those done, and exits with the last failure's status", async () => {
    const client = new FakeDaemonClient({
      "vm.stop": (params, call) => {
        if (params.name === "ghost") throw notFound("ghost");
        call.options.onProgress?.({
          id: call.id,
          step: "vm.boot",
          message: `stopping ${params.name}`,
          status: "running",
        });
        return vmInfo({ name: params.name, state: "stopped" });
      },
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "stop", "web", "ghost", "db"]), exitStatusFor[ErrorCode.VM_NOT_FOUND]);
    assert.equal(cli.stdout(), "web\ndb\n");
    assert.match(cli.stderr(), /no VM named 'ghost'/);
    assert.match(cli.stderr(), /banger: stop failed for: ghost\n/);
    assert.deepEqual(
      client.callsOf("vm.stop").map((call) => call.params),
      [{ name: "web" }, { name: "ghost" }, { name: "db" }],
    );
  });
});

describe("vm set", () => {
  it("needs a change, and sends sizes with units", async () => {
    const client = new FakeDaemonClient({
      "vm.set": (params) => vmInfo({ name: params.name, memoryMib: params.memoryMib ?? 1024 }),
    });
    const none = fakeCli({ client });
    assert.equal(await none.run(["vm", "set", "web"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(
      none.stderr(),
      /needs at least one of --cpus, --memory, --disk, --egress\nhint: e\.g\. banger vm set web/,
    );
    const some = fakeCli({ client });
    assert.equal(await some.run(["vm", "set", "web", "--memory", "2048", "--disk", "20g", "--json"]), 0);
    assert.deepEqual(client.callsOf("vm.set")[0]!.params, { name: "web", memoryMib: 2048, diskGib: 20 });
    assert.equal(JSON.parse(some.stdout()).memoryMib, 2048);
  });
});

describe("vm health and doctor", () => {
  it("an unhealthy VM prints its checks and exits with GUEST_UNREACHABLE's status", async () => {
    const cli = fakeCli({
      client: new FakeDaemonClient({
        "vm.health": () => ({
          name: "web",
          state: "running",
          healthy: false,
          checks: [
            { name: "vmm", ok: true, detail: "pid 4242" },
            { name: "ssh-exec", ok: false, detail: "timed out" },
          ],
        }),
      }),
    });
    assert.equal(await cli.run(["vm", "health", "web"]), exitStatusFor[ErrorCode.GUEST_UNREACHABLE]);
    assert.match(cli.stdout(), /ssh-exec\s+fail\s+timed out/);
    assert.match(cli.stderr(), /VM 'web' is not healthy: ssh-exec failed \(ssh-exec: timed out\)/);
  });

  it("doctor exits 1 when a check fails, and lists the fixes", async () => {
    const cli = fakeCli({
      client: new FakeDaemonClient({
        "daemon.doctor": () => ({
          checks: [
            { name: "kvm", status: "warn", detail: "no /dev/kvm", hint: "QEMU runs under TCG" },
            { name: "qemu", status: "fail", detail: "not found", hint: "apt-get install qemu-system-x86" },
          ],
        }),
      }),
    });
    assert.equal(await cli.run(["doctor"]), 1);
    assert.match(
      cli.stdout(),
      /To fix:\n {2}kvm: QEMU runs under TCG\n {2}qemu: apt-get install qemu-system-x86\n$/,
    );
  });
});

describe("daemon status", () => {
  it("says the daemon is not running and exits with DAEMON_UNAVAILABLE's status", async () => {
    const cli = fakeCli({
      client: async () => {
        throw new BangerError(ErrorCode.DAEMON_UNAVAILABLE, "bangerd is not running");
      },
    });
    assert.equal(await cli.run(["daemon", "status", "--json"]), exitStatusFor[ErrorCode.DAEMON_UNAVAILABLE]);
    assert.equal(JSON.parse(cli.stdout()).running, false);
  });
});

describe("vm ssh", () => {
  const config = {
    user: "root",
    host: "172.30.0.2",
    identityFile: "/state/ssh/id_ed25519",
    knownHostsFile: "/state/vms/0123/known_hosts",
  };

  it("runs ssh on the terminal through vm proxy, passing a command word for word, and exits with its status", async () => {
    const cli = fakeCli({
      client: new FakeDaemonClient({ "vm.ssh-config": () => config }),
      interactiveStatus: 3,
    });
    assert.equal(await cli.run(["vm", "ssh", "web", "--", "printf", "%s|", "a b", "$HOME"]), 3);
    assert.equal(cli.interactive.length, 1);
    const argv = cli.interactive[0]!;
    assert.equal(argv[0], "ssh");
    assert.ok(argv.includes("ProxyCommand='/opt/banger/bin/banger' 'vm' 'proxy' 'web' '22'"));
    assert.deepEqual(argv.slice(-3), ["root@172.30.0.2", "--", "'printf' '%s|' 'a b' '$HOME'"]);
    assert.ok(!argv.includes("-t"), "no PTY asked for when stdin is not a terminal");
  });
});

const tick = () => new Promise((resolve) => setImmediate(resolve));
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await tick();
}

describe("vm exec", () => {
  it("sends argv, env, workdir, user and timeout as given, and exits with the command's status", async () => {
    const client = new FakeDaemonClient({
      "vm.exec": (_params, call) => {
        call.options.onStream?.("stdout", Buffer.from("out\n"));
        call.options.onStream?.("stderr", Buffer.from("err\n"));
        return { exitCode: 7, signal: null };
      },
    });
    const dir = mkdtempSync(join(tmpdir(), "bgt-env-"));
    writeFileSync(join(dir, "env"), "# comment\n\nFROM_FILE=1\r\nHOME_HERE\n");
    const cli = fakeCli({ client, env: { HOME_HERE: "/home/me", ONLY_HERE: "x" } });
    const status = await cli.run([
      "vm",
      "exec",
      "-e",
      "A=1 2",
      "-e",
      "ONLY_HERE",
      "-e",
      "UNSET",
      "--env-file",
      join(dir, "env"),
      "-w",
      "/srv",
      "-u",
      "www-data",
      "--timeout",
      "1.5m",
      "web",
      "--",
      "printf",
      "%s|",
      "a b",
      "$HOME",
    ]);
    rmSync(dir, { recursive: true });
    assert.equal(status, 7);
    assert.equal(cli.stdout(), "out\n");
    assert.equal(cli.stderr(), "err\n");
    assert.deepEqual(client.callsOf("vm.exec")[0]!.params, {
      name: "web",
      argv: ["printf", "%s|", "a b", "$HOME"],
      env: ["FROM_FILE=1", "HOME_HERE=/home/me", "A=1 2", "ONLY_HERE=x"],
      cwd: "/srv",
      user: "www-data",
      timeoutMs: 90_000,
    });
  });

  it("maps a signal death to 128+N and a timeout to 124", async () => {
    for (const [reply, expected, says] of [
      [{ exitCode: null, signal: "SIGKILL" }, 137, ""],
      [{ exitCode: null, signal: "SIGTERM" }, 143, ""],
      [{ exitCode: 0, signal: null }, 0, ""],
      [{ exitCode: 255, signal: null }, 255, ""],
      [{ exitCode: null, signal: "SIGKILL", timedOut: true }, 124, "ran out of time"],
    ] as const) {
      const cli = fakeCli({ client: new FakeDaemonClient({ "vm.exec": () => reply }) });
      assert.equal(await cli.run(["vm", "exec", "--timeout", "2s", "web", "--", "sleep", "9"]), expected);
      assert.match(cli.stderr(), new RegExp(says));
    }
  });

  it("reads stdin only with -i, passing it through to its end", async () => {
    const client = new FakeDaemonClient({
      "vm.exec": async (params, call) => {
        if (params.stdin) await until(() => call.ended.has("stdin"));
        return { exitCode: 0, signal: null };
      },
    });
    const without = fakeCli({ client });
    without.stdin.end("ignored\n");
    assert.equal(await without.run(["vm", "exec", "web", "--", "cat"]), 0);
    assert.equal(client.callsOf("vm.exec")[0]!.written.stdin, undefined, "stdin is not read without -i");
    assert.equal((client.callsOf("vm.exec")[0]!.params as { stdin?: boolean }).stdin, undefined);
    const piped = fakeCli({ client });
    piped.stdin.end("line 1\nline 2\n");
    assert.equal(await piped.run(["vm", "exec", "-i", "web", "--", "cat"]), 0);
    const call = client.callsOf("vm.exec")[1]!;
    assert.equal(Buffer.concat(call.written.stdin ?? []).toString(), "line 1\nline 2\n");
    assert.ok(call.ended.has("stdin"));
  });

  it("refuses -t when stdin is not a terminal, with a hint, before asking the daemon", async () => {
    const client = new FakeDaemonClient({});
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "exec", "-it", "web", "--", "bash"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(cli.stderr(), /-t needs a terminal on stdin, and stdin is not one\nhint: drop -t/);
    assert.equal(client.calls.length, 0);
  });

  it("with -it: asks for a PTY of the terminal's size, makes the terminal raw, follows its size, restores it", async () => {
    const client = new FakeDaemonClient({
      "vm.exec": async (_params, call) => {
        await until(() => call.resizes.length > 0);
        return { exitCode: 0, signal: null };
      },
    });
    const cli = fakeCli({ client, stdinTty: true, stdoutTty: true, columns: 132, rows: 43 });
    const status = cli.run(["vm", "exec", "-it", "web", "--", "bash"]);
    await until(() => client.callsOf("vm.exec").length > 0);
    cli.resize(100, 30);
    assert.equal(await status, 0);
    const call = client.callsOf("vm.exec")[0]!;
    assert.deepEqual((call.params as { tty?: unknown }).tty, { cols: 132, rows: 43 });
    assert.deepEqual(call.resizes, [{ cols: 100, rows: 30 }]);
    assert.deepEqual(cli.rawModes, [true, false]);
  });

  it("without a PTY: Ctrl-C sends SIGINT, a second Ctrl-C kills; SIGTERM and SIGHUP are forwarded", async () => {
    const client = new FakeDaemonClient({
      "vm.exec": async (_params, call) => {
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "exec cancelled");
      },
    });
    const cli = fakeCli({ client });
    const status = cli.run(["vm", "exec", "web", "--", "sleep", "300"]);
    await until(() => client.callsOf("vm.exec").length > 0);
    for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) cli.signal(signal);
    await tick();
    const call = client.callsOf("vm.exec")[0]!;
    assert.deepEqual(call.signals, ["SIGTERM", "SIGINT", "SIGHUP"]);
    assert.equal(call.cancelled, false, "one Ctrl-C only interrupts");
    cli.signal("SIGINT");
    assert.equal(await status, exitStatusFor[ErrorCode.CANCELLED]);
    assert.ok(call.cancelled, "the second Ctrl-C kills");
    assert.match(cli.stderr(), /the command was killed \(Ctrl-C twice\)/);
  });

  it("stdout's reader going away cancels the command and ends quietly", async () => {
    const client = new FakeDaemonClient({
      "vm.exec": async (_params, call) => {
        call.options.onStream?.("stdout", Buffer.from("1\n"));
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "exec cancelled");
      },
    });
    const cli = fakeCli({ client });
    const status = cli.run(["vm", "exec", "web", "--", "yes"]);
    await until(() => cli.stdout() !== "");
    cli.closeOutput();
    assert.equal(await status, 141);
    assert.equal(cli.stderr(), "", "no error, no stack trace");
    assert.ok(client.callsOf("vm.exec")[0]!.cancelled);
  });

  it("a stopped VM's refusal reaches the user with its code", async () => {
    const cli = fakeCli({
      client: new FakeDaemonClient({
        "vm.exec": () => {
          throw new BangerError(ErrorCode.BAD_STATE, "VM 'web' is stopped; exec needs it running");
        },
      }),
    });
    assert.equal(await cli.run(["vm", "exec", "web", "--", "true"]), exitStatusFor[ErrorCode.BAD_STATE]);
    assert.match(cli.stderr(), /VM 'web' is stopped/);
  });
});

describe("vm run", () => {
  const runClient = (exec: NonNullable<FakeHandlers["vm.exec"]>, vms: VmInfo[] = []) =>
    new FakeDaemonClient({
      "vm.list": () => ({ vms }),
      "vm.create.begin": () => ({ operation: operation({ vmName: "vm-1a2b3c" }) }),
      "vm.create.status": () => ({
        operation: operation({
          state: "succeeded",
          step: "vm.ready",
          message: "vm-1a2b3c is running (172.30.0.2)",
        }),
        vm: vmInfo({ name: "vm-1a2b3c" }),
      }),
      "vm.exec": exec,
      "vm.delete": (params) => ({ name: params.name, deleted: true }),
    });

  it("creates a new VM, runs the command after -- in it, and with --rm deletes that VM", async () => {
    const client = runClient(() => ({ exitCode: 3, signal: null }));
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "run", "--rm", "--memory", "1g", "--", "sh", "-c", "exit 3"]), 3);
    assert.deepEqual(client.callsOf("vm.create.begin")[0]!.params, { memoryMib: 1024 });
    assert.deepEqual(client.callsOf("vm.exec")[0]!.params, {
      name: "vm-1a2b3c",
      argv: ["sh", "-c", "exit 3"],
      entrypoint: true,
    });
    assert.deepEqual(client.callsOf("vm.delete")[0]!.params, { name: "vm-1a2b3c", force: true });
  });

  it("passes --publish (repeated) and --egress on to the VM it creates", async () => {
    const client = runClient(() => ({ exitCode: 0, signal: null }));
    const cli = fakeCli({ client });
    const argv = [
      "vm",
      "run",
      "-p",
      "8080:80",
      "--publish",
      "127.0.0.1:5353:53/udp",
      "--egress",
      "deny",
      "--",
      "true",
    ];
    assert.equal(await cli.run(argv), 0);
    assert.deepEqual(client.callsOf("vm.create.begin")[0]!.params, {
      publish: ["8080:80", "127.0.0.1:5353:53/udp"],
      egress: "deny",
    });
  });

  it("follows docker run: no command asks for the image's own, and vm exec never uses ENTRYPOINT", async () => {
    const client = runClient(() => ({ exitCode: 0, signal: null }));
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "run", "--rm", "--image", "python:3.12-slim"]), 0);
    assert.deepEqual(client.callsOf("vm.exec")[0]!.params, { name: "vm-1a2b3c", argv: [], entrypoint: true });
    const exec = fakeCli({ client: new FakeDaemonClient({}) });
    assert.equal(await exec.run(["vm", "exec", "web"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(exec.stderr(), /missing required argument 'command'|no command given/);
  });

  it("refuses an existing --name with NAME_TAKEN and the vm exec line, creating and deleting nothing", async () => {
    const client = runClient(() => ({ exitCode: 0, signal: null }), [vmInfo({ name: "web" })]);
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "run", "--rm", "--name", "web", "--", "uname", "-a"]),
      exitStatusFor[ErrorCode.NAME_TAKEN],
    );
    assert.match(
      cli.stderr(),
      /a VM named 'web' exists; vm run always creates a new VM\nhint: to run in it: banger vm exec web -- uname -a/,
    );
    assert.equal(client.callsOf("vm.create.begin").length, 0);
    assert.equal(client.callsOf("vm.delete").length, 0);
  });

  it("a VM name before -- gets the vm exec hint instead of becoming the command; other words are refused", async () => {
    const client = runClient(() => ({ exitCode: 0, signal: null }), [vmInfo({ name: "web" })]);
    const named = fakeCli({ client });
    assert.equal(
      await named.run(["vm", "run", "web", "--", "uname", "-a"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(
      named.stderr(),
      /'web' is an existing VM; vm run always creates a new one\nhint: to run in it: banger vm exec web -- uname -a/,
    );
    const stray = fakeCli({ client });
    assert.equal(
      await stray.run(["vm", "run", "wbe", "--", "true"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(stray.stderr(), /unexpected 'wbe' before --/);
    assert.equal(client.callsOf("vm.create.begin").length, 0);
  });

  it("SIGTERM reaches the command and --rm still deletes the VM", async () => {
    const client = runClient(async (_params, call) => {
      await until(() => call.signals.length > 0);
      return { exitCode: null, signal: call.signals[0]! };
    });
    const cli = fakeCli({ client });
    const status = cli.run(["vm", "run", "--rm", "--", "sleep", "300"]);
    await until(() => client.callsOf("vm.exec").length > 0);
    cli.signal("SIGTERM");
    assert.equal(await status, 143);
    assert.deepEqual(client.callsOf("vm.delete")[0]!.params, { name: "vm-1a2b3c", force: true });
  });

  it("refuses --rm with -d", async () => {
    const client = runClient(() => ({ exitCode: null, signal: null }));
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "run", "--rm", "-d", "--", "sleep", "1"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.equal(client.calls.length, 0);
  });
});

describe("the command tree", () => {
  it("suggests a command for a typo and exits 2", async () => {
    const cli = fakeCli({ client: new FakeDaemonClient({}) });
    assert.equal(await cli.run(["vm", "lst"]), 2);
    assert.match(cli.stderr(), /^banger: unknown command 'lst'\n\(Did you mean one of list, ls\?\)/);
  });

  it("every command's --help has examples", async () => {
    for (const argv of [
      ["vm", "create"],
      ["vm", "run"],
      ["vm", "ssh"],
      ["daemon", "logs"],
      ["image", "build-default"],
      ["doctor"],
    ]) {
      const cli = fakeCli({ client: new FakeDaemonClient({}) });
      assert.equal(await cli.run([...argv, "--help"]), 0);
      assert.match(cli.stdout(), /\nExamples:\n {2}banger /, argv.join(" "));
    }
  });
});

describe("docker habits", () => {
  const fleet = () => [
    vmInfo({ name: "web" }),
    vmInfo({ name: "web-2", state: "stopped", vmm: "firecracker" }),
    vmInfo({ name: "db", state: "stopped" }),
    vmInfo({ name: "new", state: "created" }),
    vmInfo({ name: "frozen", state: "paused" }),
  ];

  it("vm ls -q prints names only; --filter narrows by state, name, image and vmm", async () => {
    const client = new FakeDaemonClient({ "vm.list": () => ({ vms: fleet() }) });
    const quiet = fakeCli({ client });
    assert.equal(
      await quiet.run(["vm", "ls", "-q", "--filter", "state=stopped", "--filter", "state=created"]),
      0,
    );
    assert.equal(quiet.stdout(), "web-2\ndb\nnew\n");
    const both = fakeCli({ client });
    assert.equal(
      await both.run(["vm", "ls", "-q", "--filter", "name=web", "--filter", "vmm=firecracker"]),
      0,
    );
    assert.equal(both.stdout(), "web-2\n");
    const bad = fakeCli({ client });
    assert.equal(
      await bad.run(["vm", "ls", "--filter", "colour=red"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(
      bad.stderr(),
      /--filter 'colour=red' is not one of state=, name=, image=, vmm=\nhint: e\.g\. --filter state=running/,
    );
  });

  it("vm prune deletes the VMs that are not running, asking on a terminal, refusing without one", async () => {
    const client = () =>
      new FakeDaemonClient({
        "vm.list": () => ({ vms: fleet() }),
        "vm.delete": (p) => ({ name: p.name, deleted: true }),
      });
    const forced = client();
    const cli = fakeCli({ client: forced });
    assert.equal(await cli.run(["vm", "prune", "--force"]), 0);
    assert.equal(cli.stdout(), "web-2\ndb\nnew\n");
    assert.deepEqual(
      forced.callsOf("vm.delete").map((call) => call.params),
      [{ name: "web-2" }, { name: "db" }, { name: "new" }],
      "running and paused VMs are kept",
    );

    const piped = client();
    const noTerminal = fakeCli({ client: piped });
    assert.equal(await noTerminal.run(["vm", "prune"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(noTerminal.stderr(), /stdin is not a terminal\nhint: add --force/);
    assert.equal(piped.callsOf("vm.delete").length, 0);

    for (const [answer, deletes] of [
      ["n\n", 0],
      ["y\n", 3],
    ] as const) {
      const asked = client();
      const terminal = fakeCli({ client: asked, stdinTty: true });
      const status = terminal.run(["vm", "prune"]);
      while (!terminal.stderr().includes("[y/N]")) await new Promise((resolve) => setImmediate(resolve));
      terminal.stdin.write(answer);
      assert.equal(await status, 0);
      assert.match(terminal.stderr(), /delete 3 stopped VM\(s\): web-2, db, new\? \[y\/N\] /);
      assert.equal(asked.callsOf("vm.delete").length, deletes);
    }
  });

  it("vm delete asks the daemon to refuse a running VM unless --force", async () => {
    const client = new FakeDaemonClient({
      "vm.delete": (params) => {
        if (!params.force)
          throw new BangerError(
            ErrorCode.BAD_STATE,
            `VM '${params.name}' is running; deleting it needs --force`,
          );
        return { name: params.name, deleted: true };
      },
    });
    const plain = fakeCli({ client });
    assert.equal(await plain.run(["vm", "rm", "web"]), exitStatusFor[ErrorCode.BAD_STATE]);
    assert.match(plain.stderr(), /needs --force/);
    const forced = fakeCli({ client });
    assert.equal(await forced.run(["vm", "rm", "-f", "web"]), 0);
    assert.deepEqual(
      client.callsOf("vm.delete").map((call) => call.params),
      [
        { name: "web", force: false },
        { name: "web", force: true },
      ],
    );
  });

  it("an unknown VM name gets a 'did you mean' hint naming the closest VM", async () => {
    const client = new FakeDaemonClient({
      "vm.list": () => ({ vms: fleet() }),
      "vm.show": (params) => {
        throw notFound(params.name);
      },
    });
    const typo = fakeCli({ client });
    assert.equal(await typo.run(["vm", "show", "wbe"]), exitStatusFor[ErrorCode.VM_NOT_FOUND]);
    assert.match(typo.stderr(), /no VM named 'wbe'\nhint: did you mean 'web'\?/);
    const far = fakeCli({ client });
    assert.equal(await far.run(["vm", "show", "zzzzzz"]), exitStatusFor[ErrorCode.VM_NOT_FOUND]);
    assert.match(far.stderr(), /hint: run `banger vm list`/);
  });
});

describe("completion", () => {
  it("prints a bash script that completes nouns, verbs, flags and VM names in bash", async () => {
    const cli = fakeCli({ client: new FakeDaemonClient({}) });
    assert.equal(await cli.run(["completion", "bash"]), 0);
    const complete = (words: string[]) => {
      const probe = spawnSync(
        "bash",
        [
          "--norc",
          "--noprofile",
          "-c",
          `source <(printf '%s' "$SCRIPT"); banger() { printf 'web\\nweb-2\\ndb\\n'; }; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _banger; printf '%s\\n' "\${COMPREPLY[@]}"; complete -p banger`,
        ],
        { env: { PATH: process.env.PATH, SCRIPT: cli.stdout() }, encoding: "utf8" },
      );
      assert.equal(probe.status, 0, probe.stderr);
      assert.equal(probe.stderr, "");
      return probe.stdout.trim().split("\n");
    };
    assert.deepEqual(complete(["banger", "vm", "st"]), [
      "start",
      "stop",
      "stats",
      "complete -o default -F _banger banger",
    ]);
    assert.deepEqual(complete(["banger", "vm", "start", "w"]).slice(0, 2), ["web", "web-2"]);
    assert.deepEqual(complete(["banger", "vm", "ls", "--fi"])[0], "--filter");
    assert.ok(complete(["banger", ""]).includes("completion"));
  });

  it("prints zsh and fish scripts, and refuses another shell", async () => {
    for (const shell of ["zsh", "fish"]) {
      const cli = fakeCli({ client: new FakeDaemonClient({}) });
      assert.equal(await cli.run(["completion", shell]), 0);
      assert.match(cli.stdout(), /vm ls -q/);
    }
    const cli = fakeCli({ client: new FakeDaemonClient({}) });
    assert.equal(await cli.run(["completion", "tcsh"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(cli.stderr(), /no completion for shell 'tcsh'\nhint: one of: bash, zsh, fish/);
  });
});

describe("image commands", () => {
  it("image rm --force names the VMs it deleted; login reads the password from stdin only when asked", async () => {
    const client = new FakeDaemonClient({
      "image.delete": (params) => ({ name: params.name, deleted: true, vmsDeleted: ["old"] }),
      "image.login": (params) => ({ registry: params.registry }),
    });
    const rm = fakeCli({ client });
    assert.equal(await rm.run(["image", "rm", "--force", "app"]), 0);
    assert.equal(rm.stdout(), "app\n");
    assert.equal(rm.stderr(), "deleted VMs: old\n");
    assert.deepEqual(client.callsOf("image.delete")[0]!.params, { name: "app", force: true });

    const login = fakeCli({ client });
    login.stdin.end("s3cret\n");
    assert.equal(await login.run(["image", "login", "ghcr.io", "-u", "me", "--password-stdin"]), 0);
    assert.deepEqual(client.callsOf("image.login")[0]!.params, {
      registry: "ghcr.io",
      username: "me",
      password: "s3cret",
    });
    assert.equal(login.stdout(), "Login Succeeded (ghcr.io)\n");

    const missing = fakeCli({ client });
    assert.equal(
      await missing.run(["image", "login", "ghcr.io", "-u", "me"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(
      missing.stderr(),
      /needs --username and a password\nhint: pass -u USER and --password-stdin/,
    );
  });

  it("image build-default shows each step with its time and cancels on Ctrl-C", async () => {
    const client = new FakeDaemonClient({
      "image.build-default": async (_params, call) => {
        call.options.onProgress?.({
          id: call.id,
          step: "image.rootfs",
          message: "debootstrap",
          status: "start",
        });
        call.options.onProgress?.({
          id: call.id,
          step: "image.rootfs",
          message: "debootstrap",
          status: "done",
        });
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "image build during step 'kernel' cancelled");
      },
    });
    const cli = fakeCli({ client });
    const status = cli.run(["image", "build-default"]);
    await until(() => cli.stderr().includes("✓"));
    cli.signal("SIGINT");
    assert.equal(await status, exitStatusFor[ErrorCode.CANCELLED]);
    assert.match(cli.stderr(), /… debootstrap\n✓ debootstrap \[\d+ ms\]\n/);
    assert.match(cli.stderr(), /banger: image build during step 'kernel' cancelled/);
  });
});
