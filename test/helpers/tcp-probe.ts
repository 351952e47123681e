/**
 * `node tcp-probe.ts HOST PORT [LOCAL_ADDRESS]`: exit 0 when a TCP
 * connection opens within PROBE_TIMEOUT_MS (default 2000), 1 otherwise. With `listen PORT [HOST]` it
 * accepts connections instead (printing "ready" once listening), until
 * killed.
 */
import { connect, createServer } from "node:net";

const [first = "", second = "", third] = process.argv.slice(2);
if (first === "listen") {
  const server = createServer((socket) => {
    // A probe resets the connection at once; that is no reason to stop listening.
    socket.on("error", () => undefined);
    socket.end("hi\n");
  });
  server.listen(Number(second), third ?? "0.0.0.0", () => process.stdout.write("ready\n"));
} else {
  const socket = connect({ host: first, port: Number(second), ...(third ? { localAddress: third } : {}) });
  const timer = setTimeout(() => process.exit(1), Number(process.env.PROBE_TIMEOUT_MS ?? 2000));
  socket.on("connect", () => {
    clearTimeout(timer);
    socket.destroy();
    process.exit(0);
  });
  socket.on("error", (error: NodeJS.ErrnoException) => {
    process.stderr.write(`${error.code ?? error.message}\n`);
    process.exit(1);
  });
}
