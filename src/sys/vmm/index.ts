/**
 * VMM adapters: the QEMU driver (spawn, QMP control, liveness, the console
 * drain), the accelerator choice (KVM only where a probe boot proves it
 * works), and the census of a home's VMM processes from /proc.
 */
export {
  type AccelChoice,
  type AccelSetting,
  type ChooseAccelOptions,
  chooseAccel,
} from "./accel.ts";
export { listVmmProcesses, type VmmProcess } from "./census.ts";
export { killAndWait } from "./process.ts";
export { createQemuDriver, type QemuDriverOptions } from "./qemu.ts";
