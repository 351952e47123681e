/** `banger vm exec NAME [flags] -- CMD...`: run a command in a running VM, as `docker exec` does. */
import type { CommandSpec } from "../../spec.ts";
import { type ExecFlags, execOptions, execParams, runExec } from "./exec-flow.ts";

interface ExecArgs extends ExecFlags {
  name: string;
  command: string[];
}

export const execSpec: CommandSpec<ExecArgs> = {
  name: "exec <name> <command...>",
  describe: "run a command in a running VM: its output streamed, its exit status returned",
  examples: [
    "banger vm exec web -- uname -a",
    "banger vm exec -it web -- bash",
    "banger vm exec -e DEBUG=1 -w /srv -u www-data web -- ./serve.sh",
    "tar c src | banger vm exec -i web -- tar x -C /root",
    "banger vm exec --timeout 5m web -- make test",
    "banger vm exec -d web -- sleep 600",
  ],
  notes:
    "The command's argv reaches the guest word for word (no shell unless you run one).\nWithout -t, Ctrl-C sends SIGINT to the command and a second Ctrl-C kills it; SIGTERM and\nSIGHUP are forwarded. Exit status: the command's, 128+N if signal N killed it, 124 on --timeout.",
  options: execOptions,
  async handler(ctx, args) {
    const params = await execParams(ctx, args.name, args.command, args);
    return { exitCode: await runExec(ctx, await ctx.client(), params) };
  },
};
