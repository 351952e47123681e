/**
 * Port specs and guest socket listings:
 * - `--publish [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]` (docker's syntax;
 *   the host IP defaults to 127.0.0.1, never all addresses unless asked);
 * - `vm port-forward NAME [HOST_PORT:]GUEST_PORT` (HOST_PORT 0 or absent:
 *   the same as the guest port);
 * - the listening sockets of a guest from its /proc/net tables and the
 *   socket inodes of its processes (`planGuestPortsScript` prints both).
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { isIpv4 } from "./ipv4.ts";

export interface PublishedPort {
  hostIp: string;
  hostPort: number;
  guestPort: number;
  protocol: "tcp" | "udp";
}

const PUBLISH_HINT = "use [HOST_IP:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80 or 0.0.0.0:5353:53/udp";

export function parsePublishSpec(spec: string): PublishedPort {
  const invalid = (why: string) =>
    new BangerError(ErrorCode.INVALID_PARAMS, `--publish '${spec}': ${why}`, { hint: PUBLISH_HINT });
  const [body = "", protocolText = "tcp", extra] = spec.split("/");
  if (extra !== undefined || (protocolText !== "tcp" && protocolText !== "udp")) {
    throw invalid("the protocol must be tcp or udp");
  }
  const parts = body.split(":");
  if (parts.length < 2 || parts.length > 3) throw invalid("expected HOST_PORT:GUEST_PORT");
  const [hostIp, hostText, guestText] =
    parts.length === 3 ? (parts as [string, string, string]) : ["127.0.0.1", parts[0] ?? "", parts[1] ?? ""];
  if (!isIpv4(hostIp)) throw invalid(`'${hostIp}' is not an IPv4 address`);
  const hostPort = port(hostText, invalid, "host");
  const guestPort = port(guestText, invalid, "guest");
  return { hostIp, hostPort, guestPort, protocol: protocolText };
}

export function formatPublishedPort(port: PublishedPort): string {
  return `${port.hostIp}:${port.hostPort}->${port.guestPort}/${port.protocol}`;
}

/** Refuses two specs that would bind the same host address, port and protocol. */
export function assertDistinctHostPorts(ports: readonly PublishedPort[]): void {
  const seen = new Set<string>();
  for (const entry of ports) {
    const key = `${entry.hostIp}:${entry.hostPort}/${entry.protocol}`;
    if (seen.has(key)) {
      throw new BangerError(ErrorCode.INVALID_PARAMS, `--publish: host port ${key} is given twice`, {
        hint: "publish each host port once",
      });
    }
    seen.add(key);
  }
}

export interface ForwardSpec {
  /** 0: the same as the guest port. */
  localPort: number;
  guestPort: number;
}

export function parseForwardSpec(spec: string): ForwardSpec {
  const invalid = (why: string) =>
    new BangerError(ErrorCode.INVALID_PARAMS, `port-forward '${spec}': ${why}`, {
      hint: "use [LOCAL_PORT:]GUEST_PORT, e.g. 8080:80 or 5432",
    });
  const parts = spec.split(":");
  if (parts.length > 2) throw invalid("expected [LOCAL_PORT:]GUEST_PORT");
  const guestPort = port(parts.at(-1) ?? "", invalid, "guest");
  const localPort = parts.length === 2 ? port(parts[0] ?? "", invalid, "local", true) : guestPort;
  return { localPort, guestPort };
}

function port(text: string, invalid: (why: string) => BangerError, which: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text)) throw invalid(`the ${which} port '${text}' is not a number`);
  const value = Number(text);
  if (value > 65535 || (value === 0 && !allowZero))
    throw invalid(`the ${which} port ${value} is out of range`);
  return value;
}

export interface GuestSocket {
  protocol: "tcp" | "udp" | "tcp6" | "udp6";
  address: string;
  port: number;
  process: string | null;
  pid: number | null;
}

/**
 * A POSIX sh script for the guest: the /proc/net tables, then one line per
 * process socket, "/proc/PID COMM socket:[INODE]".
 */
export function planGuestPortsScript(): string {
  // Three processes in all, whatever the guest runs: under TCG a fork per process or descriptor took seconds.
  return [
    'for f in tcp tcp6 udp udp6; do echo "## $f"; cat /proc/net/$f 2>/dev/null; done',
    'echo "## comm"',
    "grep -H '' /proc/[0-9]*/comm 2>/dev/null",
    'echo "## fds"',
    "ls -l /proc/[0-9]*/fd 2>/dev/null",
    "true",
  ].join("\n");
}

/** Listening TCP sockets and bound UDP sockets, sorted by port, from the script's output. */
export function parseGuestPorts(output: string): GuestSocket[] {
  /** Socket inode -> the pid holding it, and pid -> its command name. */
  const owners = new Map<string, number>();
  const names = new Map<number, string>();
  const sockets: (GuestSocket & { inode: string })[] = [];
  let section = "";
  let pid: number | undefined;
  for (const line of output.split("\n")) {
    const header = /^## (\S+)$/.exec(line);
    if (header) {
      section = header[1] ?? "";
      continue;
    }
    if (section === "comm") {
      const match = /^\/proc\/(\d+)\/comm:(.*)$/.exec(line);
      if (match) names.set(Number(match[1]), match[2] ?? "");
      continue;
    }
    if (section === "fds") {
      // `ls -l` of each /proc/PID/fd: a "/proc/PID/fd:" header, then "… N -> socket:[INODE]" lines.
      const directory = /^\/proc\/(\d+)\/fd:$/.exec(line);
      if (directory) pid = Number(directory[1]);
      const socket = / -> socket:\[(\d+)\]$/.exec(line);
      if (socket && pid !== undefined) owners.set(socket[1] ?? "", pid);
      continue;
    }
    const fields = line.trim().split(/\s+/);
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    if (fields.length < 10 || !/^\d+:$/.test(fields[0] ?? "")) continue;
    const protocol = section as GuestSocket["protocol"];
    if (!["tcp", "udp", "tcp6", "udp6"].includes(protocol)) continue;
    const state = fields[3];
    const listening = protocol.startsWith("tcp") ? state === "0A" : state === "07";
    if (!listening) continue;
    const [addressHex = "", portHex = "0"] = (fields[1] ?? "").split(":");
    sockets.push({
      protocol,
      address: decodeAddress(addressHex),
      port: Number.parseInt(portHex, 16),
      inode: fields[9] ?? "",
      process: null,
      pid: null,
    });
  }
  return sockets
    .map(({ inode, ...socket }) => {
      const owner = owners.get(inode);
      return owner === undefined ? socket : { ...socket, process: names.get(owner) ?? null, pid: owner };
    })
    .sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
}

/** /proc/net addresses are host-order hex words: 0100007F is 127.0.0.1. */
function decodeAddress(hex: string): string {
  if (hex.length === 8) {
    const value = Number.parseInt(hex, 16);
    const bytes = [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
    return bytes.join(".");
  }
  if (hex.length === 32) {
    if (/^0{32}$/.test(hex)) return "::";
    if (hex === "00000000000000000000000001000000") return "::1";
    const words: string[] = [];
    for (let i = 0; i < 32; i += 8) {
      const word = hex.slice(i, i + 8);
      const swapped = word.match(/../g)?.reverse().join("") ?? word;
      words.push(swapped.slice(0, 4), swapped.slice(4));
    }
    return words.map((word) => word.replace(/^0+(?=.)/, "").toLowerCase()).join(":");
  }
  return hex;
}
