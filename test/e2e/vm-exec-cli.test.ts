/**
 * The exec surface as a terminal user drives it, on a real guest (QEMU):
 * a PTY through a pseudo-terminal (its size, a window change, ^C through the
 * PTY), Ctrl-C, SIGTERM and a vanished CLI each leaving no guest process,
 * --rm deleting on SIGTERM, EPIPE, --timeout, exit statuses, env, workdir,
 * user and stdin, and `vm run --name EXISTING` refused. The CLI's own logic
 * is unit-tested with a fake daemon (test/unit/cli-commands.test.ts); these
 * cases need the real guest, terminal and signals.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { bangerBin, TEST_IMAGE_ENV } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason, IMAGE_CACHE } from "../helpers/e2e.ts";
import { vmmConfig } from "./vm-suite.ts";

const VM = "term";

async function until<T>(
  what: string,
  deadlineMs: number,
  probe: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface Running {
  child: ChildProcessWithoutNullStreams;
  output(): string;
  exited: Promise<number | null>;
}

describe("vm exec and vm run from a terminal (qemu)", { skip: e2eSkipReason() }, () => {
  let env: E2eEnv;
  const cliEnv = () => ({
    ...TEST_IMAGE_ENV,
    ...process.env,
    BANGER_HOME: env.home,
    BANGER_NETNS: env.netns,
    BANGER_IMAGE_CACHE: IMAGE_CACHE,
  });
  const start = (argv: readonly string[]): Running => {
    const child = spawn(argv[0]!, argv.slice(1), { env: cliEnv(), stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    return {
      child,
      output: () => output,
      exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
    };
  };
  const guestProcesses = async (pattern: string) => {
    const probe = await env.banger(["vm", "exec", VM, "--", "pgrep", "-f", pattern]);
    return probe.stdout.trim();
  };
  const noGuestProcess = (pattern: string) =>
    until(`no '${pattern}' left in the guest`, 20_000, async () =>
      (await guestProcesses(pattern)) === "" ? true : undefined,
    );

  before(async () => {
    env = createE2eEnv({ name: "term", config: vmmConfig("qemu") });
    const created = await env.banger(["vm", "create", VM]);
    assert.equal(created.code, 0, created.stderr);
  });
  after(async () => {
    await env?.dispose();
  });

  it("runs argv word for word with env, workdir, user and stdin (-i), and returns 0..255 and 128+N", async () => {
    const run = await env.banger(
      [
        "vm",
        "exec",
        "-i",
        "-e",
        "GREETING=a b",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        VM,
        "--",
        "sh",
        "-c",
        'printf "%s|%s|%s|" "$GREETING" "$(pwd)" "$(id -un)"; cat',
      ],
      { input: "from stdin\n" },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "a b|/tmp|nobody|from stdin\n");
    for (const [script, status] of [
      ["exit 0", 0],
      ["exit 1", 1],
      ["exit 255", 255],
      ["kill -TERM $$", 143],
      ["kill -KILL $$", 137],
    ] as const) {
      const exited = await env.banger(["vm", "exec", VM, "--", "sh", "-c", script]);
      assert.equal(exited.code, status, `${script}: ${exited.stderr}`);
    }
    const noStdin = await env.banger(["vm", "exec", VM, "--", "cat"], { input: "not read\n" });
    assert.equal(noStdin.code, 0);
    assert.equal(noStdin.stdout, "", "stdin is read only with -i");
  });

  it("gives -it a PTY of the terminal's size, follows a window change, and passes ^C through the PTY", async () => {
    const fifo = join(env.home, "resize.fifo");
    execFileSync("mkfifo", [fifo]);
    const guest =
      'stty size; trap "stty size" WINCH; trap "echo got-int; exit 3" INT; echo ready; while :; do sleep 0.2; done';
    const inner = [
      "stty cols 100 rows 30",
      "T=$(tty)",
      `(read _ < ${fifo}; stty -F "$T" cols 120 rows 40) &`,
      `exec ${bangerBin} vm exec -it ${VM} -- bash -c '${guest}'`,
    ].join("\n");
    const term = start(["script", "-qfec", inner, "/dev/null"]);
    await until("the guest's first size", 30_000, () => (/ready/.test(term.output()) ? true : undefined));
    assert.match(term.output(), /30 100/);
    const writer = spawn("sh", ["-c", `echo go > ${fifo}`]);
    await new Promise((resolve) => writer.once("exit", resolve));
    await until("the guest's new size", 30_000, () => (/40 120/.test(term.output()) ? true : undefined));
    term.child.stdin.write("\x03");
    assert.equal(await term.exited, 3, term.output());
    assert.match(term.output(), /got-int/);
  });

  it("refuses -t when stdin is not a terminal", async () => {
    const refused = await env.banger(["vm", "exec", "-t", VM, "--", "true"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /-t needs a terminal/);
  });

  for (const [what, act, status] of [
    ["Ctrl-C", (child: ChildProcessWithoutNullStreams) => child.kill("SIGINT"), 130],
    ["SIGTERM", (child: ChildProcessWithoutNullStreams) => child.kill("SIGTERM"), 143],
    ["a vanished CLI (SIGKILL)", (child: ChildProcessWithoutNullStreams) => child.kill("SIGKILL"), null],
  ] as const) {
    it(`${what} leaves no guest process behind`, async () => {
      const marker = `sleep 3${String(status ?? 9).padStart(2, "0")}`;
      const running = start([bangerBin, "vm", "exec", VM, "--", "sh", "-c", `echo started; exec ${marker}`]);
      await until("the command to start", 30_000, () =>
        /started/.test(running.output()) ? true : undefined,
      );
      act(running.child);
      assert.equal(await running.exited, status, running.output());
      await noGuestProcess(marker);
    });
  }

  it("stdout's reader going away (EPIPE) ends the CLI quietly and the command with it", async () => {
    const running = start([bangerBin, "vm", "exec", VM, "--", "sh", "-c", "exec yes banger-epipe"]);
    await until("output", 30_000, () => (running.output().split("\n").length > 2 ? true : undefined));
    running.child.stdout.destroy();
    const code = await running.exited;
    assert.ok(code === 141 || code === 0, `exit ${code}`);
    assert.doesNotMatch(running.output(), /Error|at .*\.(ts|mjs):\d+/);
    await noGuestProcess("yes banger-epipe");
  });

  it("--timeout kills the command and exits 124", async () => {
    const timed = await env.banger(["vm", "exec", "--timeout", "2s", VM, "--", "sleep", "317"]);
    assert.equal(timed.code, 124, timed.stderr);
    assert.match(timed.stderr, /ran out of time/);
    await noGuestProcess("sleep 317");
  });

  it("vm run refuses an existing --name with the vm exec line, and --rm deletes on SIGTERM", async () => {
    const refused = await env.banger(["vm", "run", "--rm", "--name", VM, "--", "true"]);
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, new RegExp(`hint: to run in it: banger vm exec ${VM} -- true`));
    assert.equal((await env.banger(["vm", "show", VM])).code, 0, "vm run --rm left the VM it did not create");

    const running = start([
      bangerBin,
      "vm",
      "run",
      "--rm",
      "--name",
      "gone",
      "--",
      "sh",
      "-c",
      "echo started; exec sleep 318",
    ]);
    await until("the new VM's command", 240_000, () => (/started/.test(running.output()) ? true : undefined));
    running.child.kill("SIGTERM");
    assert.equal(await running.exited, 143, running.output());
    assert.equal((await env.banger(["vm", "show", "gone"])).code, 4, "the VM is deleted");
  });
});
