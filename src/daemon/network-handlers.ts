/**
 * RPC handlers for the network side of VMs. They wrap the `vm.*` handlers
 * of vm-handlers.ts where a VM's network settings ride along:
 * - `vm.create` / `vm.create.begin` take `publish` and `egress`, checked
 *   before anything is made and staged under the VM's name for its first
 *   start (a name is chosen here when none is given);
 * - `vm.show`, `vm.list` add `ports` and `egress`; `vm.stats` adds the
 *   egress drop count; `vm.create` and `vm.delete` refresh the DNS zone,
 *   and a create starts the DNS server if it waited for a VM;
 * and add `vm.ports` (the guest's listening sockets, read over exec) and
 * `vm.egress` (a new policy, applied at once to a running VM).
 */
import { randomBytes } from "node:crypto";
import type { OperationRegistry } from "../core/concurrency/index.ts";
import {
  assertDistinctHostPorts,
  formatEgressPolicy,
  formatPublishedPort,
  parseEgressPolicy,
  parseGuestPorts,
  parsePublishSpec,
  planGuestPortsScript,
} from "../core/network/index.ts";
import { isActiveState, tapNameForVmId } from "../core/vm/index.ts";
import { BangerError, type CreateVmParams, ErrorCode, type VmInfo } from "../protocol/index.ts";
import type { Networking, VmNetworkSettings } from "./network/index.ts";
import type { HandlerContext, HandlerTable } from "./rpc/server.ts";
import type { VmService } from "./vm/index.ts";

export interface NetworkHandlerDeps {
  base: HandlerTable;
  vms: Pick<VmService, "show" | "exec">;
  networking: Pick<Networking, "settings" | "setEgress" | "dropCounts" | "dns">;
  createOps: OperationRegistry<VmInfo>;
}

const PORTS_TIMEOUT_MS = 15_000;

