/**
 * `banger doctor`: host checks, each with a status and a fix hint. The
 * accelerator, Firecracker and COW-strategy checks come from the
 * composition root through `extraChecks`.
 */
import { dirname } from "node:path";
import type { Config } from "../../core/config/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { GIB } from "../../core/units.ts";
import type { DoctorCheck } from "../../protocol/index.ts";
import type { HostProbes } from "../../sys/host/index.ts";
import type { Runner } from "../../sys/runner/index.ts";

export interface DoctorDeps {
  probes: HostProbes;
  runner: Runner;
  layout: Layout;
  config: Config;
  extraChecks: ReadonlyArray<() => Promise<DoctorCheck[]>>;
}

interface ToolSpec {
  tool: string;
  purpose: string;
  apt: string;
  required: boolean;
  versionArgs?: readonly string[];
}

export async function runDoctor(deps: DoctorDeps): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [
    checkNode(deps.probes),
    checkPrivileges(deps.probes),
    await checkKvm(deps.probes),
  ];
  const tools: ToolSpec[] = [
    {
      tool: deps.config.vmm.qemu_binary,
      purpose: "runs VMs (QEMU driver)",
      apt: "qemu-system-x86",
      required: true,
      versionArgs: ["--version"],
    },
    {
      tool: "qemu-img",
      purpose: "creates copy-on-write root disks",
      apt: "qemu-utils",
      required: true,
      versionArgs: ["--version"],
    },
    { tool: "ip", purpose: "creates the bridge and taps", apt: "iproute2", required: true },
    { tool: "nft", purpose: "NAT for guests", apt: "nftables", required: false },
    { tool: "mkfs.ext4", purpose: "builds image root filesystems", apt: "e2fsprogs", required: true },
    { tool: "mmdebstrap", purpose: "builds the default Debian image", apt: "mmdebstrap", required: true },
    { tool: "ssh", purpose: "reaches guests", apt: "openssh-client", required: true },
    { tool: "ssh-keygen", purpose: "makes the daemon's SSH key", apt: "openssh-client", required: true },
    { tool: "cpio", purpose: "builds the guest initramfs", apt: "cpio", required: true },
  ];
  for (const spec of tools) checks.push(await checkTool(deps, spec));
  checks.push(await checkFreeDisk(deps));
  checks.push(await checkSocketDir(deps));
  for (const extra of deps.extraChecks) {
    try {
      checks.push(...(await extra()));
    } catch (error) {
      checks.push({
        name: "check",
        status: "fail",
        detail: `a check failed to run: ${(error as Error).message}`,
      });
    }
  }
  return checks;
}

function checkNode(probes: HostProbes): DoctorCheck {
  const version = probes.nodeVersion();
  const [major = 0, minor = 0] = version.split(".").map(Number);
  const ok = major > 24 || (major === 24 && minor >= 15);
  return ok
    ? { name: "node", status: "ok", detail: `Node.js ${version}` }
    : {
        name: "node",
        status: "fail",
        detail: `Node.js ${version} is older than 24.15`,
        hint: "run `npm ci` in the banger checkout; it installs Node 24 locally",
      };
}

function checkPrivileges(probes: HostProbes): DoctorCheck {
  const uid = probes.uid();
  return uid === 0
    ? { name: "privileges", status: "ok", detail: "running as root" }
    : {
        name: "privileges",
        status: "warn",
        detail: `running as uid ${uid}: creating bridges, taps and network namespaces needs root (CAP_NET_ADMIN)`,
        hint: "run bangerd as root (sudo), or grant it CAP_NET_ADMIN",
      };
}

async function checkKvm(probes: HostProbes): Promise<DoctorCheck> {
  if (!(await probes.exists("/dev/kvm"))) {
    return {
      name: "kvm",
      status: "warn",
      detail: "/dev/kvm is missing: VMs run under QEMU TCG (software emulation, slower)",
      hint: "enable virtualization in the BIOS or load kvm_intel/kvm_amd",
    };
  }
  if (!(await probes.canAccess("/dev/kvm", "rw"))) {
    return {
      name: "kvm",
      status: "warn",
      detail: "/dev/kvm exists but is not read-write for this user",
      hint: "add the user to the kvm group, or run as root",
    };
  }
  return {
    name: "kvm",
    status: "ok",
    detail: "/dev/kvm is present and read-write (see the accel check for whether it boots guests)",
  };
}

async function checkTool(deps: DoctorDeps, spec: ToolSpec): Promise<DoctorCheck> {
  const path = await deps.probes.which(spec.tool);
  if (!path) {
    return {
      name: spec.tool,
      status: spec.required ? "fail" : "warn",
      detail: `${spec.tool} not found (${spec.purpose})`,
      hint: `apt-get install ${spec.apt}`,
    };
  }
  let version = "";
  if (spec.versionArgs) {
    const result = await deps.runner
      .run([path, ...spec.versionArgs], { allowFailure: true, timeoutMs: 5000 })
      .catch(() => undefined);
    version = result?.stdout.split("\n")[0]?.trim() ?? "";
  }
  return { name: spec.tool, status: "ok", detail: version ? `${path}: ${version}` : path };
}

async function checkFreeDisk(deps: DoctorDeps): Promise<DoctorCheck> {
  const dir = await nearestExisting(deps, deps.layout.stateDir);
  const free = await deps.probes.freeBytes(dir);
  const detail = `${(free / GIB).toFixed(1)} GiB free for ${deps.layout.stateDir}`;
  if (free < 1 * GIB)
    return {
      name: "disk",
      status: "fail",
      detail,
      hint: "free disk space: the default image needs about 1 GiB and each VM its overlay",
    };
  if (free < 5 * GIB)
    return {
      name: "disk",
      status: "warn",
      detail,
      hint: "VM disks grow as guests write; keep a few GiB free",
    };
  return { name: "disk", status: "ok", detail };
}

async function checkSocketDir(deps: DoctorDeps): Promise<DoctorCheck> {
  const dir = await nearestExisting(deps, deps.layout.runtimeDir);
  const writable = await deps.probes.canAccess(dir, "w");
  return writable
    ? { name: "socket-dir", status: "ok", detail: `${deps.layout.runtimeDir} is writable` }
    : {
        name: "socket-dir",
        status: "fail",
        detail: `${dir} is not writable, so the daemon cannot create its socket`,
        hint: "run as root, or set BANGER_HOME to a directory you own",
      };
}

async function nearestExisting(deps: DoctorDeps, path: string): Promise<string> {
  let current = path;
  while (!(await deps.probes.exists(current)) && dirname(current) !== current) current = dirname(current);
  return current;
}
