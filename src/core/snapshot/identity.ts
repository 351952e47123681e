/**
 * A clone's identity, as a plan of guest commands. A VM restored from a
 * snapshot wakes up as a copy of its source: same IP, MAC, hostname,
 * machine-id, SSH host key, RNG state and a clock stopped at the snapshot.
 * Before any user command runs, the daemon runs these steps in order
 * through the guest channel (which must not depend on the guest's
 * network: the network step is last and changes it). Each step is a
 * constant program whose inputs are positional arguments or stdin, never
 * spliced into a shell string.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface GuestStep {
  /** Names the step in progress lines and errors. */
  name: "clock" | "rng" | "machine-id" | "hostname" | "host-key" | "network";
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
  /** Random bytes mixed into the guest's entropy pool (at least 32). */
  seed: Uint8Array;
  /** The guest's network interface. */
  device?: string | undefined;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MACHINE_ID = /^[0-9a-f]{32}$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;
const MIN_SEED_BYTES = 32;
/** Where every guest has banger's agent (the per-boot initrd puts it there; see guest/banger-init). */
const GUEST_AGENT_PATH = "/.banger/agent";

const MACHINE_ID_SCRIPT = `set -eu
printf '%s\\n' "$1" >/etc/machine-id.banger
mv -f /etc/machine-id.banger /etc/machine-id
if [ -d /var/lib/dbus ] && [ ! -L /var/lib/dbus/machine-id ]; then cp /etc/machine-id /var/lib/dbus/machine-id; fi`;

const HOSTNAME_SCRIPT = `set -eu
hostname "$1"
printf '%s\\n' "$1" >/etc/hostname
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "$1" >/etc/hosts`;

/**
 * A fresh host key, printed as banger-init prints it at boot (`banger-init:
 * hostkey <type> <base64>`, read by core/ssh parseHostKeyLine) for the
 * daemon to pin; sshd
 * re-executes on SIGHUP and so serves the new key. A guest without
 * ssh-keygen (no sshd) prints nothing.
 */
const HOST_KEY_SCRIPT = `set -eu
command -v ssh-keygen >/dev/null 2>&1 || exit 0
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key </dev/null >/dev/null
if [ -s /run/sshd.pid ]; then kill -HUP "$(cat /run/sshd.pid)" 2>/dev/null || true; fi
read -r keytype key _ </etc/ssh/ssh_host_ed25519_key.pub
printf 'banger-init: hostkey %s %s\\n' "$keytype" "$key"`;

/** $1 address/prefix, $2 MAC, $3 gateway, $4 device. Link down first, so no frame leaves with the old MAC. */
const NETWORK_SCRIPT = `set -eu
ip link set dev "$4" down
ip link set dev "$4" address "$2"
ip addr flush dev "$4"
ip link set dev "$4" up
ip addr add "$1" dev "$4"
ip route replace default via "$3" dev "$4"
ip neigh flush dev "$4" 2>/dev/null || true`;

function program(name: string, script: string, args: readonly string[]): string[] {
  return ["sh", "-c", script, name, ...args];
}

/**
 * The steps, in order: machine-id, RNG, hostname, host key, network. The
 * clock is set apart (`clockStep`), just before them, from the host's time
 * at that moment.
 */
export function planCloneIdentity(identity: CloneIdentity): GuestStep[] {
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
  if (identity.seed.byteLength < MIN_SEED_BYTES) bad("seed length", String(identity.seed.byteLength));
  return [
    { name: "machine-id", argv: program("banger-machine-id", MACHINE_ID_SCRIPT, [identity.machineId]) },
    // The agent credits the bytes and forces a CRNG reseed at once, so two clones' generators diverge
    // before the host key is made (a plain write to /dev/urandom waits for the kernel's next reseed).
    { name: "rng", argv: [GUEST_AGENT_PATH, "reseed"], stdin: identity.seed },
    hostnameStep(identity.hostname),
    { name: "host-key", argv: program("banger-host-key", HOST_KEY_SCRIPT, []) },
    {
      name: "network",
      argv: program("banger-network", NETWORK_SCRIPT, [
        `${identity.ip}/${identity.prefixLength}`,
        identity.mac,
        identity.gateway,
        device,
      ]),
    },
  ];
}

/** Gives a running guest a new hostname (a warm pool member taken under the taker's name). */
export function hostnameStep(hostname: string): GuestStep {
  if (!HOSTNAME.test(hostname)) {
    throw new BangerError(ErrorCode.INTERNAL, `clone identity: bad hostname '${hostname}'`);
  }
  return { name: "hostname", argv: program("banger-hostname", HOSTNAME_SCRIPT, [hostname]) };
}

/** Sets the guest's clock to `epochMs` (the host's time when the step runs). */
export function clockStep(epochMs: number): GuestStep {
  const seconds = Math.floor(epochMs / 1000);
  const millis = String(Math.floor(epochMs % 1000)).padStart(3, "0");
  return { name: "clock", argv: ["date", "-u", "-s", `@${seconds}.${millis}`] };
}