export function buildNetworkHandlers(deps: NetworkHandlerDeps): HandlerTable {
  const { base, vms, networking, createOps } = deps;
  const { settings } = networking;
  const decorate = async (info: VmInfo): Promise<VmInfo> => {
    const stored = await settings.peek(info.id);
    return {
      ...info,
      ports: stored.publish.map(formatPublishedPort),
      egress: formatEgressPolicy(stored.egress),
    };
  };
  const required = <M extends keyof HandlerTable>(method: M) => {
    const handler = base[method];
    if (handler === undefined) throw new Error(`network handlers: no base handler for ${method}`);
    return handler as NonNullable<HandlerTable[M]>;
  };
  const createBase = required("vm.create");
  const beginBase = required("vm.create.begin");
  const showBase = required("vm.show");
  const listBase = required("vm.list");
  const statsBase = required("vm.stats");
  const deleteBase = required("vm.delete");

  /** Validates and stages the network part of a create; returns the rest and how to unstage. */
  const stage = async (params: CreateVmParams, signal: AbortSignal) => {
    const { publish, egress, ...rest } = params;
    const wanted = networkSettingsOf(publish, egress);
    // The VM's name resolves from its creation on, also with --no-start: the DNS server starts first.
    await networking.dns.up(signal);
    if (wanted === undefined) return { rest, name: params.name, unstage: () => undefined };
    const name = params.name ?? `vm-${randomBytes(3).toString("hex")}`;
    settings.stage(name, wanted);
    return { rest: { ...rest, name }, name, unstage: () => settings.unstage(name) };
  };

  /** After a create: the zone is refreshed, and a VM created without a start writes its staged settings. */
  const settle = async (info: VmInfo) => {
    networking.dns.invalidate();
    await settings.load({ vmId: info.id, vmName: info.name, guestIp: info.guestIp });
    if (!isActiveState(info.state)) settings.forget(info.guestIp);
    return decorate(info);
  };

  return {
    "vm.create": async (params, ctx: HandlerContext) => {
      const staged = await stage(params, ctx.signal);
      try {
        return await settle(await createBase(staged.rest, ctx));
      } finally {
        staged.unstage();
      }
    },
    "vm.create.begin": async (params, ctx) => {
      const staged = await stage(params, ctx.signal);
      try {
        const begun = await beginBase(staged.rest, ctx);
        void untilDone(createOps, begun.operation.id).then(async (vm) => {
          if (vm !== undefined) await settle(vm).catch(() => undefined);
          staged.unstage();
        });
        return begun;
      } catch (error) {
        staged.unstage();
        throw error;
      }
    },
    "vm.show": async (params, ctx) => decorate(await showBase(params, ctx)),
    "vm.delete": async (params, ctx) => {
      try {
        return await deleteBase(params, ctx);
      } finally {
        networking.dns.invalidate();
      }
    },
    "vm.list": async (params, ctx) => ({
      vms: await Promise.all((await listBase(params, ctx)).vms.map(decorate)),
    }),
    "vm.stats": async (params, ctx) => {
      const stats = await statsBase(params, ctx);
      const info = await vms.show(params.name);
      const counts = await networking.dropCounts().catch(() => undefined);
      return { ...stats, egressDropped: counts === undefined ? null : (counts.get(info.guestIp) ?? 0) };
    },
    "vm.ports": async (params, ctx) => {
      const chunks: Buffer[] = [];
      const errors: Buffer[] = [];
      const timeout = AbortSignal.timeout(PORTS_TIMEOUT_MS);
      const result = await vms
        .exec(params.name, {
          argv: ["sh", "-c", planGuestPortsScript()],
          onStdout: (chunk) => void chunks.push(chunk),
          onStderr: (chunk) => void errors.push(chunk),
          signal: AbortSignal.any([ctx.signal, timeout]),
        })
        .catch((error: unknown) => {
          // Our own time limit is not the caller's cancel: say what did not answer.
          if (!timeout.aborted || ctx.signal.aborted) throw error;
          throw new BangerError(
            ErrorCode.GUEST_UNREACHABLE,
            `${params.name} did not list its sockets within ${PORTS_TIMEOUT_MS / 1000} s`,
            {
              hint: `check that the guest is responsive: \`banger vm exec ${params.name} -- true\``,
              cause: error,
            },
          );
        });
      if (result.exitCode !== 0) {
        throw new BangerError(
          ErrorCode.GUEST_UNREACHABLE,
          `could not read ${params.name}'s sockets: ${Buffer.concat(errors).toString("utf8").trim() || `exit ${result.exitCode ?? result.signal}`}`,
        );
      }
      return { name: params.name, sockets: parseGuestPorts(Buffer.concat(chunks).toString("utf8")) };
    },
    "vm.egress": async (params) => {
      const policy = parseEgressPolicy(params.egress);
      const info = await vms.show(params.name);
      await networking.setEgress(
        { vmId: info.id, vmName: info.name, guestIp: info.guestIp, tap: tapNameForVmId(info.id) },
        policy,
        isActiveState(info.state),
      );
      return decorate(info);
    },
  };
}

/** The network part of a create, checked; undefined when it has none. */
function networkSettingsOf(
  publish: string[] | undefined,
  egress: string | undefined,
): Partial<VmNetworkSettings> | undefined {
  if (publish === undefined && egress === undefined) return undefined;
  const wanted: Partial<VmNetworkSettings> = {};
  if (publish !== undefined) {
    wanted.publish = publish.map(parsePublishSpec);
    assertDistinctHostPorts(wanted.publish);
  }
  if (egress !== undefined) wanted.egress = parseEgressPolicy(egress);
  return wanted;
}

async function untilDone(createOps: OperationRegistry<VmInfo>, id: string): Promise<VmInfo | undefined> {
  for (;;) {
    const snapshot = await createOps.wait(id, 60_000);
    if (snapshot === undefined) return undefined;
    if (snapshot.state !== "running") return snapshot.result ?? undefined;
  }
}
