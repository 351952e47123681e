/**
 * A host-wide feature owned by the composition root: `ensure` brings it up
 * (idempotent: a previous daemon may have left it up), `teardown` takes it
 * down (idempotent, also after a failed `ensure`).
 */
export interface HostFeature {
  readonly name: string;
  ensure(signal: AbortSignal): Promise<void>;
  teardown(): Promise<void>;
}
