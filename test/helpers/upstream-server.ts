/**
 * Run inside the "upstream" namespace by test/helpers/upstream.ts: an HTTP
 * server on each address given (port 80; `/whoami` answers the peer's
 * address, `/blob?bytes=N` N deterministic bytes, anything else "hello"),
 * and a DNS server on the first address answering the names in ZONE
 * (JSON {name: address}); other names get NXDOMAIN. Prints "ready" when
 * listening; ends on SIGTERM.
 */
import { createSocket } from "node:dgram";
import { createServer } from "node:http";
import dnsPacket from "dns-packet";

const addresses = (process.env.UPSTREAM_ADDRESSES ?? "").split(",");
const zone = JSON.parse(process.env.UPSTREAM_ZONE ?? "{}") as Record<string, string>;

export function blobByte(index: number): number {
  return (index * 31 + 7) % 251;
}

const listening: Promise<void>[] = [];
for (const address of addresses) {
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://x");
    if (url.pathname === "/whoami") {
      response.end(request.socket.remoteAddress ?? "");
    } else if (url.pathname === "/blob") {
      const size = Number(url.searchParams.get("bytes") ?? "0");
      const body = Buffer.alloc(size);
      for (let i = 0; i < size; i++) body[i] = blobByte(i);
      response.end(body);
    } else {
      response.end(`hello from ${address}\n`);
    }
  });
  listening.push(new Promise((resolve) => server.listen(80, address, () => resolve())));
}
const dns = createSocket("udp4");
dns.on("message", (message, remote) => {
  try {
    const query = dnsPacket.decode(message);
    const question = query.questions?.[0];
    const answer = question ? zone[question.name.toLowerCase()] : undefined;
    dns.send(
      dnsPacket.encode({
        type: "response",
        id: query.id ?? 0,
        flags: dnsPacket.RECURSION_AVAILABLE | (answer === undefined ? 3 : 0),
        questions: query.questions ?? [],
        answers:
          answer !== undefined && question?.type === "A"
            ? [{ type: "A", name: question.name, ttl: 300, data: answer }]
            : [],
      }),
      remote.port,
      remote.address,
    );
  } catch {
    // Not DNS: ignore.
  }
});
listening.push(new Promise((resolve) => dns.bind(53, addresses[0], () => resolve())));
await Promise.all(listening);
process.stdout.write("ready\n");
process.on("SIGTERM", () => process.exit(0));
