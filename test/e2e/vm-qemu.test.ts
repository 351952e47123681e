/** The VM suite (test/e2e/vm-suite.ts) through the QEMU driver. */
import { defineVmSuite } from "./vm-suite.ts";

defineVmSuite({ vmm: "qemu" });
