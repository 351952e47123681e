/**
 * Run inside the bench's namespace: `node dns-client.ts NAME A_HOST B_HOST
 * COUNT BLOCK` sends COUNT sequential UDP queries for NAME (A record) to
 * each of A_HOST:53 and B_HOST:53, in alternating blocks of BLOCK, from one
 * socket per server, and prints {"a": [µs...], "b": [µs...]} as JSON. A
 * query without an answer within 2 s ends it with exit status 1.
 */
import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";

const [name = "", hostA = "", hostB = "", countText = "2000", blockText = "200"] = process.argv.slice(2);
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

const a = client(hostA);
const b = client(hostB);
const samples = { a: [] as number[], b: [] as number[] };
let id = 1;
for (let warm = 0; warm < 100; warm++) {
  await a.ask(id++ % 65536);
  await b.ask(id++ % 65536);
}
while (samples.a.length < count) {
  for (let i = 0; i < block; i++) samples.a.push(await a.ask(id++ % 65536));
  for (let i = 0; i < block; i++) samples.b.push(await b.ask(id++ % 65536));
}
a.close();
b.close();
process.stdout.write(`${JSON.stringify(samples)}\n`);
