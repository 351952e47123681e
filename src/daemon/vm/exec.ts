/**
 * One `vm.exec` once its guest process runs: the client's signals and PTY
 * size changes reach the process group, `timeoutMs` kills the group and
 * answers `timedOut`, and a cancel (or closed connection) kills the group.
 * Takes no VM lock: execs on one VM run side by side.
 */
import type { AgentProcess } from "../../sys/agent/index.ts";
import type { GuestExec, GuestExecResult } from "./platform.ts";

export async function superviseExec(proc: AgentProcess, exec: GuestExec): Promise<GuestExecResult> {
  if (exec.detach) return { exitCode: null, signal: null };
  exec.control?.onSignal((signal) => proc.kill(signal));
  exec.control?.onResize(({ cols, rows }) => proc.resize(cols, rows));
  let timedOut = false;
  const timer =
    exec.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          proc.kill("SIGKILL");
        }, exec.timeoutMs);
  const onAbort = () => proc.close();
  exec.signal?.addEventListener("abort", onAbort, { once: true });
  if (exec.signal?.aborted) onAbort();
  try {
    const result = await proc.done;
    return timedOut ? { exitCode: null, signal: "SIGKILL", timedOut: true } : result;
  } finally {
    clearTimeout(timer);
    exec.signal?.removeEventListener("abort", onAbort);
  }
}
