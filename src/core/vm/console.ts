/**
 * Reading a guest's serial console after the fact: why a VMM went away on
 * its own (the reaper's reason), and the tail shown when a boot fails. Pure:
 * callers pass the console text they read.
 */

export interface VmmExit {
  kind: "poweroff" | "reboot" | "panic" | "unknown";
  /** The console line that decided it (the panic line); absent otherwise. */
  line?: string;
}

const POWEROFF = /reboot: Power down|System halted|reboot: System halted/;
const REBOOT = /reboot: Restarting system/;
const PANIC = "Kernel panic";
/** Console lines kept in a boot failure's reason. */
const BOOT_TAIL_LINES = 12;

/** What the end of a console says about how the guest stopped. */
export function classifyVmmExit(tail: string): VmmExit {
  if (POWEROFF.test(tail)) return { kind: "poweroff" };
  if (REBOOT.test(tail)) return { kind: "reboot" };
  if (tail.includes(PANIC)) {
    const line = tail.split("\n").find((text) => text.includes(PANIC)) ?? PANIC;
    return { kind: "panic", line: line.trim() };
  }
  return { kind: "unknown" };
}

/** The reason a reaped VM's row carries: what the guest did, then which VMM exited. */
export function vmmExitReason(tail: string, pid: number | null): string {
  const who = `the VMM (pid ${pid ?? "?"})`;
  const exit = classifyVmmExit(tail);
  switch (exit.kind) {
    case "poweroff":
      return `the guest powered off; ${who} exited`;
    case "reboot":
      return `the guest rebooted; ${who} exited`;
    case "panic":
      return `the guest kernel panicked (${exit.line}); ${who} exited`;
    case "unknown":
      return `${who} exited unexpectedly (killed or crashed)`;
  }
}

/** A failed boot's reason: the error, then the last console lines when there are any. */
export function bootFailureSummary(message: string, consoleTail: string): string {
  const tail = consoleTail.trim();
  if (!tail) return message;
  return `${message}\n--- console tail ---\n${tail.split("\n").slice(-BOOT_TAIL_LINES).join("\n")}`;
}
