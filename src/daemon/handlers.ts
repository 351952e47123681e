/**
 * The RPC method table: maps each protocol method to the service that owns
 * it. Handlers return data; rendering is the CLI's job.
 */
import { BUILD_VERSION, type DoctorCheck, PROTOCOL_VERSION } from "../protocol/index.ts";
import type { Store } from "../sys/store/index.ts";
import type { HandlerTable } from "./rpc/server.ts";

export interface DaemonInfo {
  pid: number;
  startedAt: Date;
  socket: string;
  stateDir: string;
  netns: string | null;
  /** Asks the daemon to stop after the current reply is sent; returns the VMs it stopped first. */
  requestStop(reason: string, stopVms: boolean): Promise<string[]>;
  /** Async operations still running. */
  operations(): number;
}

export interface HandlerDeps {
  info: DaemonInfo;
  store: Store;
  doctor(): Promise<DoctorCheck[]>;
}

export function buildHandlers(deps: HandlerDeps): HandlerTable {
  const { info, store } = deps;
  const runningVms = () => store.listVms().filter((vm) => vm.state === "running").length;
  return {
    "daemon.hello": (params) => ({
      protocol: PROTOCOL_VERSION,
      build: BUILD_VERSION,
      pid: info.pid,
      compatible: params.protocol === PROTOCOL_VERSION,
      runningVms: runningVms(),
    }),
    "daemon.ping": () => ({ pong: true as const, time: new Date().toISOString() }),
    "daemon.status": () => {
      const vms = store.listVms();
      return {
        pid: info.pid,
        build: BUILD_VERSION,
        protocol: PROTOCOL_VERSION,
        node: process.versions.node,
        startedAt: info.startedAt.toISOString(),
        uptimeMs: Date.now() - info.startedAt.getTime(),
        socket: info.socket,
        stateDir: info.stateDir,
        netns: info.netns,
        vms: { total: vms.length, running: vms.filter((vm) => vm.state === "running").length },
        operations: info.operations(),
      };
    },
    "daemon.shutdown": async (params) => ({
      stopping: true as const,
      stoppedVms: await info.requestStop("shutdown requested over RPC", params?.stopVms === true),
    }),
    "daemon.doctor": async () => ({ checks: await deps.doctor() }),
  };
}
