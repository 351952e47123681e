/**
 * Run inside the bench's namespace: `node dns-client.ts NAME COUNT BLOCK
 * HOST...` sends COUNT sequential UDP queries for NAME (A record) to each
 * HOST:53, in turn in blocks of BLOCK, from one socket per server, and
 * prints {"HOST": [µs...], ...} as JSON. A query without an answer within
 * 2 s ends it with exit status 1.
 */
import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";

const [name = "", countText = "2000", blockText = "200", ...hosts] = process.argv.slice(2);
const count = Number(countText);
const block = Number(blockText);

function client(host: string): { ask(id: number): Promise<number>; close(): void } {
  const socket: Socket = createSocket("udp4");
  let waiting: ((message: Buffer) => void) | undefined;
  socket.on("message", (message) => waiting?.(message));
  return {
    ask(id) {
      const query = dnsPacket.encode({
        type: "query",
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: "A", name }],
      });
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${host}: no answer for ${name}`)), 2000);
        const started = performance.now();
        waiting = (message) => {
          if (message.readUInt16BE(0) !== id) return;
          clearTimeout(timer);
          if ((message.readUInt16BE(2) & 0xf) !== 0 || message.readUInt16BE(6) === 0) {
            reject(new Error(`${host}: no address for ${name}`));
            return;
          }
          resolve((performance.now() - started) * 1000);
        };
        socket.send(query, 53, host);
      });
    },
    close: () => socket.close(),
  };
}

const clients = hosts.map((host) => ({ host, client: client(host), samples: [] as number[] }));
let id = 1;
for (let warm = 0; warm < 100; warm++) {
  for (const { client } of clients) await client.ask(id++ % 65536);
}
while ((clients[0]?.samples.length ?? count) < count) {
  for (const { client, samples } of clients) {
    for (let i = 0; i < block; i++) samples.push(await client.ask(id++ % 65536));
  }
}
for (const { client } of clients) client.close();
process.stdout.write(
  `${JSON.stringify(Object.fromEntries(clients.map(({ host, samples }) => [host, samples])))}\n`,
);
