/**
 * Baseline for the RPC row: a bare newline-echo server on a Unix socket.
 * Usage: node bench/echo-server.ts SOCKET. Prints "ready" once listening;
 * exits on SIGTERM or when stdin closes (its parent went away).
 */
import { rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write("usage: echo-server.ts SOCKET\n");
  process.exit(2);
}

function echoLines(socket: Socket): void {
  let buffer = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    buffer += chunk;
    let newline = buffer.indexOf("\n");
    while (newline !== -1) {
      socket.write(buffer.slice(0, newline + 1));
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf("\n");
    }
  });
  socket.on("error", () => socket.destroy());
}

rmSync(socketPath, { force: true });
const server = createServer(echoLines);
server.listen(socketPath, () => process.stdout.write("ready\n"));
const shutdown = () => {
  server.close();
  rmSync(socketPath, { force: true });
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.stdin.on("end", shutdown);
process.stdin.resume();
