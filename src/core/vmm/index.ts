/**
 * The VMM seam: the driver contract every VMM implements (contract.ts) and
 * the pure planners that turn a BootSpec into a VMM command line.
 */
export * from "./contract.ts";
export * from "./qemu-plan.ts";
