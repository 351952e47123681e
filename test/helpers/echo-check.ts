/**
 * `node echo-check.ts HOST PORT BYTES`: sends BYTES deterministic bytes to
 * an echo server, half-closes, reads everything back and prints
 * `sent=N received=M same=true|false`. Exit 1 if nothing connects in 10 s
 * or the exchange takes over 120 s.
 */
import { createHash } from "node:crypto";
import { connect } from "node:net";

const [host = "127.0.0.1", portText = "0", bytesText = "0"] = process.argv.slice(2);
const size = Number(bytesText);
const payload = Buffer.alloc(size);
for (let i = 0; i < size; i++) payload[i] = (i * 131 + 17) % 256;
const sent = createHash("sha256").update(payload).digest("hex");
const received = createHash("sha256");
let count = 0;
setTimeout(() => process.exit(1), 120_000).unref();
const socket = connect({ host, port: Number(portText), timeout: 10_000 }, () => {
  socket.setTimeout(0);
  socket.end(payload);
});
socket.on("timeout", () => process.exit(1));
socket.on("data", (chunk: Buffer) => {
  count += chunk.length;
  received.update(chunk);
});
socket.on("error", (error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
socket.on("close", () => {
  process.stdout.write(`sent=${size} received=${count} same=${received.digest("hex") === sent}\n`);
  process.exit(0);
});
