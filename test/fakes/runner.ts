/**
 * FakeRunner: matches argv against registered rules, records every call, and
 * throws on any command no rule expects, so a test sees every side effect.
 */
import {
  CommandFailedError,
  type Runner,
  type RunOptions,
  type RunResult,
} from "../../src/sys/runner/index.ts";

export interface FakeRule {
  /** Matches when every element equals (string) or tests (RegExp) the argv element at its index. */
  match: readonly (string | RegExp)[];
  /** Reply, or a function computing one; throwing from it simulates a spawn failure. */
  reply?:
    | Partial<RunResult>
    | ((argv: readonly string[], options: RunOptions) => Partial<RunResult> | Promise<Partial<RunResult>>);
}

export interface FakeCall {
  argv: readonly string[];
  options: RunOptions;
}

export class FakeRunner implements Runner {
  readonly calls: FakeCall[] = [];
  #rules: FakeRule[] = [];

  on(match: readonly (string | RegExp)[], reply?: FakeRule["reply"]): this {
    this.#rules.push(reply === undefined ? { match } : { match, reply });
    return this;
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    this.calls.push({ argv: [...argv], options });
    const rule = this.#rules.find((candidate) => matches(candidate.match, argv));
    if (!rule) throw new Error(`FakeRunner: unexpected command: ${argv.join(" ")}`);
    const partial = typeof rule.reply === "function" ? await rule.reply(argv, options) : (rule.reply ?? {});
    const result: RunResult = { code: 0, signal: null, stdout: "", stderr: "", durationMs: 0, ...partial };
    if (result.code !== 0 && !options.allowFailure) throw new CommandFailedError(argv, result);
    return result;
  }

  /** The argv of every call, joined with spaces, for compact assertions. */
  commands(): string[] {
    return this.calls.map((call) => call.argv.join(" "));
  }
}

function matches(pattern: readonly (string | RegExp)[], argv: readonly string[]): boolean {
  return pattern.every((part, index) => {
    const value = argv[index];
    if (value === undefined) return false;
    return typeof part === "string" ? part === value : part.test(value);
  });
}
