/** `banger daemon ...`: the daemon's own lifecycle and log. */
import type { GroupSpec } from "../../spec.ts";
import { startSpec, statusSpec, stopSpec } from "./lifecycle.ts";
import { daemonLogsSpec } from "./logs.ts";

export const daemonGroup: GroupSpec = {
  name: "daemon",
  describe: "manage bangerd, the daemon that owns VMs, images and networking",
  commands: [startSpec, stopSpec, statusSpec, daemonLogsSpec],
};
