/**
 * `banger daemon logs [-n N] [-f] [--json]`: the daemon's log, one readable
 * line per record (--json: the raw JSON lines); -f follows until Ctrl-C.
 */
import { open, readFile, stat } from "node:fs/promises";
import { sleep } from "../../../core/async/index.ts";
import { BangerError, ErrorCode } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { parseInteger } from "../../flags.ts";
import { formatLogLine } from "../../render/log-line.ts";
import { type CommandSpec, success } from "../../spec.ts";

/** How often a follow looks for new lines. */
const FOLLOW_POLL_MS = 250;

interface LogsArgs {
  follow?: boolean;
  lines: string;
  json?: boolean;
}

export const daemonLogsSpec: CommandSpec<LogsArgs> = {
  name: "logs",
  describe: "show the daemon's log",
  examples: ["banger daemon logs -n 20", "banger daemon logs -f", "banger daemon logs --json | jq -r .msg"],
  options: [
    { flags: "-f, --follow", description: "keep printing new lines" },
    { flags: "-n, --lines <n>", description: "lines from the end to show", default: "100" },
    { flags: "--json", description: "print the raw JSON lines" },
  ],
  async handler(ctx, args) {
    const count = parseInteger("--lines", args.lines);
    if (count < 0)
      throw new BangerError(ErrorCode.INVALID_PARAMS, `--lines must not be negative, not '${args.lines}'`);
    const render = args.json ? (line: string) => line : formatLogLine;
    const file = ctx.layout.daemonLog;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      if (!args.follow) {
        ctx.stderr.write(`no log yet at ${file}\n`);
        return success();
      }
      text = "";
    }
    const shown = count === 0 ? [] : splitLines(text).slice(-count);
    if (!args.follow) return success(shown.map(render).join("\n"));
    if (shown.length > 0) ctx.stdout.write(`${shown.map(render).join("\n")}\n`);
    await follow(ctx, file, Buffer.byteLength(text), render);
    return success();
  },
};

function splitLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/** Prints lines appended to `file` after `offset` until the CLI is interrupted. */
async function follow(
  ctx: CliContext,
  file: string,
  offset: number,
  render: (line: string) => string,
): Promise<void> {
  const interrupted = ctx.interrupted();
  let partial = "";
  while (!interrupted.aborted) {
    await sleep(FOLLOW_POLL_MS, interrupted).catch(() => undefined);
    const size = await stat(file)
      .then((s) => s.size)
      .catch(() => offset);
    if (size < offset) offset = 0;
    if (size === offset) continue;
    const handle = await open(file, "r");
    try {
      const buffer = Buffer.alloc(size - offset);
      await handle.read(buffer, 0, buffer.length, offset);
      offset = size;
      const lines = (partial + buffer.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) ctx.stdout.write(`${render(line)}\n`);
    } finally {
      await handle.close();
    }
  }
}
