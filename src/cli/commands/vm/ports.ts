/**
 * `banger vm ports NAME` (the guest's listening sockets) and
 * `banger vm port-forward NAME [LOCAL_PORT:]GUEST_PORT...`: listens on
 * 127.0.0.1 in the CLI's own network namespace and carries each connection
 * to the guest port through the daemon socket (`vm.proxy`, the `tcp` byte
 * stream), so it works where the guest network is unreachable, such as a
 * daemon inside BANGER_NETNS. Runs until Ctrl-C (or SIGTERM, SIGHUP).
 */
import { createServer, type Server, type Socket } from "node:net";
import { type ForwardSpec, parseForwardSpec } from "../../../core/network/ports.ts";
import { BangerError, ErrorCode } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { formatTable } from "../../render/table.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

export const portsSpec: CommandSpec<{ name: string; json?: boolean }> = {
  name: "ports <name>",
  describe: "list the listening TCP and UDP sockets inside a VM, with the process that owns each",
  examples: ["banger vm ports web", "banger vm ports web --json | jq '.sockets[].port'"],
  notes: "Read from the guest's /proc/net; the VM must be running.",
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const result = await (await ctx.client()).call("vm.ports", { name: args.name });
    if (args.json) return success(json(result));
    const rows = result.sockets.map((socket) => [
      socket.protocol,
      socket.address,
      String(socket.port),
      socket.process === null ? "-" : `${socket.process} (${socket.pid})`,
    ]);
    return success(formatTable(["proto", "address", "port", "process"], rows));
  },
};

export const portForwardSpec: CommandSpec<{ name: string; ports: string[] }> = {
  name: "port-forward <name> <ports...>",
  describe: "forward local ports on 127.0.0.1 to ports of a VM, through the daemon, until Ctrl-C",
  examples: [
    "banger vm port-forward web 8080:80",
    "banger vm port-forward db 5432 6379",
    "banger vm port-forward web 0:80      # any free local port",
  ],
  notes: "Each forward prints the address it listens on.",
  async handler(ctx, args) {
    const specs = args.ports.map(parseForwardSpec);
    const client = await ctx.client();
    await client.call("vm.show", { name: args.name });
    await forwardUntilInterrupted(ctx, client, args.name, specs);
    return success();
  },
};

async function forwardUntilInterrupted(
  ctx: CliContext,
  client: DaemonClient,
  name: string,
  specs: readonly ForwardSpec[],
): Promise<void> {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const stop = ctx.interrupted();
  try {
    for (const spec of specs) {
      const server = await listen(spec, (socket) =>
        relay(ctx, client, name, spec.guestPort, socket, sockets),
      );
      servers.push(server);
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : spec.localPort;
      ctx.stdout.write(`Forwarding from 127.0.0.1:${port} -> ${name}:${spec.guestPort}\n`);
    }
    await new Promise<void>((resolve) => {
      if (stop.aborted) resolve();
      else stop.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

function listen(spec: ForwardSpec, onConnection: (socket: Socket) => void): Promise<Server> {
  return new Promise((resolve, reject) => {
    // Half-open: the local client's FIN is passed on, and the guest's answer still comes back.
    const server = createServer({ allowHalfOpen: true }, onConnection);
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new BangerError(
          ErrorCode.NETWORK_FAILED,
          `cannot listen on 127.0.0.1:${spec.localPort}: ${error.code === "EADDRINUSE" ? "the port is in use" : error.message}`,
          { hint: "pick another local port, or 0 for any free one" },
        ),
      ),
    );
    server.listen({ host: "127.0.0.1", port: spec.localPort }, () => resolve(server));
  });
}

/** One local connection <-> one `vm.proxy` call; either end closing ends both. */
function relay(
  ctx: CliContext,
  client: DaemonClient,
  name: string,
  port: number,
  socket: Socket,
  sockets: Set<Socket>,
): void {
  sockets.add(socket);
  socket.on("close", () => sockets.delete(socket));
  socket.on("error", () => socket.destroy());
  const call = client.start(
    "vm.proxy",
    { name, port },
    {
      onStream: (_channel, data) => {
        if (data) socket.write(data);
        else socket.end();
      },
    },
  );
  socket.on("data", (chunk: Buffer) => {
    socket.pause();
    void Promise.resolve(call.write("tcp", chunk)).finally(() => socket.resume());
  });
  socket.on("end", () => call.end("tcp"));
  let settled = false;
  socket.on("close", () => {
    if (!settled) call.cancel();
  });
  call.result.then(
    () => {
      settled = true;
      socket.end();
    },
    (error: unknown) => {
      settled = true;
      if (!socket.destroyed) {
        ctx.stderr.write(
          `banger: ${name}:${port}: ${error instanceof Error ? error.message : String(error)}\n`,
        );
        socket.destroy();
      }
    },
  );
}
