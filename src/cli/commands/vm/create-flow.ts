/**
 * Creating a VM through the async operation API (vm create, vm run): renders
 * the daemon's steps; an interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the
 * operation, which unwinds in the daemon, and the CLI says so. A VM that
 * came up running gets the user's auth material (a failed sync only warns).
 */
import { cancelled } from "../../../core/async/index.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  isErrorCode,
  type VmInfo,
} from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { createProgressRenderer } from "../../render/progress.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { syncAuthAfterStart } from "./auth.ts";

/** How long one status call waits for the operation to change. */
const STATUS_WAIT_MS = 500;

export async function createWithProgress(
  ctx: CliContext,
  client: DaemonClient,
  params: CreateVmParams,
): Promise<VmInfo> {
  const progress = createProgressRenderer(ctx.stderr, false);
  const { operation } = await client.call("vm.create.begin", params);
  const interrupted = ctx.interrupted();
  const onInterrupt = () => {
    progress.onProgress({ message: `${String(interrupted.reason)}: cancelling…`, status: "running" });
    void client.call("vm.create.cancel", { operationId: operation.id }).catch(() => undefined);
  };
  if (interrupted.aborted) onInterrupt();
  else interrupted.addEventListener("abort", onInterrupt, { once: true });
  try {
    let last = "";
    for (;;) {
      const status = await client.call("vm.create.status", {
        operationId: operation.id,
        waitMs: STATUS_WAIT_MS,
      });
      const op = status.operation;
      if (op.state === "running") {
        if (op.message !== last)
          progress.onProgress({ step: op.step, message: op.message, status: "running" });
        last = op.message;
        continue;
      }
      if (op.state === "succeeded" && status.vm) {
        // A started VM's last step is the daemon's own "is running" line; one
        // created stopped has none, so the CLI states what it got.
        if (op.step === "vm.ready")
          progress.onProgress({ step: op.step, message: op.message, status: "done" });
        else
          progress.onProgress({
            message: `${status.vm.name} created, ${status.vm.state} (\`banger vm start ${status.vm.name}\` boots it)`,
            status: "done",
          });
        if (status.vm.state === "running") await syncAuthAfterStart(ctx, client, status.vm.name);
        return status.vm;
      }
      if (op.state === "cancelled" || interrupted.aborted) throw cancelled(interrupted, "VM creation");
      const error = op.error;
      throw new BangerError(
        isErrorCode(error?.code) ? error.code : ErrorCode.INTERNAL,
        error?.message ?? "VM creation failed",
        { hint: error?.hint },
      );
    }
  } finally {
    interrupted.removeEventListener("abort", onInterrupt);
    progress.finish();
  }
}
