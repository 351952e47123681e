/**
 * `node echo-throughput.ts HOST PORT BYTES`: sends BYTES to an echo server,
 * half-closes, reads them all back, and prints the milliseconds that took
 * (exit 1 if the byte count differs or nothing answers in 60 s).
 */
import { connect } from "node:net";
import { performance } from "node:perf_hooks";

const [host = "127.0.0.1", portText = "0", bytesText = "0"] = process.argv.slice(2);
const size = Number(bytesText);
const payload = Buffer.alloc(size, 0x5a);
setTimeout(() => process.exit(1), 60_000).unref();
const started = performance.now();
let received = 0;
const socket = connect({ host, port: Number(portText) }, () => socket.end(payload));
socket.on("data", (chunk: Buffer) => {
  received += chunk.length;
});
socket.on("error", () => process.exit(1));
socket.on("close", () => {
  if (received !== size) process.exit(1);
  process.stdout.write(`${performance.now() - started}\n`);
});
