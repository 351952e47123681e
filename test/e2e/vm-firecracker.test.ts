/**
 * The VM suite (test/e2e/vm-suite.ts) through the Firecracker driver, against
 * the Firecracker double: every API call the driver makes is validated
 * against Firecracker's OpenAPI spec, and the guest boots for real.
 */
import { defineVmSuite } from "./vm-suite.ts";

defineVmSuite({ vmm: "firecracker" });
