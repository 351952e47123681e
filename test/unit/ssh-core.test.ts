import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  ed25519KeyFiles,
  HOST_KEY_MARKER,
  knownHostsLine,
  parseHostKeyLine,
  planInteractiveSsh,
  shellQuoteArgv,
  sshBaseArgs,
  sshControlArgv,
  sshDestination,
  sshExecArgv,
} from "../../src/core/ssh/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";

/** A syntactically real SSH public key blob: string type, then string key bytes. */
function keyBlob(type: string, fill: number): string {
  const name = Buffer.from(type, "latin1");
  const key = Buffer.alloc(32, fill);
  const blob = Buffer.alloc(8 + name.length + key.length);
  blob.writeUInt32BE(name.length, 0);
  name.copy(blob, 4);
  blob.writeUInt32BE(key.length, 4 + name.length);
  key.copy(blob, 8 + name.length);
  return blob.toString("base64");
}

const first = keyBlob("ssh-ed25519", 1);
const second = keyBlob("ssh-ed25519", 2);

describe("parseHostKeyLine", () => {
  it("finds the key among kernel noise and CRLF line ends", () => {
    const console = [
      "[    0.404214] PCI: Fatal: No config space access function found\r",
      "banger-init: sshd started (pid 122) at 3.19s\r",
      `banger-init: hostkey ssh-ed25519 ${first} root@vm1\r`,
      "[    6.748212] sysrq: Power Off\r",
      "",
    ].join("\n");
    assert.deepEqual(parseHostKeyLine(console), { type: "ssh-ed25519", base64: first });
  });

  it("takes the last key when the guest rebooted", () => {
    const console = `banger-init: hostkey ssh-ed25519 ${first}\nreboot\nbanger-init: hostkey ssh-ed25519 ${second}\n`;
    assert.deepEqual(parseHostKeyLine(console), { type: "ssh-ed25519", base64: second });
  });

  it("returns undefined when there is no key line yet", () => {
    assert.equal(parseHostKeyLine(""), undefined);
    assert.equal(parseHostKeyLine("[ 0.1] booting\nbanger-init: sshd started\n"), undefined);
  });

  it("skips torn, mismatched and indented lines and falls back to an earlier good one", () => {
    const console = [
      `banger-init: hostkey ssh-ed25519 ${first}`,
      `banger-init: hostkey ssh-ed25519 ${second.slice(0, 20)}[ 3.1] kernel says hi`,
      `banger-init: hostkey ssh-rsa ${second}`,
      `  banger-init: hostkey ssh-ed25519 ${second}`,
      "banger-init: hostkey ssh-ed25519",
      `guest-init: hostkey ssh-ed25519 ${second}`,
    ].join("\n");
    assert.deepEqual(parseHostKeyLine(console), { type: "ssh-ed25519", base64: first });
  });

  it("uses the marker the guest init prints", () => {
    assert.equal(HOST_KEY_MARKER, "banger-init: hostkey ");
  });

  it("accepts ecdsa keys", () => {
    const ecdsa = keyBlob("ecdsa-sha2-nistp256", 3);
    assert.deepEqual(parseHostKeyLine(`banger-init: hostkey ecdsa-sha2-nistp256 ${ecdsa}\n`), {
      type: "ecdsa-sha2-nistp256",
      base64: ecdsa,
    });
  });
});

describe("knownHostsLine", () => {
  const key = { type: "ssh-ed25519", base64: first };
  it("names the bare address for port 22 and [addr]:port otherwise", () => {
    assert.equal(knownHostsLine("10.77.0.2", key), `10.77.0.2 ssh-ed25519 ${first}\n`);
    assert.equal(knownHostsLine("127.0.0.1", key, 2222), `[127.0.0.1]:2222 ssh-ed25519 ${first}\n`);
  });
});

describe("shellQuoteArgv", () => {
  const nasty = [
    "plain",
    "with space",
    "it's",
    "'",
    "''",
    '"double"',
    "$HOME",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${...} is the point of this case
    "${PATH}",
    "`id`",
    "$(id)",
    "line1\nline2",
    "",
    "back\\slash",
    "*",
    "a;b|c&d>e<f",
    "-n",
    "tab\there",
    "ünïcödé",
    "!bang",
    "~",
  ];

  it("quotes every word in single quotes", () => {
    assert.equal(shellQuoteArgv(["echo", "it's"]), `'echo' 'it'\\''s'`);
    assert.equal(shellQuoteArgv([""]), "''");
  });

  it("survives a real POSIX shell intact", async () => {
    const runner = createProcessRunner();
    const script = `printf '%s\\0' ${shellQuoteArgv(nasty)}`;
    const result = await runner.run(["sh", "-c", script]);
    assert.deepEqual(result.stdout.split("\0").slice(0, -1), nasty);
  });

  it('re-splits into the same positional parameters ("$@")', async () => {
    const runner = createProcessRunner();
    const script = `set -- ${shellQuoteArgv(nasty)}; printf '%s\\0' "$@"`;
    const result = await runner.run(["sh", "-c", script]);
    assert.deepEqual(result.stdout.split("\0").slice(0, -1), nasty);
  });

  it("refuses an empty argv and NUL bytes", () => {
    assert.throws(
      () => shellQuoteArgv([]),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.INVALID_PARAMS,
    );
    assert.throws(() => shellQuoteArgv(["a\0b"]), /NUL/);
  });
});

