/**
 * The shape of a CLI command. Each command is a spec: what it is called, what
 * it takes, examples for --help, and a handler that returns its output and
 * exit status. program.ts turns specs into the command tree and is the only
 * place that writes a handler's output and ends the process; handlers reach
 * the terminal, signals and the daemon only through the CliContext.
 */
import type { CliContext } from "./context.ts";

export interface CommandResult {
  /** Printed to stdout once the handler returns (a trailing newline is added if missing). */
  output?: string;
  exitCode: number;
}

export interface OptionSpec {
  /** Commander syntax: "-n, --lines <n>", "--json", "--no-start". */
  flags: string;
  description: string;
  default?: string | boolean;
  choices?: readonly string[];
  /** The option may be given many times; its value is the list. */
  repeatable?: boolean;
  /** The command refuses to run without it. */
  required?: boolean;
}

export interface CommandSpec<Args = Record<string, unknown>> {
  /** Commander syntax: the verb and its operands, e.g. "create <name>", "start <names...>". */
  name: string;
  aliases?: readonly string[];
  describe: string;
  /** Shown under "Examples:" in --help, one command line each. */
  examples: readonly string[];
  /** Extra text after the examples in --help. */
  notes?: string;
  options?: readonly OptionSpec[];
  hidden?: boolean;
  /**
   * Args holds each operand under its name (variadic ones as arrays), each
   * option under its camel-cased name, and `afterDashDash`: the words after
   * a `--` on the command line, or undefined when there was none.
   */
  handler(ctx: CliContext, args: Args): Promise<CommandResult>;
}

/**
 * A spec whose args type is its own business: the command tree holds specs
 * of many args types, and program.ts hands each the args commander parsed
 * from that spec's own operands and options.
 */
export type AnyCommandSpec = CommandSpec<never>;

export interface GroupSpec {
  name: string;
  describe: string;
  /** Its commands, and the groups under it (`vm workspace prepare`). */
  commands: readonly (AnyCommandSpec | GroupSpec)[];
}

export function isGroup(entry: AnyCommandSpec | GroupSpec): entry is GroupSpec {
  return "commands" in entry;
}

/** Every handler's args carry where `--` split the command line. */
export interface DashDash {
  afterDashDash: readonly string[] | undefined;
}

export function success(output?: string): CommandResult {
  return output === undefined ? { exitCode: 0 } : { output, exitCode: 0 };
}

/** `JSON.stringify` the way every `--json` prints. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** The `--json` flag every command that shows something takes. */
export const JSON_OPTION: OptionSpec = { flags: "--json", description: "print JSON" };
