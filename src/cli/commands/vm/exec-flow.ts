/**
 * Running a command in a guest (vm exec, vm run), docker's way: the flags
 * (-i -t -e --env-file -w -u --timeout -d), the byte streams, and what the
 * CLI's own signals mean for the guest command:
 * - without a PTY, Ctrl-C sends SIGINT to the guest process group and a
 *   second Ctrl-C cancels the exec (the daemon kills the group); with -i -t the terminal is raw, so keys
 *   (Ctrl-C too) reach the PTY; SIGTERM and SIGHUP are forwarded;
 * - the terminal's size follows the PTY (`$/resize`);
 * - stdout's reader going away (EPIPE) cancels the command, quietly;
 * - the exit status is the command's, 128+N when signal N killed it, 124
 *   when --timeout elapsed.
 */
import { readFile } from "node:fs/promises";
import {
  BangerError,
  ErrorCode,
  exitStatusFor,
  type ParamsOf,
  type ResultOf,
} from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { exitStatusForSignal } from "../../exit-status.ts";
import { parseDuration } from "../../flags.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import type { OptionSpec } from "../../spec.ts";
import { forwardInput, writeDownloaded } from "../../streams.ts";

export interface ExecFlags {
  interactive?: boolean;
  tty?: boolean;
  env?: string[];
  envFile?: string[];
  workdir?: string;
  user?: string;
  timeout?: string;
  detach?: boolean;
}

export const execOptions: readonly OptionSpec[] = [
  { flags: "-i, --interactive", description: "pass stdin to the command (it is not read otherwise)" },
  { flags: "-t, --tty", description: "give the command a PTY (stdin must be a terminal; use with -i)" },
  {
    flags: "-e, --env <KEY=VALUE>",
    description: "set an environment variable; KEY alone takes its value from here (repeatable)",
    repeatable: true,
  },
  {
    flags: "--env-file <file>",
    description: "read KEY=VALUE lines from a file (repeatable)",
    repeatable: true,
  },
  { flags: "-w, --workdir <dir>", description: "working directory in the guest" },
  { flags: "-u, --user <user>", description: "user[:group] (names or numbers) to run the command as" },
  { flags: "--timeout <duration>", description: "kill the command after this long (30s, 5m, 1h); exits 124" },
  { flags: "-d, --detach", description: "start the command and return at once" },
];

/** As timeout(1) exits when the time ran out. */
const EXIT_TIMEOUT = 124;

type ExecParams = ParamsOf<"vm.exec">;

/** The `vm.exec` params for `argv` in VM `name` from the flags; refuses -t without a terminal. */
export async function execParams(
  ctx: Pick<CliContext, "env" | "stdin" | "stdout">,
  name: string,
  argv: readonly string[],
  flags: ExecFlags,
  /**
   * "run" (vm run) follows docker run: the argv are arguments to an OCI
   * image's ENTRYPOINT (they replace CMD), and none runs the image's own
   * command; "exec" (vm exec) needs the whole command.
   */
  mode: "exec" | "run" = "exec",
): Promise<ExecParams> {
  if (argv.length === 0 && mode === "exec") {
    throw new BangerError(ErrorCode.INVALID_PARAMS, "no command given", {
      hint: `put the command after --, e.g. banger vm exec ${name} -- uname -a`,
    });
  }
  if (flags.tty && ctx.stdin.isTTY !== true) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, "-t needs a terminal on stdin, and stdin is not one", {
      hint: "drop -t (and pipe input with -i), or run the command from a terminal",
    });
  }
  if (flags.detach && (flags.interactive || flags.tty)) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, "-d cannot be combined with -i or -t", {
      hint: "a detached command has no terminal and no stdin",
    });
  }
  const env = [
    ...(await envFromFiles(flags.envFile ?? [], ctx.env)),
    ...envFromFlags(flags.env ?? [], ctx.env),
  ];
  const params: ExecParams = { name, argv: [...argv] };
  if (mode === "run") params.entrypoint = true;
  if (env.length > 0) params.env = env;
  if (flags.workdir !== undefined) params.cwd = flags.workdir;
  if (flags.user !== undefined) params.user = flags.user;
  if (flags.interactive) params.stdin = true;
  if (flags.tty) params.tty = { cols: ctx.stdout.columns ?? 80, rows: ctx.stdout.rows ?? 24 };
  if (flags.timeout !== undefined) params.timeoutMs = parseDuration("--timeout", flags.timeout);
  if (flags.detach) params.detach = true;
  return params;
}

