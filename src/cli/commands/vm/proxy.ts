/**
 * `banger vm proxy NAME PORT` (hidden): relays stdin/stdout to a TCP port of
 * a VM through the daemon; `vm ssh` uses it as ssh's ProxyCommand.
 */
import type { CommandSpec } from "../../spec.ts";

interface ProxyArgs {
  name: string;
  port: string;
}

export const proxySpec: CommandSpec<ProxyArgs> = {
  name: "proxy <name> <port>",
  hidden: true,
  describe: "relay stdin/stdout to a TCP port of a VM through the daemon (ssh ProxyCommand)",
  examples: ["ssh -o ProxyCommand='banger vm proxy web 22' root@web"],
  async handler(ctx, args) {
    const client = await ctx.client();
    const call = client.start(
      "vm.proxy",
      { name: args.name, port: Number(args.port) },
      {
        onStream: (_ch, data) => {
          if (data) ctx.stdout.write(data);
          else ctx.stdout.end();
        },
      },
    );
    ctx.stdin.on("data", (chunk: Buffer) => void call.write("tcp", chunk));
    ctx.stdin.on("end", () => call.end("tcp"));
    await call.result;
    return { exitCode: 0 };
  },
};
