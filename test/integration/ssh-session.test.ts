/**
 * The SSH layer against a real sshd that this test runs inside its own
 * network namespace (127.0.0.1:2222 there); the ssh client runs in the same
 * namespace through `commandPrefix`. Needs root and /usr/sbin/sshd
 * (openssh-server); the system's ssh service is not used.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import {
  type ClientKey,
  createSshSession,
  ensureClientKey,
  pinHostKey,
  type SshSession,
  type SshSessionOptions,
} from "../../src/sys/ssh/index.ts";

const SSHD = "/usr/sbin/sshd";
const PORT = 2222;
const namespace = `banger-test-${randomBytes(4).toString("hex")}`;
const inNamespace = ["ip", "netns", "exec", namespace];
const runner = createProcessRunner();

const collect = () => {
  const chunks: Buffer[] = [];
  return {
    onChunk: (chunk: Buffer) => {
      chunks.push(chunk);
    },
    text: () => Buffer.concat(chunks).toString("utf8"),
    buffer: () => Buffer.concat(chunks),
  };
};

describe("ssh session against a real sshd", { skip: existsSync(SSHD) ? false : `${SSHD} missing` }, () => {
  let dir: string;
  let sshd: ChildProcess | undefined;
  let clientKey: ClientKey;
  let base: SshSessionOptions;
  const sessions: SshSession[] = [];

  const session = (overrides: Partial<SshSessionOptions> = {}) => {
    const created = createSshSession({ ...base, ...overrides });
    sessions.push(created);
    return created;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-ssh-"));
    await runner.run(["ip", "netns", "add", namespace]);
    await runner.run(["ip", "-n", namespace, "link", "set", "lo", "up"]);
    await mkdir("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege separation directory

    clientKey = await ensureClientKey(join(dir, "client"), runner);
    await runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
    await writeFile(join(dir, "authorized_keys"), `${clientKey.publicKey}\n`, { mode: 0o600 });
    const config = [
      `Port ${PORT}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "MaxSessions 32",
    ].join("\n");
    await writeFile(join(dir, "sshd_config"), `${config}\n`);
    // `ip netns exec` execs sshd, so the child's pid is sshd's.
    sshd = spawn(
      inNamespace[0]!,
      [...inNamespace.slice(1), SSHD, "-D", "-e", "-f", join(dir, "sshd_config")],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    sshd.stderr!.resume();

    // Waits for the banner from inside the namespace with the code under test.
    const script = [
      `import { waitForSshBanner } from ${JSON.stringify(new URL("../../src/sys/ssh/index.ts", import.meta.url).href)};`,
      `await waitForSshBanner({ host: "127.0.0.1", port: ${PORT}, deadlineMs: 20000, stillAlive: async () => true });`,
      `console.log("banner");`,
    ].join("\n");
    const waited = await runner.run([...inNamespace, process.execPath, "--input-type=module", "-e", script]);
    assert.equal(waited.stdout.trim(), "banner");

    const hostKeyLine = (await readFile(join(dir, "host_key.pub"), "utf8")).trim();
    await writeFile(
      join(dir, "console.log"),
      `[    0.40] PCI: Fatal: No config space access function found\r\nbanger-init: sshd started\r\nbanger-init: hostkey ${hostKeyLine}\r\n`,
    );
    base = {
      identityFile: clientKey.privateKey,
      knownHostsFile: join(dir, "known_hosts"),
      controlPath: join(dir, "ctl"),
      user: "root",
      host: "127.0.0.1",
      port: PORT,
      runner,
      commandPrefix: inNamespace,
    };
  });

  after(async () => {
    for (const created of sessions) await created.close().catch(() => {});
    if (sshd?.pid !== undefined && sshd.exitCode === null) {
      const exited = new Promise((resolve) => sshd!.once("exit", resolve));
      process.kill(sshd.pid, "SIGTERM");
      await exited;
    }
    await runner.run(["ip", "netns", "del", namespace], { allowFailure: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("keeps the client key private and reuses it", async () => {
    assert.equal((await stat(clientKey.privateKey)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, "client"))).mode & 0o777, 0o700);
    assert.match(clientKey.publicKey, /^ssh-ed25519 \S+ banger$/);
    assert.deepEqual(await ensureClientKey(join(dir, "client"), runner), clientKey);
  });

  it("pins the host key from the console log and connects with strict checking", async () => {
    const key = await pinHostKey({
      consoleLog: join(dir, "console.log"),
      ip: "127.0.0.1",
      port: PORT,
      knownHostsFile: base.knownHostsFile,
    });
    assert.equal(key.type, "ssh-ed25519");
    assert.equal((await stat(base.knownHostsFile)).mode & 0o777, 0o600);
    assert.match(await readFile(base.knownHostsFile, "utf8"), /^\[127\.0\.0\.1\]:2222 ssh-ed25519 /);

    const stdout = collect();
    const result = await session().exec({ argv: ["echo", "pinned"], onStdout: stdout.onChunk });
    assert.deepEqual(result, { exitCode: 0, signal: null });
    assert.equal(stdout.text(), "pinned\n");
  });

  it("refuses a guest whose key does not match the pinned one", async () => {
    await runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "other_key")]);
    const other = (await readFile(join(dir, "other_key.pub"), "utf8")).trim();
    await writeFile(join(dir, "other_console.log"), `banger-init: hostkey ${other}\n`);
    const wrongKnownHosts = join(dir, "wrong_known_hosts");
    await pinHostKey({
      consoleLog: join(dir, "other_console.log"),
      ip: "127.0.0.1",
      port: PORT,
      knownHostsFile: wrongKnownHosts,
    });
    const stderr = collect();
    const result = await session({
      knownHostsFile: wrongKnownHosts,
      controlPath: join(dir, "ctl-wrong"),
    }).exec({
      argv: ["true"],
      onStderr: stderr.onChunk,
    });
    assert.equal(result.exitCode, 255);
    assert.match(stderr.text(), /Host key verification failed/);
  });

  it("fails to pin before the guest printed its key", async () => {
    await writeFile(join(dir, "early_console.log"), "[ 0.1] booting\r\n");
    await assert.rejects(
      pinHostKey({
        consoleLog: join(dir, "early_console.log"),
        ip: "127.0.0.1",
        knownHostsFile: join(dir, "x"),
      }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.BOOT_FAILED,
    );
  });

  it("reuses the ControlMaster the first exec left behind", async () => {
    const ssh = session();
    assert.equal(await ssh.check(), true, "a master is up after the earlier exec");
    const result = await ssh.exec({ argv: ["true"] });
    assert.equal(result.exitCode, 0);
    assert.equal(await ssh.check(), true);
  });

  it("passes argv through intact", async () => {
    const nasty = [
      "with space",
      "it's",
      '"q"',
      "$HOME",
      "`id`",
      "$(id)",
      "a\nb",
      "",
      "*",
      "a;b|c",
      "-n",
      "ü",
    ];
    const stdout = collect();
    const result = await session().exec({ argv: ["printf", "%s\\0", ...nasty], onStdout: stdout.onChunk });
    assert.equal(result.exitCode, 0);
    assert.deepEqual(stdout.text().split("\0").slice(0, -1), nasty);
  });

  it("propagates exit codes and stderr", async () => {
    const stderr = collect();
    const result = await session().exec({
      argv: ["sh", "-c", "echo oops >&2; exit 42"],
      onStderr: stderr.onChunk,
    });
    assert.equal(result.exitCode, 42);
    assert.equal(stderr.text(), "oops\n");
  });

  it("pipes stdin to the remote command", async () => {
    const input = randomBytes(3 * 1024 * 1024);
    const stdout = collect();
    const result = await session().exec({
      argv: ["sha256sum"],
      stdin: Readable.from([input.subarray(0, 1000), input.subarray(1000)]),
      onStdout: stdout.onChunk,
    });
    assert.equal(result.exitCode, 0);
    assert.equal(stdout.text().split(" ")[0], createHash("sha256").update(input).digest("hex"));
  });

  it("streams 10 MB of stdout intact through a slow consumer", async () => {
    const file = join(dir, "big.bin");
    const data = randomBytes(10 * 1024 * 1024);
    await writeFile(file, data);
    const hash = createHash("sha256");
    let chunks = 0;
    let bytes = 0;
    const result = await session().exec({
      argv: ["cat", file],
      onStdout: async (chunk) => {
        hash.update(chunk);
        bytes += chunk.length;
        // Every tenth chunk yields to the event loop, so the stream has to wait for us.
        if (++chunks % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
      },
    });
    assert.equal(result.exitCode, 0);
    assert.equal(bytes, data.length);
    assert.equal(hash.digest("hex"), createHash("sha256").update(data).digest("hex"));
  });

  it("kills the local ssh when aborted", async () => {
    const controller = new AbortController();
    const started = collect();
    const running = session().exec({
      // `exec` keeps the shell's pid, so the test can end the remote sleep afterwards.
      argv: ["sh", "-c", "echo $$; exec sleep 30"],
      signal: controller.signal,
      onStdout: (chunk) => {
        started.onChunk(chunk);
        controller.abort();
      },
    });
    await assert.rejects(
      running,
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.CANCELLED,
    );
    const remotePid = started.text().trim();
    assert.match(remotePid, /^\d+$/);
    const killed = await session().exec({ argv: ["kill", remotePid] });
    assert.equal(killed.exitCode, 0, "the remote command was still running; the session still works");
  });

  it("close ends the master and is idempotent", async () => {
    const ssh = session();
    assert.equal(await ssh.check(), true);
    await ssh.close();
    assert.equal(await ssh.check(), false);
    await ssh.close();
    const again = await ssh.exec({ argv: ["true"] });
    assert.equal(again.exitCode, 0, "a later exec opens a new master");
    assert.equal(await ssh.check(), true);
  });
});
