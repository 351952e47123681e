/** Assertions every suite shares: a BangerError with a given code (and message). */
import assert from "node:assert/strict";
import { BangerError, type ErrorCode } from "../../src/protocol/index.ts";

/** True when `error` is a BangerError with `code` (any code when omitted). */
export function isBangerError(error: unknown, code?: ErrorCode): error is BangerError {
  return error instanceof BangerError && (code === undefined || error.code === code);
}

/** A predicate for `assert.throws`: a BangerError with `code` whose message matches `message`. */
export function withCode(code: ErrorCode, message?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isBangerError(error, code), `expected a BangerError ${code}, got: ${describe(error)}`);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/** Awaits `promise`, asserts it rejects with a BangerError of `code` (and a matching message), and returns the error. */
export async function rejectsWithCode(
  promise: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
): Promise<BangerError> {
  let caught: unknown;
  await assert.rejects(promise, (error: unknown) => {
    caught = error;
    return withCode(code, message)(error);
  });
  return caught as BangerError;
}

function describe(error: unknown): string {
  return error instanceof BangerError ? `${error.code}: ${error.message}` : String(error);
}
