/**
 * A clone's identity, as guest programs. A VM restored from a snapshot
 * wakes up as a copy of its source: same IP, MAC, hostname, machine-id, SSH
 * host key, RNG state and a clock stopped at the snapshot. Before any user
 * command runs, the daemon runs the identity program through the guest
 * channel (which must not depend on the guest's network: the program
 * changes the network last). Programs are constant; their inputs are
 * positional arguments or stdin, never spliced into a shell string.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Ed25519KeyFiles } from "../ssh/index.ts";

export interface GuestStep {
  /** Names the step in progress lines and errors. */
  name: "clock" | "identity" | "hostname";
  argv: readonly string[];
  /** Bytes for the command's stdin. */
  stdin?: Uint8Array | undefined;
}

export interface CloneIdentity {
  hostname: string;
  /** The clone's address and the subnet's prefix length. */
  ip: string;
  prefixLength: number;
  gateway: string;
  mac: string;
  /** 32 lowercase hex digits, random per clone. */
  machineId: string;
  /** Random bytes mixed into the guest's entropy pool (32 to 512). */
  seed: Uint8Array;
  /** The clone's new SSH host key, made on the host. */
  hostKey: Ed25519KeyFiles;
  /** The guest's network interface. */
  device?: string | undefined;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MACHINE_ID = /^[0-9a-f]{32}$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;
const MIN_SEED_BYTES = 32;
/** What the agent's reseed takes at most (guest/agent/reseed.c). */
const MAX_SEED_BYTES = 512;
/** Where every guest has banger's agent (the per-boot initrd puts it there; see guest/banger-init). */
const GUEST_AGENT_PATH = "/.banger/agent";

/** The hostname, /etc/hostname and /etc/hosts for `$1`, with shell builtins only. */
const HOSTNAME_LINES = `printf '%s\\n' "$1" >/proc/sys/kernel/hostname
printf '%s\\n' "$1" >/etc/hostname
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "$1" >/etc/hosts`;

/**
 * The clone's identity as one guest program, so that a restore pays for one
 * exec and a handful of processes (each costs ~100 ms under TCG, more while
 * the emulator's translation cache is cold after a restore) rather than an
 * exec per step. Arguments: $1 hostname, $2 machine-id, $3 address/prefix,
 * $4 MAC, $5 gateway, $6 device, $7 the agent, $8 the new host key's public
 * line. Stdin: the new host private key file, then the RNG seed. Steps:
 * - host-key: the host made the key (a clone's RNG starts as its source's,
 *   and ssh-keygen is the slowest program here); where the guest has
 *   /etc/ssh it replaces the host keys, sshd re-executes on SIGHUP and so
 *   serves it, and the key is printed as banger-init prints it at boot
 *   (`banger-init: hostkey <type> <base64>`, read by core/ssh
 *   parseHostKeyLine) for the daemon to pin; elsewhere it is read and
 *   dropped;
 * - rng: the agent credits the rest of stdin and forces a CRNG reseed at
 *   once, so two clones' generators diverge before anything else runs;
 * - machine-id (and dbus's copy) and hostname, with shell builtins only;
 * - network, last: the link goes down first, so no frame leaves with the
 *   old MAC; one `ip -batch` (the values in its input are validated
 *   addresses), or one command at a time where ip has no batch mode.
 * A failure names its step on stderr's last line.
 */
const IDENTITY_SCRIPT = `set -eu
step=host-key
trap 'status=$?; [ "$status" -eq 0 ] || printf "banger-identity: the %s step failed\\n" "$step" >&2' EXIT
key=/dev/null
if [ -d /etc/ssh ]; then
  for old in /etc/ssh/ssh_host_*_key; do
    case "$old" in */ssh_host_ed25519_key) ;; *) if [ -e "$old" ]; then rm -f "$old" "$old.pub"; fi ;; esac
  done
  key=/etc/ssh/ssh_host_ed25519_key
fi
umask 077
while IFS= read -r line; do
  printf '%s\\n' "$line"
  [ "$line" != "-----END OPENSSH PRIVATE KEY-----" ] || break
done >"$key"
umask 022
if [ "$key" != /dev/null ]; then
  printf '%s\\n' "$8" >"$key.pub"
  if [ -s /run/sshd.pid ] && read -r sshd </run/sshd.pid; then kill -HUP "$sshd" 2>/dev/null || true; fi
  printf 'banger-init: hostkey %s\\n' "$8"
fi
step=rng
"$7" reseed
step=machine-id
printf '%s\\n' "$2" >/etc/machine-id
if [ -d /var/lib/dbus ] && [ ! -L /var/lib/dbus/machine-id ]; then printf '%s\\n' "$2" >/var/lib/dbus/machine-id; fi
step=hostname
${HOSTNAME_LINES}
step=network
if ! ip -batch - 2>/dev/null <<BATCH
link set dev $6 down
link set dev $6 address $4
addr flush dev $6
link set dev $6 up
addr add $3 dev $6
route replace default via $5 dev $6
neigh flush dev $6
BATCH
then
  ip link set dev "$6" down
  ip link set dev "$6" address "$4"
  ip addr flush dev "$6"
  ip link set dev "$6" up
  ip addr add "$3" dev "$6"
  ip route replace default via "$5" dev "$6"
  ip neigh flush dev "$6" 2>/dev/null || true
fi`;

function program(name: string, script: string, args: readonly string[]): string[] {
  return ["sh", "-c", script, name, ...args];
}

/**
 * The clone's identity as one guest step (see IDENTITY_SCRIPT); the clock
 * is set apart, before it and again after, from the host's time.
 */
export function planCloneIdentity(identity: CloneIdentity): GuestStep {
  const device = identity.device ?? "eth0";
  const bad = (what: string, value: string) => {
    throw new BangerError(ErrorCode.INTERNAL, `clone identity: bad ${what} '${value}'`);
  };
  if (!HOSTNAME.test(identity.hostname)) bad("hostname", identity.hostname);
  if (!IPV4.test(identity.ip)) bad("address", identity.ip);
  if (!IPV4.test(identity.gateway)) bad("gateway", identity.gateway);
  if (!Number.isInteger(identity.prefixLength) || identity.prefixLength < 1 || identity.prefixLength > 30) {
    bad("prefix length", String(identity.prefixLength));
  }
  if (!MAC.test(identity.mac)) bad("MAC", identity.mac);
  if (!MACHINE_ID.test(identity.machineId)) bad("machine-id", identity.machineId);
  if (!DEVICE.test(device)) bad("device", device);
  if (identity.seed.byteLength < MIN_SEED_BYTES || identity.seed.byteLength > MAX_SEED_BYTES) {
    bad("seed length", String(identity.seed.byteLength));
  }
  const { privateKey, publicKey } = identity.hostKey;
  if (!privateKey.endsWith("-----END OPENSSH PRIVATE KEY-----\n"))
    bad("host key", "(not an OpenSSH key file)");
  return {
    name: "identity",
    argv: program("banger-identity", IDENTITY_SCRIPT, [
      identity.hostname,
      identity.machineId,
      `${identity.ip}/${identity.prefixLength}`,
      identity.mac,
      identity.gateway,
      device,
      GUEST_AGENT_PATH,
      `${publicKey.type} ${publicKey.base64}`,
    ]),
    stdin: Buffer.concat([Buffer.from(privateKey, "latin1"), identity.seed]),
  };
}

/** Gives a running guest a new hostname (a warm pool member taken under the taker's name). */
export function hostnameStep(hostname: string): GuestStep {
  if (!HOSTNAME.test(hostname)) {
    throw new BangerError(ErrorCode.INTERNAL, `clone identity: bad hostname '${hostname}'`);
  }
  return { name: "hostname", argv: program("banger-hostname", `set -eu\n${HOSTNAME_LINES}`, [hostname]) };
}

/** Sets the guest's clock to `epochMs` (the host's time when the step runs), where it has no agent. */
export function clockStep(epochMs: number): GuestStep {
  const seconds = Math.floor(epochMs / 1000);
  const millis = String(Math.floor(epochMs % 1000)).padStart(3, "0");
  return { name: "clock", argv: ["date", "-u", "-s", `@${seconds}.${millis}`] };
}
