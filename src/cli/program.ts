/**
 * The `banger` command tree, built from command specs (spec.ts). This is the
 * one place that runs a handler, prints its output and returns its exit
 * status; errors a handler throws are printed with their hint and their
 * code's exit status.
 */
import { Command, CommanderError, Option } from "commander";
import { BUILD_VERSION, ErrorCode, exitStatusFor } from "../protocol/index.ts";
import { completionSpec } from "./commands/completion.ts";
import { daemonGroup } from "./commands/daemon/index.ts";
import { doctorSpec, pingSpec } from "./commands/doctor.ts";
import { imageGroup } from "./commands/image/index.ts";
import { poolGroup } from "./commands/pool/index.ts";
import { snapshotGroup } from "./commands/snapshot/index.ts";
import { vmGroup } from "./commands/vm/index.ts";
import { type CliContext, reportError } from "./context.ts";
import { type AnyCommandSpec, type CommandResult, type GroupSpec, isGroup, type OptionSpec } from "./spec.ts";
import { suggestVmName } from "./suggest.ts";

const groups: readonly GroupSpec[] = [daemonGroup, vmGroup, imageGroup, snapshotGroup, poolGroup];
const topLevel: readonly AnyCommandSpec[] = [
  pingSpec,
  doctorSpec,
  completionSpec(() => ({ groups, topLevel })),
];

function buildProgram(
  ctx: CliContext,
  afterDashDash: readonly string[] | undefined,
): {
  program: Command;
  outcome: { result?: CommandResult };
} {
  const outcome: { result?: CommandResult } = {};
  const program = new Command("banger")
    .description(
      "Disposable Linux microVMs on your own machine.\nbangerd (the daemon) owns VMs, images and networking; banger talks to it.",
    )
    .version(BUILD_VERSION, "-V, --version")
    .option("--no-autostart", "do not start bangerd when it is not running (also BANGER_NO_AUTOSTART=1)")
    .configureOutput({
      writeOut: (text) => ctx.stdout.write(text),
      writeErr: (text) => ctx.stderr.write(text),
      // Usage errors read like every other error: "banger: unknown command 'lst'".
      outputError: (text, write) => write(text.replace(/^error: /, "banger: ")),
    })
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm run -- uname -a          # boot a VM, run a command, print its output\n  banger vm create web && banger vm ssh web\n  banger doctor\n\nEnvironment:\n  BANGER_HOME=DIR      config, state and runtime under DIR\n  BANGER_NETNS=NAME    autostart the daemon inside network namespace NAME\n  BANGER_NO_AUTOSTART  never autostart the daemon",
    )
    .hook("preAction", (command) => {
      if (command.opts().autostart === false) ctx.setAutostart(false);
    });
  program.exitOverride();
  const register = (parent: Command, spec: AnyCommandSpec) =>
    addCommand(parent, spec, async (args) => {
      outcome.result = await spec.handler(ctx, { ...args, afterDashDash } as never);
    });
  const registerGroup = (parent: Command, group: GroupSpec) => {
    const command = parent.command(group.name).description(group.describe);
    for (const entry of group.commands)
      if (isGroup(entry)) registerGroup(command, entry);
      else register(command, entry);
  };
  for (const group of groups) registerGroup(program, group);
  for (const spec of topLevel) register(program, spec);
  return { program, outcome };
}

function addCommand(
  parent: Command,
  spec: AnyCommandSpec,
  run: (args: Record<string, unknown>) => Promise<void>,
): Command {
  const command = parent.command(spec.name, spec.hidden ? { hidden: true } : {}).description(spec.describe);
  for (const alias of spec.aliases ?? []) command.alias(alias);
  for (const option of spec.options ?? []) command.addOption(commanderOption(option));
  const help = [`\nExamples:\n  ${spec.examples.join("\n  ")}`, spec.notes ? `\n${spec.notes}` : ""].join(
    "\n",
  );
  command.addHelpText("after", help.trimEnd());
  command.action(async (...params: unknown[]) => {
    const self = params.at(-1) as Command;
    const args: Record<string, unknown> = { ...self.opts() };
    self.registeredArguments.forEach((argument, index) => {
      args[argument.name()] = self.processedArgs[index];
    });
    await run(args);
  });
  return command;
}

function commanderOption(spec: OptionSpec): Option {
  const option = new Option(spec.flags, spec.description);
  if (spec.choices) option.choices(spec.choices);
  if (spec.repeatable) option.argParser((value: string, previous: string[] = []) => [...previous, value]);
  if (spec.default !== undefined) option.default(spec.default);
  if (spec.required) option.makeOptionMandatory();
  return option;
}

/** Runs the CLI and returns the process exit status. */
export async function runCli(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const dashDash = argv.indexOf("--");
  const { program, outcome } = buildProgram(ctx, dashDash === -1 ? undefined : argv.slice(dashDash + 1));
  try {
    await program.parseAsync(argv as string[], { from: "user" });
    const result = outcome.result ?? { exitCode: 0 };
    if (result.output !== undefined && result.output !== "")
      ctx.stdout.write(result.output.endsWith("\n") ? result.output : `${result.output}\n`);
    return result.exitCode;
  } catch (error) {
    if (error instanceof CommanderError)
      return error.exitCode === 0 ? 0 : exitStatusFor[ErrorCode.INVALID_PARAMS];
    return reportError(ctx, await suggestVmName(ctx, error));
  } finally {
    ctx.close();
  }
}
