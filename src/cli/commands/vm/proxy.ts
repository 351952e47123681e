/**
 * `banger vm proxy NAME PORT` (hidden): relays stdin/stdout to a TCP port of
 * a VM through the daemon; `vm ssh` uses it as ssh's ProxyCommand. stdin is
 * read only as fast as the daemon's socket takes it.
 */
import type { CommandSpec } from "../../spec.ts";
import { forwardInput, writeDownloaded } from "../../streams.ts";

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
          if (data) return writeDownloaded(ctx.stdout, data);
          ctx.stdout.end();
        },
      },
    );
    const stop = forwardInput(ctx.stdin, call, "tcp");
    try {
      await call.result;
    } finally {
      stop();
    }
    return { exitCode: 0 };
  },
};
