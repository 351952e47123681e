/**
 * A yes/no question on the terminal: asked on stderr, answered on stdin.
 * Callers decide what no terminal means (refuse, or keep the refusal the
 * daemon gave); only "y" or "yes" is a yes.
 */
import type { CliContext } from "./context.ts";

export async function askYesNo(
  ctx: Pick<CliContext, "stdin" | "stderr">,
  question: string,
): Promise<boolean> {
  ctx.stderr.write(`${question} [y/N] `);
  return /^y(es)?$/i.test((await readLine(ctx.stdin)).trim());
}

function readLine(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const onData = (chunk: Buffer | string) => {
      text += chunk.toString();
      if (text.includes("\n")) finish();
    };
    const finish = () => {
      stream.off("data", onData);
      stream.off("end", finish);
      stream.pause();
      resolve(text.split("\n")[0]!);
    };
    stream.on("data", onData);
    stream.on("end", finish);
    stream.resume();
  });
}
