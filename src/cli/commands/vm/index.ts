/** `banger vm ...`: the VM commands, in the order --help lists them. */
import type { GroupSpec } from "../../spec.ts";
import { authGroup } from "./auth.ts";
import { cpSpec } from "./cp.ts";
import { createSpec } from "./create.ts";
import { execSpec } from "./exec.ts";
import { lifecycleSpecs } from "./lifecycle.ts";
import { listSpec } from "./list.ts";
import { logsSpec } from "./logs.ts";
import { portForwardSpec, portsSpec } from "./ports.ts";
import { proxySpec } from "./proxy.ts";
import { pruneSpec } from "./prune.ts";
import { runSpec } from "./run.ts";
import { setSpec } from "./set.ts";
import { showSpec } from "./show.ts";
import { vmForkSpec, vmSnapshotSpec } from "./snapshot.ts";
import { sshSpec } from "./ssh.ts";
import { healthSpec, statsSpec } from "./stats.ts";
import { workspaceGroup } from "./workspace.ts";

export const vmGroup: GroupSpec = {
  name: "vm",
  describe: "create, run and manage microVMs",
  commands: [
    createSpec,
    listSpec,
    showSpec,
    ...lifecycleSpecs,
    pruneSpec,
    setSpec,
    portsSpec,
    portForwardSpec,
    statsSpec,
    healthSpec,
    logsSpec,
    execSpec,
    runSpec,
    sshSpec,
    cpSpec,
    vmSnapshotSpec,
    vmForkSpec,
    workspaceGroup,
    authGroup,
    proxySpec,
  ],
};
