/**
 * The VM subsystem: lifecycle of VMs on real guests, behind the interfaces
 * in platform.ts, and read-only stats and health probes of them. Owns the VM
 * rows' state transitions and each VM's handles.json; never formats output.
 */

export { agentChannel } from "./agent-channel.ts";
export type {
  GuestAccess,
  GuestAgents,
  GuestChannel,
  GuestExec,
  GuestExecResult,
  GuestFiles,
  GuestReadiness,
  StoredDisk,
  VmDisks,
  VmFiles,
  VmHook,
  VmHookContext,
  VmmDrivers,
  VmNetwork,
} from "./platform.ts";
export { agentReadiness, agentRestoreReadiness, sshReadiness } from "./readiness/index.ts";
export type { RestoreFrom } from "./restore.ts";
export {
  createVmService,
  type OpOptions,
  type VmRuntime,
  type VmService,
  type VmServiceDeps,
} from "./service.ts";
export type { SavedState } from "./snapshot.ts";
export { createVmStats, type VmStatsDeps, type VmStatsService } from "./stats.ts";
