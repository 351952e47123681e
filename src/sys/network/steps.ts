/**
 * Runs the steps of a src/core/network plan in order. A step whose command
 * fails with stderr matching its `tolerate` counts as done. When a step
 * fails, the `undo` of every earlier step of the same plan runs in reverse
 * order (failures of an undo are logged, the original error is thrown).
 * Failures become NETWORK_FAILED naming the device and the argv, or
 * PERMISSION_DENIED when the kernel said "Operation not permitted".
 */
import { errorMessage } from "../../core/async/index.ts";
import type { Logger } from "../../core/log/index.ts";
import type { NetworkStep } from "../../core/network/index.ts";
import { BangerError, ErrorCode, isBangerError } from "../../protocol/index.ts";
import { CommandFailedError, type Runner, type RunResult } from "../runner/index.ts";

export interface StepRun {
  runner: Runner;
  logger: Logger;
  /** The device (or table) the plan changes; named in errors. */
  device: string;
  signal?: AbortSignal | undefined;
  /** Fed to each step's stdin (an `nft -f -` ruleset). */
  input?: string | undefined;
}

/** Runs `steps`; returns how many commands changed something (tolerated ones excluded). */
export async function runSteps(steps: readonly NetworkStep[], run: StepRun): Promise<number> {
  const done: NetworkStep[] = [];
  let changed = 0;
  try {
    for (const step of steps) {
      const result = await runOne(step.argv, run);
      if (result.code === 0) {
        changed++;
        done.push(step);
      } else if (!(step.tolerate?.test(result.stderr) ?? false)) {
        throw translateNetworkError(run.device, step.argv, undefined, result.stderr);
      }
    }
  } catch (error) {
    await undoSteps(done, run);
    throw error;
  }
  return changed;
}

async function undoSteps(done: readonly NetworkStep[], run: StepRun): Promise<void> {
  for (const step of [...done].reverse()) {
    if (step.undo === undefined) continue;
    const result = await run.runner.run(step.undo, { allowFailure: true }).catch((error: unknown) => error);
    if (!(result instanceof Error) && (result as RunResult).code === 0) continue;
    run.logger.warn("undo of a failed network plan failed", {
      device: run.device,
      argv: [...step.undo],
      error: result instanceof Error ? result.message : (result as RunResult).stderr.trim(),
    });
  }
}

async function runOne(argv: readonly string[], run: StepRun): Promise<RunResult> {
  try {
    return await run.runner.run(argv, { allowFailure: true, signal: run.signal, input: run.input });
  } catch (error) {
    throw translateNetworkError(run.device, argv, error);
  }
}

export function translateNetworkError(
  device: string,
  argv: readonly string[],
  error: unknown,
  stderrText?: string,
): Error {
  if (isBangerError(error)) return error;
  const stderr = stderrText ?? stderrOf(error) ?? errorMessage(error);
  const detail = stderr.trim().split("\n").slice(-3).join("; ");
  const data = { device, argv: [...argv] };
  if (/Operation not permitted/i.test(stderr)) {
    return new BangerError(
      ErrorCode.PERMISSION_DENIED,
      `not permitted to change network device ${device} (${argv.join(" ")}): ${detail}`,
      { cause: error, data },
    );
  }
  return new BangerError(
    ErrorCode.NETWORK_FAILED,
    `network device ${device}: \`${argv.join(" ")}\` failed: ${detail}`,
    { cause: error, data },
  );
}

function stderrOf(error: unknown): string | undefined {
  return error instanceof CommandFailedError ? error.result.stderr : undefined;
}
