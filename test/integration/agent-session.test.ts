/**
 * The guest agent binary (dist/banger-agent, built by scripts/build-agent)
 * run ON THE HOST over a socketpair (`--fd 3`), driven by the daemon's real
 * session client: exec with env, cwd, user, PTY and resize, signals to the
 * process group, every exit status, stdin, credit backpressure, concurrent
 * execs, file streams, and hostile frames that must not crash either side.
 * Needs root (exec as another user).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex, PassThrough, Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { encodeFrame, FrameType, STREAM_WINDOW, Stream, u32 } from "../../src/core/agent/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { agentBinaryPath } from "../../src/sys/agent/index.ts";
import { type AgentSession, openAgentSession } from "../../src/sys/agent/session.ts";

const AGENT = agentBinaryPath();

interface RunningAgent {
  child: ChildProcess;
  socket: Duplex;
  session: AgentSession;
  exited: Promise<number | null>;
}

async function startAgent(): Promise<RunningAgent> {
  const child = spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const socket = child.stdio[3] as Duplex;
  const session = await openAgentSession(socket, AbortSignal.timeout(10_000));
  return { child, socket, session, exited };
}

function collector() {
  const chunks: Buffer[] = [];
  return {
    on: (chunk: Buffer) => {
      chunks.push(chunk);
    },
    text: () => Buffer.concat(chunks).toString("utf8"),
    bytes: () => Buffer.concat(chunks),
  };
}

async function run(session: AgentSession, argv: string[], extra: Record<string, unknown> = {}) {
  const out = collector();
  const err = collector();
  const result = await session.exec({ argv, onStdout: out.on, onStderr: err.on, ...extra }).done;
  return { ...result, stdout: out.text(), stderr: err.text() };
}

function processGone(pid: number): boolean {
  return (
    !existsSync(`/proc/${pid}`) ||
    readFileSyncSafe(`/proc/${pid}/stat`).split(") ")[1]?.startsWith("Z") === true
  );
}

function readFileSyncSafe(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`never happened: ${what}`);
}

describe("guest agent over a socketpair", {
  skip: !existsSync(AGENT) && "dist/banger-agent is not built",
}, () => {
  let agent: RunningAgent;
  let dir: string;
  before(async () => {
    agent = await startAgent();
    dir = await mkdtemp(join(tmpdir(), "banger-agent-"));
  });
  after(async () => {
    agent.session.close();
    agent.child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  it("answers HELLO with its version", () => {
    assert.match(agent.session.version, /^[0-9a-f]{12}$|^dev$/);
  });

  it("runs an argv as given, without a shell", async () => {
    const r = await run(agent.session, ["printf", "%s|", "a b", "$HOME", "*"]);
    assert.deepEqual(r, { exitCode: 0, signal: null, stdout: "a b|$HOME|*|", stderr: "" });
  });

  it("passes env, cwd and user", async () => {
    const r = await run(agent.session, ["sh", "-c", 'echo "$FOO|$(pwd)|$(id -u)|$(id -g)|$USER|$HOME"'], {
      env: ["FOO=bar baz"],
      cwd: "/tmp",
      user: "nobody",
    });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, "bar baz|/tmp|65534|65534|nobody|/nonexistent\n");
    // A uid the guest has no entry for runs with gid 0 and HOME=/, as docker has it.
    const byUid = await run(agent.session, ["sh", "-c", 'echo "$(id -u) $(id -g) $HOME"'], { user: "4242" });
    assert.equal(byUid.stdout, "4242 0 /\n");
  });

  it("honours user:group (names or numbers); a group given is the only group", async () => {
    const groups = (user: string) =>
      run(agent.session, ["sh", "-c", 'echo "$(id -u) $(id -g) $(id -G) $USER"'], { user });
    assert.equal((await groups("nobody:nogroup")).stdout, "65534 65534 65534 nobody\n");
    assert.equal((await groups("4242:4343")).stdout, "4242 4343 4343 4242\n");
    assert.equal((await groups("root:65534")).stdout, "0 65534 65534 root\n");
    assert.equal((await groups("0:daemon")).stdout, "0 1 1 root\n");
    // No group: the user's primary and supplementary groups from /etc/group.
    const own = await groups("root");
    assert.match(own.stdout, /^0 0 0( \d+)* root\n$/);
  });

  it("refuses a user or group the guest does not have, before anything runs", async () => {
    for (const [user, message] of [
      [
        "no-such-user-banger",
        /unknown user 'no-such-user-banger': the guest's \/etc\/passwd has no such user/,
      ],
      [
        "nobody:no-such-group-banger",
        /unknown group 'no-such-group-banger': the guest's \/etc\/group has no such group/,
      ],
    ] as const) {
      await assert.rejects(
        run(agent.session, ["touch", "/tmp/banger-never-made"], { user }),
        (error: BangerError) => {
          assert.equal(error.code, ErrorCode.INVALID_PARAMS);
          assert.match(error.message, message);
          assert.match(error.hint ?? "", /numbers/);
          return true;
        },
      );
    }
    assert.equal(existsSync("/tmp/banger-never-made"), false);
  });

  it("reports every exit status 0..255 and death by a signal", async () => {
    for (let base = 0; base < 256; base += 32) {
      const codes = Array.from({ length: 32 }, (_, i) => base + i);
      const results = await Promise.all(
        codes.map((code) => run(agent.session, ["sh", "-c", `exit ${code}`])),
      );
      assert.deepEqual(
        results.map((r) => r.exitCode),
        codes,
      );
    }
    const killed = await run(agent.session, ["sh", "-c", "kill -TERM $$"]);
    assert.deepEqual([killed.exitCode, killed.signal], [null, "SIGTERM"]);
  });

  it("leaves no descriptor of its own open in what it runs (the host stream stays the agent's)", async () => {
    const r = await run(agent.session, ["ls", "/proc/self/fd"]);
    assert.equal(r.exitCode, 0);
    // stdin, stdout, stderr, and the directory ls is reading.
    assert.deepEqual(r.stdout.trim().split(/\s+/).map(Number).sort(), [0, 1, 2, 3]);
    const write = await run(agent.session, ["sh", "-c", "echo hello >&3"]);
    assert.notEqual(write.exitCode, 0);
  });

  it("fails like a shell: 127 for a missing command, 126 for a bad cwd", async () => {
    const missing = await run(agent.session, ["no-such-command-banger"]);
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /exec no-such-command-banger: No such file or directory/);
    const cwd = await run(agent.session, ["true"], { cwd: "/no/such/dir" });
    assert.equal(cwd.exitCode, 126);
    assert.match(cwd.stderr, /chdir \/no\/such\/dir/);
  });

  it("gives a PTY its size and passes window changes", async () => {
    const out = collector();
    const stdin = new PassThrough();
    const proc = agent.session.exec({
      argv: ["sh", "-c", "stty size; read line; stty size"],
      tty: { cols: 80, rows: 24 },
      stdin,
      onStdout: out.on,
    });
    await until(() => out.text().includes("24 80"), "the first stty size");
    proc.resize(132, 50);
    stdin.write("go\n");
    const result = await proc.done;
    assert.equal(result.exitCode, 0);
    assert.match(out.text(), /24 80\r\n.*go\r\n50 132\r\n/s);
  });

  it("streams stdin to the process and its output back, byte for byte", async () => {
    const input = randomBytes(3 * 1024 * 1024 + 17);
    const r = await agent.session.exec({
      argv: ["cat"],
      stdin: Readable.from([input]),
      onStdout: () => undefined,
    }).done;
    assert.equal(r.exitCode, 0);
    const echoed = collector();
    await agent.session.exec({ argv: ["cat"], stdin: Readable.from([input]), onStdout: echoed.on }).done;
    assert.ok(echoed.bytes().equals(input));
  });

  it("sends signals to the process group, and close kills the whole group", async () => {
    const out = collector();
    const proc = agent.session.exec({ argv: ["sh", "-c", "sleep 1000 & echo $!; wait"], onStdout: out.on });
    await until(() => out.text().endsWith("\n"), "the background pid");
    const background = Number(out.text().trim());
    proc.kill("SIGTERM");
    const result = await proc.done;
    assert.equal(result.signal, "SIGTERM");
    await until(() => processGone(background), "the background sleep to die with its group");

    const out2 = collector();
    const proc2 = agent.session.exec({ argv: ["sh", "-c", "sleep 1000 & echo $!; wait"], onStdout: out2.on });
    await until(() => out2.text().endsWith("\n"), "the second background pid");
    const background2 = Number(out2.text().trim());
    proc2.close();
    await assert.rejects(
      proc2.done,
      (e: unknown) => e instanceof BangerError && e.code === ErrorCode.CANCELLED,
    );
    await until(() => processGone(background2), "close to kill the group");
  });

  it("holds a slow reader's producer at the credit window", async () => {
    const raw: { bytes: number } = { bytes: 0 };
    const count = (chunk: Buffer) => {
      raw.bytes += chunk.length;
    };
    agent.socket.on("data", count);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let received = 0;
    const proc = agent.session.exec({
      argv: ["head", "-c", "20000000", "/dev/zero"],
      onStdout: async (chunk) => {
        received += chunk.length;
        await gate;
      },
    });
    await until(() => raw.bytes >= STREAM_WINDOW, "a full window to arrive");
    // The producer is blocked on its pipe; let the agent settle, then check nothing beyond the window came.
    await new Promise((r) => setTimeout(r, 300));
    agent.socket.off("data", count);
    const framing = Math.ceil(STREAM_WINDOW / 4096) * 12;
    assert.ok(
      raw.bytes <= STREAM_WINDOW + framing,
      `${raw.bytes} bytes arrived with a window of ${STREAM_WINDOW}`,
    );
    release();
    const result = await proc.done;
    assert.equal(result.exitCode, 0);
    assert.equal(received, 20_000_000);
  });

  it("runs 16 execs at once, each with its own output", async () => {
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        run(agent.session, ["sh", "-c", `sleep 0.2; seq 1 ${1000 * (i + 1)}`]),
      ),
    );
    results.forEach((r, i) => {
      assert.equal(r.exitCode, 0);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 1000 * (i + 1));
      assert.equal(lines.at(-1), String(1000 * (i + 1)));
    });
  });

  it("writes and reads files as streams, with errors mapped to codes", async () => {
    const content = randomBytes(2 * 1024 * 1024 + 3);
    const path = join(dir, "copied.bin");
    await agent.session.writeFile(path, 0o640, Readable.from([content]));
    assert.ok((await readFile(path)).equals(content));
    const back = collector();
    await agent.session.readFile(path, back.on);
    assert.ok(back.bytes().equals(content));
    await assert.rejects(
      agent.session.readFile(join(dir, "missing"), () => undefined),
      (e: unknown) =>
        e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS && /No such file/.test(e.message),
    );
    await writeFile(join(dir, "ro"), "x");
    await assert.rejects(
      agent.session.writeFile(join(dir, "no-dir", "f"), 0o600, Readable.from([Buffer.from("x")])),
      (e: unknown) => e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS,
    );
  });
});

describe("hostile frames", { skip: !existsSync(AGENT) && "dist/banger-agent is not built" }, () => {
  it("never crash the agent: garbage, bad headers, oversize lengths, malformed requests", async () => {
    const child = spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
    const socket = child.stdio[3] as Duplex;
    const stderr: Buffer[] = [];
    child.stderr?.on("data", (c: Buffer) => stderr.push(c));
    const hostile = [
      randomBytes(5000),
      Buffer.from([0x62, 0x67, 0x03, 0x00, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
      Buffer.from([0x62, 0x67, 0xee, 0x07, 0, 0, 0, 1, 0, 0, 0, 0]),
    ];
    for (const bytes of hostile) socket.write(bytes);
    const session = await openAgentSession(socket, AbortSignal.timeout(10_000));
    // After the handshake: malformed requests on fresh channels, and frames for channels that do not exist.
    const frames = [
      encodeFrame({ type: FrameType.EXEC, channel: 900, payload: Buffer.from("a=true") }), // no NUL
      encodeFrame({ type: FrameType.EXEC, channel: 901, payload: Buffer.from("x=1\0") }),
      encodeFrame({ type: FrameType.EXEC, channel: 902, payload: Buffer.from("t=99999999,1\0a=true\0") }),
      encodeFrame({ type: FrameType.WRITE, channel: 903, payload: Buffer.from([1]) }),
      encodeFrame({ type: FrameType.READ, channel: 904, payload: Buffer.from("a\0b") }),
      encodeFrame({ type: FrameType.CLOCK, channel: 905, payload: Buffer.alloc(3) }),
      encodeFrame({ type: FrameType.LANE, channel: 906, payload: Buffer.alloc(27) }), // shorter than its head
      encodeFrame({ type: FrameType.LANE, channel: 907, payload: Buffer.alloc(28) }), // no path
      encodeFrame({
        type: FrameType.LANE,
        channel: 908,
        payload: Buffer.concat([Buffer.alloc(28), Buffer.from("a\0b")]),
      }),
      encodeFrame({ type: FrameType.DATA, stream: Stream.stdin, channel: 77, payload: randomBytes(100) }),
      encodeFrame({ type: FrameType.CREDIT, stream: Stream.stdout, channel: 77, payload: u32(0xffffffff) }),
      encodeFrame({ type: FrameType.SIGNAL, channel: 77, payload: u32(9) }),
      encodeFrame({ type: FrameType.EXIT, channel: 77, payload: Buffer.alloc(8) }),
    ];
    for (const frame of frames) socket.write(frame);
    const r = await session.exec({ argv: ["echo", "still here"], onStdout: () => undefined }).done;
    assert.equal(r.exitCode, 0);
    // A bad header mid-session resets the agent's session; a new HELLO brings it back.
    session.close();
    assert.equal(child.exitCode, null, Buffer.concat(stderr).toString());
    child.kill("SIGKILL");
  });

  it("a malformed frame from the agent closes the host session, not the daemon", async () => {
    const fake = new Duplex({
      read() {},
      write(_c, _e, cb) {
        cb();
      },
    });
    const opening = openAgentSession(fake, AbortSignal.timeout(5000));
    fake.push(
      encodeFrame({ type: FrameType.HELLO, channel: 0, payload: Buffer.concat([u32(1), Buffer.from("x")]) }),
    );
    const session = await opening;
    const closed = new Promise<Error>((resolve) => session.onClose(resolve));
    const pending = session.exec({ argv: ["true"] }).done;
    fake.push(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0]));
    const error = await closed;
    assert.ok(error instanceof BangerError && error.code === ErrorCode.GUEST_UNREACHABLE);
    await assert.rejects(
      pending,
      (e: unknown) => e instanceof BangerError && e.code === ErrorCode.GUEST_UNREACHABLE,
    );
  });

  it("the agent exits when its fd transport closes, killing what it ran", async () => {
    const { child, socket, session, exited } = await startAgent();
    const out = collector();
    session.exec({ argv: ["sh", "-c", "sleep 1000 & echo $!; wait"], onStdout: out.on });
    await until(() => out.text().endsWith("\n"), "the background pid");
    const background = Number(out.text().trim());
    socket.destroy();
    assert.equal(await exited, 0);
    await until(() => processGone(background), "the group to die with the session");
    assert.equal(child.exitCode, 0);
  });
});
