import type { Config } from "../../../core/config/index.ts";
import type { DoctorCheck } from "../../../protocol/index.ts";
import type { HostProbes } from "../../../sys/host/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { HostCheck } from "./check.ts";

interface ToolSpec {
  tool: string;
  purpose: string;
  apt: string;
  required: boolean;
  versionArgs?: readonly string[];
}

/** The host tools banger runs, each with its Debian package; a missing optional one is a warning. */
function toolSpecs(config: Config): ToolSpec[] {
  return [
    {
      tool: config.vmm.qemu_binary,
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
    { tool: "nft", purpose: "NAT, isolation and egress rules for guests", apt: "nftables", required: true },
    { tool: "mkfs.ext4", purpose: "builds image root filesystems", apt: "e2fsprogs", required: true },
    { tool: "mmdebstrap", purpose: "builds the default Debian image", apt: "mmdebstrap", required: true },
    { tool: "ssh", purpose: "reaches guests", apt: "openssh-client", required: true },
    { tool: "ssh-keygen", purpose: "makes the daemon's SSH key", apt: "openssh-client", required: true },
    { tool: "cpio", purpose: "builds the guest initramfs", apt: "cpio", required: true },
    {
      tool: "buildah",
      purpose: "builds images from Dockerfiles with `banger image build`; nothing else needs it",
      apt: "buildah",
      required: false,
      versionArgs: ["--version"],
    },
  ];
}

/** One result per tool: where it is and its version line, or the package that provides it. */
export function toolsCheck(deps: { probes: HostProbes; runner: Runner; config: Config }): HostCheck {
  return {
    name: "tools",
    async run() {
      const results: DoctorCheck[] = [];
      for (const spec of toolSpecs(deps.config)) results.push(await checkTool(deps, spec));
      return results;
    },
  };
}

async function checkTool(deps: { probes: HostProbes; runner: Runner }, spec: ToolSpec): Promise<DoctorCheck> {
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
