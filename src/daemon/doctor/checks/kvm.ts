import type { HostProbes } from "../../../sys/host/index.ts";
import type { HostCheck } from "./check.ts";

/** Whether /dev/kvm is there and read-write; only the accelerator check proves it boots guests. */
export function kvmCheck(probes: HostProbes): HostCheck {
  return {
    name: "kvm",
    async run() {
      if (!(await probes.exists("/dev/kvm"))) {
        return {
          name: "kvm",
          status: "warn",
          detail: "/dev/kvm is missing: VMs run under QEMU TCG (software emulation, slower)",
          hint: "enable virtualization in the BIOS or load kvm_intel/kvm_amd",
        };
      }
      if (!(await probes.canAccess("/dev/kvm", "rw"))) {
        return {
          name: "kvm",
          status: "warn",
          detail: "/dev/kvm exists but is not read-write for this user",
          hint: "add the user to the kvm group, or run as root",
        };
      }
      return {
        name: "kvm",
        status: "ok",
        detail: "/dev/kvm is present and read-write (see the accel check for whether it boots guests)",
      };
    },
  };
}
