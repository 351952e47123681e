import { BangerError, type DoctorCheck } from "../../../protocol/index.ts";
import type { AccelChoice } from "../../../sys/vmm/index.ts";
import type { HostCheck } from "./check.ts";

/** The accelerator QEMU guests get (the KVM probe boot's verdict), or why choosing one failed. */
export function accelCheck(accel: { get(): Promise<AccelChoice> }): HostCheck {
  return {
    name: "accelerator",
    async run() {
      try {
        return describeAccel(await accel.get());
      } catch (error) {
        return describeAccelFailure(error);
      }
    },
  };
}

/** The accelerator choice as a check: TCG works but is slow, so it is a warning. */
export function describeAccel(choice: AccelChoice): DoctorCheck {
  if (choice.accel === "kvm") return { name: "accelerator", status: "ok", detail: `KVM: ${choice.reason}` };
  const check: DoctorCheck = { name: "accelerator", status: "warn", detail: `TCG: ${choice.reason}` };
  if (choice.configured !== "tcg") {
    check.hint =
      "guests run under software emulation (several times slower); a host with working KVM is faster";
  }
  return check;
}

/** A failed choice (vmm.accel = kvm on a host without usable KVM) as a failing check. */
export function describeAccelFailure(error: unknown): DoctorCheck {
  const check: DoctorCheck = {
    name: "accelerator",
    status: "fail",
    detail: String((error as Error).message),
  };
  if (error instanceof BangerError && error.hint) check.hint = error.hint;
  return check;
}
