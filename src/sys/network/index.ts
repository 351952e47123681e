/**
 * Host networking executors: they run the plans of src/core/network.
 * - host.ts: the bridge and the taps (`ip`);
 * - steps.ts: the step runner (undo on failure, tolerated errors) and the
 *   error mapping shared by every network executor.
 */
export * from "./host.ts";
