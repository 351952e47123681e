/**
 * The `banger` command tree (commander): nouns and verbs, each with examples.
 */
import { Command, CommanderError } from "commander";
import { BUILD_VERSION } from "../protocol/index.ts";
import { registerDaemonCommands } from "./commands/daemon.ts";
import { registerImageCommands } from "./commands/image.ts";
import { registerSnapshotCommands } from "./commands/snapshot.ts";
import { registerVmCommands } from "./commands/vm.ts";
import { type CliContext, reportError } from "./context.ts";

function buildProgram(ctx: CliContext): Command {
  const program = new Command("banger")
    .description(
      "Disposable Linux microVMs on your own machine.\nbangerd (the daemon) owns VMs, images and networking; banger talks to it.",
    )
    .version(BUILD_VERSION, "-V, --version")
    .option("--no-autostart", "do not start bangerd when it is not running (also BANGER_NO_AUTOSTART=1)")
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm run -- uname -a          # boot a VM, run a command, print its output\n  banger vm create web && banger vm ssh web\n  banger doctor\n\nEnvironment:\n  BANGER_HOME=DIR      config, state and runtime under DIR\n  BANGER_NETNS=NAME    autostart the daemon inside network namespace NAME\n  BANGER_NO_AUTOSTART  never autostart the daemon",
    )
    .hook("preAction", (command) => {
      if (command.opts().autostart === false) ctx.setAutostart(false);
    });
  program.exitOverride();
  registerDaemonCommands(program, ctx);
  registerVmCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerSnapshotCommands(program, ctx);
  return program;
}

/** Runs the CLI and returns the process exit status. */
export async function runCli(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(argv as string[], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    return reportError(ctx, error);
  } finally {
    ctx.close();
  }
}
