/**
 * The VM subsystem: lifecycle of VMs on real guests, behind the interfaces
 * in platform.ts. Owns the VM rows' state transitions and each VM's
 * handles.json; never formats output.
 */
export type {
  GuestAccess,
  GuestExec,
  RootDiskHandle,
  VmDisks,
  VmFiles,
  VmmDrivers,
  VmNetwork,
} from "./platform.ts";
export {
  createVmService,
  type OpOptions,
  type Progress,
  type VmService,
  type VmServiceDeps,
} from "./service.ts";
