/**
 * SSH, the pure half: reading the guest's host key from its serial console,
 * the known_hosts line that pins it, quoting argv for the remote shell, and
 * the OpenSSH client options every banger ssh invocation shares.
 *
 * Trust model: the guest's init prints `banger-init: hostkey <type> <base64>`
 * to the serial console (which only the host reads) before sshd accepts
 * connections; the host pins that key and connects with
 * StrictHostKeyChecking=yes, so no first-use trust is needed.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** The console line prefix the guest's init uses to publish its host key. */
export const HOST_KEY_MARKER = "banger-init: hostkey ";

export interface HostKey {
  /** e.g. "ssh-ed25519". */
  type: string;
  /** The base64 public key blob. */
  base64: string;
}

const KEY_TYPE_PATTERN =
  /^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+|[a-z0-9-]+-cert-v01@openssh\.com)$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The LAST well-formed host key line in console text (a reboot prints a new
 * one), or undefined. Lines must start with the marker; `\r` is dropped, and a
 * line whose blob does not decode to a key of the stated type (a line torn by
 * interleaved kernel output) is skipped.
 */
export function parseHostKeyLine(consoleText: string): HostKey | undefined {
  const lines = consoleText.split("\n");
  for (let index = lines.length - 1; index >= 0; index--) {
    const line = lines[index]!.replaceAll("\r", "");
    if (!line.startsWith(HOST_KEY_MARKER)) continue;
    const [type, base64] = line.slice(HOST_KEY_MARKER.length).trim().split(/\s+/);
    if (type === undefined || base64 === undefined) continue;
    if (!KEY_TYPE_PATTERN.test(type) || !BASE64_PATTERN.test(base64)) continue;
    if (blobKeyType(base64) !== type) continue;
    return { type, base64 };
  }
  return undefined;
}

/** The key type named inside an SSH public key blob (its first length-prefixed string). */
function blobKeyType(base64: string): string | undefined {
  const blob = Buffer.from(base64, "base64");
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  return blob.subarray(4, 4 + length).toString("latin1");
}

/** One known_hosts line pinning `key` for `host` (`[host]:port` when the port is not 22). */
export function knownHostsLine(host: string, key: HostKey, port = 22): string {
  const name = port === 22 ? host : `[${host}]:${port}`;
  return `${name} ${key.type} ${key.base64}\n`;
}

/**
 * One POSIX sh command string that the remote shell splits back into exactly
 * `argv`: every word single-quoted, embedded quotes as `'\''`. OpenSSH joins
 * its command arguments with spaces and hands them to the login shell, so
 * unquoted argv would be re-split and expanded there.
 */
