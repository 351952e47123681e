/** `banger vm logs NAME [-f]`: a VM's serial console; Ctrl-C ends a follow. */
import type { CommandSpec } from "../../spec.ts";
import { writeDownloaded } from "../../streams.ts";

interface LogsArgs {
  name: string;
  follow?: boolean;
}

export const logsSpec: CommandSpec<LogsArgs> = {
  name: "logs <name>",
  describe: "print a VM's serial console",
  examples: ["banger vm logs web", "banger vm logs -f web"],
  options: [{ flags: "-f, --follow", description: "keep printing new output" }],
  async handler(ctx, args) {
    const client = await ctx.client();
    const interrupted = ctx.interrupted();
    try {
      await client.call(
        "vm.logs",
        { name: args.name, follow: args.follow === true },
        {
          signal: interrupted,
          onStream: (_ch, data) => {
            if (data) return writeDownloaded(ctx.stdout, data);
          },
        },
      );
    } catch (error) {
      if (!interrupted.aborted) throw error;
    }
    return { exitCode: 0 };
  },
};
