/**
 * The DNS row's floor: `node dns-floor.ts HOST ADDRESS` answers every
 * datagram on HOST:53 with the query, QR/AA/RA set and one A record for
 * ADDRESS appended (what banger's fast path sends for a VM name), with no
 * parsing at all. It is what node:dgram itself costs per query, so the row
 * can tell Node's share from banger's. Prints "ready" once bound; exits on
 * SIGTERM or when stdin closes.
 */
import { createSocket } from "node:dgram";

const [host = "127.0.0.3", address = "10.77.0.2"] = process.argv.slice(2);
const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, ...address.split(".").map(Number)]);
const socket = createSocket("udp4");
socket.on("message", (query, remote) => {
  const reply = Buffer.allocUnsafe(query.length + record.length);
  query.copy(reply);
  record.copy(reply, query.length);
  reply.writeUInt16BE(0x8580, 2);
  reply.writeUInt16BE(1, 6);
  socket.send(reply, remote.port, remote.address);
});
socket.bind(53, host, () => process.stdout.write("ready\n"));
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