export function shellQuoteArgv(argv: readonly string[]): string {
  if (argv.length === 0) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, "a remote command needs at least one argument");
  }
  return argv
    .map((arg) => {
      if (arg.includes("\0")) {
        throw new BangerError(ErrorCode.INVALID_PARAMS, "a command argument cannot contain a NUL byte");
      }
      return `'${arg.replaceAll("'", `'\\''`)}'`;
    })
    .join(" ");
}

export interface SshTarget {
  /** The daemon's client private key. */
  identityFile: string;
  /** known_hosts holding only this VM's pinned key. */
  knownHostsFile: string;
  /** ControlMaster socket; short (sun_path is 108 bytes, ssh appends a temp suffix). */
  controlPath: string;
  user: string;
  host: string;
  port?: number | undefined;
  connectTimeoutS?: number | undefined;
}

/** ssh appends ".XXXXXXXXXXXXXXXX" to ControlPath while it creates the socket; sun_path holds 107 bytes. */
const MAX_CONTROL_PATH = 107 - 17;
const DEFAULT_CONNECT_TIMEOUT_S = 5;
const SERVER_ALIVE_INTERVAL_S = 5;
const CONTROL_PERSIST_S = 600;

/**
 * The OpenSSH options shared by exec and control commands (no program name,
 * no destination). `-F /dev/null` keeps the user's ~/.ssh/config out.
 */
export function sshBaseArgs(target: SshTarget): string[] {
  if (Buffer.byteLength(target.controlPath) > MAX_CONTROL_PATH) {
    throw new BangerError(
      ErrorCode.INTERNAL,
      `ssh control path ${target.controlPath} is longer than ${MAX_CONTROL_PATH} bytes`,
      { hint: "use a shorter runtime directory (BANGER_HOME)" },
    );
  }
  const args = [
    "-F",
    "/dev/null",
    "-i",
    target.identityFile,
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${target.knownHostsFile}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "UpdateHostKeys=no",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ControlMaster=auto",
    "-o",
    `ControlPath=${target.controlPath}`,
    "-o",
    `ControlPersist=${CONTROL_PERSIST_S}`,
    "-o",
    `ServerAliveInterval=${SERVER_ALIVE_INTERVAL_S}`,
    "-o",
    "ServerAliveCountMax=3",
    "-o",
    `ConnectTimeout=${target.connectTimeoutS ?? DEFAULT_CONNECT_TIMEOUT_S}`,
  ];
  if (target.port !== undefined && target.port !== 22) args.push("-p", String(target.port));
  return args;
}

/** "user@host", refusing values ssh could read as options or that would change the destination. */
export function sshDestination(target: Pick<SshTarget, "user" | "host">): string {
  if (!/^[a-z_][a-z0-9_-]*$/i.test(target.user)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `'${target.user}' is not a valid ssh user name`);
  }
  if (!/^[A-Za-z0-9.:-]+$/.test(target.host) || target.host.startsWith("-")) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `'${target.host}' is not a valid ssh host`);
  }
  return `${target.user}@${target.host}`;
}

/** Full argv running `argv` on the guest: `ssh <base> user@host -- '<quoted>'`. */
export function sshExecArgv(target: SshTarget, argv: readonly string[]): string[] {
  return ["ssh", ...sshBaseArgs(target), sshDestination(target), "--", shellQuoteArgv(argv)];
}

/** `ssh -O check|exit` against the target's ControlMaster. */
export function sshControlArgv(target: SshTarget, operation: "check" | "exit"): string[] {
  return ["ssh", ...sshBaseArgs(target), "-O", operation, sshDestination(target)];
}

/** What `vm.ssh-config` tells a client about reaching a VM's sshd. */
export interface InteractiveSshConfig {
  user: string;
  /** The name the VM's key is pinned under (HostKeyAlias). */
  host: string;
  identityFile: string;
  knownHostsFile: string;
}

export interface InteractiveSshOptions {
  /** Run this argv instead of a login shell; it reaches the guest word for word. */
  command?: readonly string[];
  /** Ask for a PTY even with a command (`ssh -t`), as a terminal user expects for `top`. */
  tty?: boolean;
}

/**
 * Full argv of an interactive `ssh` to a VM through `proxyArgv` (the CLI's
 * `vm proxy NAME 22`, as ProxyCommand): the pinned key, no user config, no
 * ControlMaster (the session belongs to the terminal that started it).
 */
export function planInteractiveSsh(
  config: InteractiveSshConfig,
  proxyArgv: readonly string[],
  options: InteractiveSshOptions = {},
): string[] {
  const command = options.command ?? [];
  return [
    "ssh",
    "-F",
    "/dev/null",
    "-i",
    config.identityFile,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    `UserKnownHostsFile=${config.knownHostsFile}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `HostKeyAlias=${config.host}`,
    "-o",
    `ProxyCommand=${shellQuoteArgv(proxyArgv)}`,
    "-o",
    "LogLevel=ERROR",
    ...(command.length > 0 && options.tty ? ["-t"] : []),
    sshDestination(config),
    ...(command.length > 0 ? ["--", shellQuoteArgv(command)] : []),
  ];
}

/** An ed25519 key pair in OpenSSH's files: the private key file's text and the public key line. */
export interface Ed25519KeyFiles {
  privateKey: string;
  publicKey: HostKey;
}

/**
 * OpenSSH's unencrypted "openssh-key-v1" private key file for an ed25519
 * key (PROTOCOL.key), from its 32-byte seed and 32-byte public key, so the
 * host can make a guest's key without running ssh-keygen anywhere. `check`
 * is the file's random check word.
 */
export function ed25519KeyFiles(seed: Uint8Array, publicKey: Uint8Array, check: number): Ed25519KeyFiles {
  if (seed.length !== 32 || publicKey.length !== 32) {
    throw new BangerError(ErrorCode.INTERNAL, "an ed25519 key has a 32-byte seed and a 32-byte public key");
  }
  const u32 = (value: number) => {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(value >>> 0);
    return out;
  };
  const text = (value: Uint8Array | string) => {
    const bytes = typeof value === "string" ? Buffer.from(value, "latin1") : Buffer.from(value);
    return Buffer.concat([u32(bytes.length), bytes]);
  };
  const type = "ssh-ed25519";
  const publicBlob = Buffer.concat([text(type), text(publicKey)]);
  const secret = Buffer.concat([
    u32(check),
    u32(check),
    text(type),
    text(publicKey),
    text(Buffer.concat([seed, publicKey])),
    text(""),
  ]);
  const padding = Buffer.from(Array.from({ length: (8 - (secret.length % 8)) % 8 }, (_, index) => index + 1));
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0", "latin1"),
    text("none"),
    text("none"),
    text(""),
    u32(1),
    text(publicBlob),
    text(Buffer.concat([secret, padding])),
  ]).toString("base64");
  const lines = body.match(/.{1,70}/g) ?? [];
  return {
    privateKey: [
      "-----BEGIN OPENSSH PRIVATE KEY-----",
      ...lines,
      "-----END OPENSSH PRIVATE KEY-----",
      "",
    ].join("\n"),
    publicKey: { type, base64: publicBlob.toString("base64") },
  };
}
