/**
 * The protocol between `banger` and `bangerd`: method schemas, error codes,
 * wire envelopes and progress events. Pure: no I/O, imported by both sides.
 */
export * from "./errors.ts";
export * from "./methods.ts";
export * from "./notifications.ts";
export * from "./pool.ts";
export * from "./snapshot.ts";
export * from "./wire.ts";
export * from "./workspace.ts";
