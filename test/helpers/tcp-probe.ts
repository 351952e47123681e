/**
 * `node tcp-probe.ts HOST PORT [LOCAL_ADDRESS]`: exit 0 when a TCP
 * connection opens within 2 s, 1 otherwise. With `listen PORT [HOST]` it
 * accepts connections instead (printing "ready" once listening), until
 * killed.
 */
import { connect, createServer } from "node:net";

const [first = "", second = "", third] = process.argv.slice(2);
if (first === "listen") {
  const server = createServer((socket) => socket.end("hi\n"));
  server.listen(Number(second), third ?? "0.0.0.0", () => process.stdout.write("ready\n"));
} else {
  const socket = connect({ host: first, port: Number(second), ...(third ? { localAddress: third } : {}) });
  const timer = setTimeout(() => process.exit(1), 2000);
  socket.on("connect", () => {
    clearTimeout(timer);
    socket.destroy();
    process.exit(0);
  });
  socket.on("error", () => process.exit(1));
}
