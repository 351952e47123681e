/**
 * `node dns-query.ts SERVER NAME [TYPE] [udp|tcp]`: one DNS query, printed
 * as JSON {rcode, answers: [data...]}; exit 1 after 5 s without an answer,
 * or at once (with the reason on stderr) when the server cannot be reached.
 * Run inside a namespace with `ip netns exec`.
 */
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import dnsPacket from "dns-packet";

const [server = "127.0.0.1", name = "", type = "A", transport = "udp"] = process.argv.slice(2);
const query = dnsPacket.encode({
  type: "query",
  id: 4242,
  flags: dnsPacket.RECURSION_DESIRED,
  questions: [{ type: type as "A", name }],
});
const print = (message: Buffer) => {
  const packet = dnsPacket.decode(message);
  const answers = (packet.answers ?? []).map((answer) => ("data" in answer ? String(answer.data) : ""));
  const { rcode } = packet as { rcode?: string };
  process.stdout.write(`${JSON.stringify({ rcode, answers })}\n`);
  process.exit(0);
};
setTimeout(() => process.exit(1), 5000);
if (transport === "tcp") {
  const socket = connect({ host: server, port: 53 }, () => {
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16BE(query.length);
    socket.write(Buffer.concat([prefix, query]));
  });
  socket.on("error", (error) => {
    process.stderr.write(`dns-query: ${error.message}\n`);
    process.exit(1);
  });
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) print(buffered.subarray(2));
  });
} else {
  const socket = createSocket("udp4");
  socket.on("error", (error) => {
    process.stderr.write(`dns-query: ${error.message}\n`);
    process.exit(1);
  });
  socket.on("message", print);
  socket.send(query, 53, server);
}
