/**
 * `banger vm ssh NAME [-- CMD...]`: OpenSSH on this terminal, reaching the
 * guest through the daemon (`vm proxy` as ProxyCommand) with its pinned key.
 * A command's argv reaches the guest word for word, as with `vm exec`.
 */
import { planInteractiveSsh } from "../../../core/ssh/index.ts";
import type { CommandSpec } from "../../spec.ts";

interface SshArgs {
  name: string;
  command: string[];
}

export const sshSpec: CommandSpec<SshArgs> = {
  name: "ssh <name> [command...]",
  describe: "open an interactive shell (or run a command) over SSH, through the daemon",
  examples: ["banger vm ssh web", "banger vm ssh web -- journalctl -n 20", "banger vm ssh web -- top"],
  async handler(ctx, args) {
    const client = await ctx.client();
    const config = await client.call("vm.ssh-config", { name: args.name });
    const argv = planInteractiveSsh(config, [`${ctx.root}/bin/banger`, "vm", "proxy", args.name, "22"], {
      command: args.command,
      tty: ctx.stdin.isTTY === true && ctx.stdout.isTTY === true,
    });
    ctx.close();
    return { exitCode: await ctx.runInteractive(argv) };
  },
};
