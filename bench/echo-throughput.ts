/**
 * `node echo-throughput.ts BYTES WARMUP ROUNDS HOST:PORT HOST:PORT`: per
 * round, one connection to each echo server (in turn, the first going first
 * in even rounds and second in odd ones), each sending BYTES, half-closing
 * and reading them all back. Prints {"HOST:PORT": [ms...], ...} as JSON, the
 * WARMUP rounds left out. One process for every round, so each connection
 * meets the same warm client. Exit 1 when a byte count differs or a round
 * takes over 120 s.
 */
import { connect } from "node:net";
import { performance } from "node:perf_hooks";

const [bytesText = "0", warmupText = "0", roundsText = "1", ...targets] = process.argv.slice(2);
const size = Number(bytesText);
const payload = Buffer.alloc(size, 0x5a);

function echo(target: string): Promise<number> {
  const [host = "", port = "0"] = target.split(/:(?=\d+$)/);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${target}: no echo in 120 s`)), 120_000);
    const started = performance.now();
    let received = 0;
    const socket = connect({ host, port: Number(port), noDelay: true }, () => socket.end(payload));
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    socket.on("error", reject);
    socket.on("close", () => {
      clearTimeout(timer);
      if (received === size) resolve(performance.now() - started);
      else reject(new Error(`${target}: ${received} of ${size} bytes came back`));
    });
  });
}

const samples = new Map<string, number[]>(targets.map((target) => [target, []]));
const rounds = Number(warmupText) + Number(roundsText);
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const target of order) {
      const ms = await echo(target);
      if (round >= Number(warmupText)) samples.get(target)?.push(ms);
    }
  }
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
}
process.stdout.write(`${JSON.stringify(Object.fromEntries(samples))}\n`);
