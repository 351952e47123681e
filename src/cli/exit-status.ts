/**
 * Exit statuses the CLI gives that are not an error code's (those come from
 * protocol's exitStatusFor): a check that did not pass, a signal.
 */
import { constants as osConstants } from "node:os";

/** A check that ran and did not pass (doctor, health): the shell's generic failure. */
export const EXIT_FAILURE = 1;

/** A shell's status for a process killed by `signal`: 128 + its number (the generic failure when unknown). */
export function exitStatusForSignal(signal: string | null): number {
  const number = signal === null ? undefined : (osConstants.signals as Record<string, number>)[signal];
  return number === undefined ? EXIT_FAILURE : 128 + number;
}