describe("ssh argv", () => {
  const target = {
    identityFile: "/var/lib/banger/ssh/id_ed25519",
    knownHostsFile: "/var/lib/banger/vms/abc/known_hosts",
    controlPath: "/run/banger/ssh/abc.ctl",
    user: "root",
    host: "10.77.0.2",
  };

  it("pins the host key strictly and multiplexes through the control socket", () => {
    const args = sshBaseArgs(target);
    const options = args.filter((_, index) => args[index - 1] === "-o");
    for (const expected of [
      "BatchMode=yes",
      "StrictHostKeyChecking=yes",
      "UserKnownHostsFile=/var/lib/banger/vms/abc/known_hosts",
      "IdentitiesOnly=yes",
      "LogLevel=ERROR",
      "ControlMaster=auto",
      "ControlPath=/run/banger/ssh/abc.ctl",
      "ControlPersist=600",
      "ServerAliveInterval=5",
      "ConnectTimeout=5",
    ]) {
      assert.ok(options.includes(expected), expected);
    }
    assert.deepEqual(args.slice(0, 4), ["-F", "/dev/null", "-i", target.identityFile]);
    assert.ok(!args.includes("-p"));
    assert.deepEqual(sshBaseArgs({ ...target, port: 2222 }).slice(-2), ["-p", "2222"]);
  });

  it("puts the quoted command after the destination and --", () => {
    const argv = sshExecArgv(target, ["echo", "a b"]);
    assert.equal(argv[0], "ssh");
    assert.deepEqual(argv.slice(-3), ["root@10.77.0.2", "--", "'echo' 'a b'"]);
    assert.deepEqual(sshControlArgv(target, "check").slice(-3), ["-O", "check", "root@10.77.0.2"]);
  });

  it("rejects destinations ssh could read as options and overlong control paths", () => {
    assert.throws(() => sshDestination({ user: "-oProxyCommand=x", host: "h" }), /user name/);
    assert.throws(() => sshDestination({ user: "root", host: "-oProxyCommand=x" }), /ssh host/);
    assert.throws(() => sshBaseArgs({ ...target, controlPath: `/${"x".repeat(100)}` }), /control path/);
  });
});

describe("interactive ssh (vm ssh)", () => {
  const config = {
    user: "root",
    host: "172.30.0.2",
    identityFile: "/state/ssh/id_ed25519",
    knownHostsFile: "/state/vms/a b/known_hosts",
  };
  const proxy = ["/opt/banger it/bin/banger", "vm", "proxy", "web", "22"];
  const option = (argv: readonly string[], name: string) =>
    argv.find((arg, index) => argv[index - 1] === "-o" && arg.startsWith(`${name}=`));

  it("pins the VM's key under its alias, ignores the user's config, and proxies through the CLI", () => {
    const argv = planInteractiveSsh(config, proxy);
    assert.equal(argv[0], "ssh");
    assert.deepEqual(argv.slice(1, 3), ["-F", "/dev/null"]);
    assert.equal(option(argv, "StrictHostKeyChecking"), "StrictHostKeyChecking=yes");
    assert.equal(option(argv, "UserKnownHostsFile"), "UserKnownHostsFile=/state/vms/a b/known_hosts");
    assert.equal(option(argv, "HostKeyAlias"), "HostKeyAlias=172.30.0.2");
    assert.equal(
      option(argv, "ProxyCommand"),
      "ProxyCommand='/opt/banger it/bin/banger' 'vm' 'proxy' 'web' '22'",
    );
    assert.equal(argv.at(-1), "root@172.30.0.2", "a login shell: nothing after the destination");
    assert.ok(!argv.includes("-t"));
    assert.ok(!argv.some((arg) => arg.startsWith("ControlMaster")), "no multiplexing for a terminal session");
  });

  it("passes a command as one quoted word the remote shell splits back exactly, with -t only when asked", () => {
    const argv = planInteractiveSsh(config, proxy, {
      command: ["printf", "%s|", "a b", "$HOME", "'q'"],
      tty: true,
    });
    assert.deepEqual(argv.slice(-4), [
      "-t",
      "root@172.30.0.2",
      "--",
      String.raw`'printf' '%s|' 'a b' '$HOME' ''\''q'\'''`,
    ]);
    assert.ok(!planInteractiveSsh(config, proxy, { command: ["top"] }).includes("-t"));
    assert.ok(
      !planInteractiveSsh(config, proxy, { tty: true }).includes("-t"),
      "a login shell gets its PTY from ssh itself",
    );
  });

  it("refuses a user or host ssh could read as an option", () => {
    assert.throws(() => planInteractiveSsh({ ...config, user: "-oProxyCommand=x" }, proxy), /user name/);
    assert.throws(() => planInteractiveSsh({ ...config, host: "-x" }, proxy), /ssh host/);
  });
});

describe("ed25519 key files", () => {
  it("writes a private key file that OpenSSH reads back to the same public key", () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const jwk = privateKey.export({ format: "jwk" });
    const files = ed25519KeyFiles(
      Buffer.from(jwk.d!, "base64url"),
      Buffer.from(jwk.x!, "base64url"),
      0xdeadbeef,
    );
    const dir = mkdtempSync(join(tmpdir(), "bgkey-"));
    try {
      const path = join(dir, "key");
      writeFileSync(path, files.privateKey, { mode: 0o600 });
      const derived = execFileSync("ssh-keygen", ["-y", "-f", path], { encoding: "utf8" }).trim();
      assert.equal(derived, `${files.publicKey.type} ${files.publicKey.base64}`);
      assert.deepEqual(parseHostKeyLine(`banger-init: hostkey ${derived}\n`), files.publicKey);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses seeds and public keys of the wrong size", () => {
    assert.throws(() => ed25519KeyFiles(new Uint8Array(31), new Uint8Array(32), 1), /32-byte/);
  });
});
