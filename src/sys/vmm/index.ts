/**
 * VMM adapters: the QEMU driver (spawn, QMP control, liveness) and the
 * accelerator choice (KVM only where a probe boot proves it works).
 */
export {
  type AccelChoice,
  type AccelSetting,
  type ChooseAccelOptions,
  chooseAccel,
} from "./accel.ts";
export { createQemuDriver, type QemuDriverOptions } from "./qemu.ts";