/** `-e KEY=VALUE` as given; `-e KEY` takes KEY's value from the CLI's environment, or is left out. */
function envFromFlags(entries: readonly string[], here: CliContext["env"]): string[] {
  return entries.flatMap((entry) => {
    const equals = entry.indexOf("=");
    if (equals === 0) {
      throw new BangerError(ErrorCode.INVALID_PARAMS, `-e '${entry}' has no variable name`, {
        hint: "use -e KEY=VALUE, or -e KEY to pass KEY's value from here",
      });
    }
    if (equals > 0) return [entry];
    const value = here[entry];
    return value === undefined ? [] : [`${entry}=${value}`];
  });
}

/** docker's env-file: KEY=VALUE per line, `#` comments and blank lines skipped, KEY alone as with -e. */
async function envFromFiles(files: readonly string[], here: CliContext["env"]): Promise<string[]> {
  const entries: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      throw new BangerError(
        ErrorCode.INVALID_PARAMS,
        `cannot read --env-file ${file}: ${(error as Error).message}`,
      );
    }
    const lines = text.split("\n").map((line) => line.replace(/\r$/, ""));
    entries.push(...lines.filter((line) => line.trim() !== "" && !line.trimStart().startsWith("#")));
  }
  return envFromFlags(entries, here);
}

/** Runs the exec and returns the CLI's exit status; errors from the daemon are thrown. */
export async function runExec(ctx: CliContext, client: DaemonClient, params: ExecParams): Promise<number> {
  const tty = params.tty !== undefined;
  const raw = tty && params.stdin === true && typeof ctx.stdin.setRawMode === "function";
  const output = ctx.outputClosed();
  const call = client.start("vm.exec", params, {
    onStream: (ch, data) => {
      if (data === null || output.aborted) return;
      return writeDownloaded(ch === "stderr" ? ctx.stderr : ctx.stdout, data);
    },
  });
  const cleanups: (() => void)[] = [];
  let interrupts = 0;
  cleanups.push(
    ctx.onSignal((signal) => {
      if (signal !== "SIGINT") return call.signal(signal);
      interrupts += 1;
      // The second Ctrl-C cancels the exec: the daemon kills the group and ends it.
      if (interrupts === 1) call.signal("SIGINT");
      else call.cancel();
    }),
  );
  const onOutputClosed = () => call.cancel();
  output.addEventListener("abort", onOutputClosed, { once: true });
  cleanups.push(() => output.removeEventListener("abort", onOutputClosed));
  if (tty) cleanups.push(ctx.onResize(() => call.resize(ctx.stdout.columns ?? 80, ctx.stdout.rows ?? 24)));
  if (raw) {
    ctx.stdin.setRawMode?.(true);
    cleanups.push(() => ctx.stdin.setRawMode?.(false));
  }
  if (params.stdin) cleanups.push(forwardInput(ctx.stdin, call, "stdin"));
  try {
    const result = await call.result;
    return exitStatusOf(ctx, params, result);
  } catch (error) {
    if (output.aborted) return exitStatusForSignal("SIGPIPE");
    if (interrupts >= 2 && error instanceof BangerError && error.code === ErrorCode.CANCELLED) {
      ctx.stderr.write("banger: the command was killed (Ctrl-C twice)\n");
      return exitStatusFor[ErrorCode.CANCELLED];
    }
    throw error;
  } finally {
    for (const cleanup of cleanups.reverse()) cleanup();
  }
}

function exitStatusOf(ctx: CliContext, params: ExecParams, result: ResultOf<"vm.exec">): number {
  if (result.timedOut) {
    ctx.stderr.write(
      `banger: the command ran out of time (--timeout, ${params.timeoutMs} ms) and was killed\n`,
    );
    return EXIT_TIMEOUT;
  }
  if (params.detach) return 0;
  if (ctx.outputClosed().aborted) return exitStatusForSignal("SIGPIPE");
  return result.exitCode ?? exitStatusForSignal(result.signal);
}
