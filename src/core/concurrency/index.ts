/**
 * Concurrency primitives the lock discipline is built from: an async mutex,
 * a keyed lock set (per-VM locks, per-VM workspace locks) and a registry of
 * async operations. Pure: no I/O.
 */
export { KeyedLocks, Mutex } from "./mutex.ts";
export {
  type OperationContext,
  OperationRegistry,
  type OperationSnapshot,
  type OperationState,
} from "./operations.ts";
