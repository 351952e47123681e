/**
 * Opt-in: the VM suite (test/e2e/vm-suite.ts) against a real Firecracker on
 * a KVM host. Set BANGER_REAL_FIRECRACKER=/path/to/firecracker to run it.
 */
import { defineVmSuite } from "./vm-suite.ts";

const binary = process.env.BANGER_REAL_FIRECRACKER;

defineVmSuite({
  vmm: "firecracker",
  firecrackerBinary: binary || "firecracker",
  skip: binary ? undefined : "set BANGER_REAL_FIRECRACKER=/path/to/firecracker to run this on a KVM host",
});
