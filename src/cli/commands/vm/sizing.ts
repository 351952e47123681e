/**
 * The flags that size a new VM (vm create, vm run), and their params.
 */
import type { CreateVmParams } from "../../../protocol/index.ts";
import { parseInteger, parseSize } from "../../flags.ts";
import type { OptionSpec } from "../../spec.ts";

export interface SizingFlags {
  image?: string;
  cpus?: string;
  memory?: string;
  disk?: string;
  vmm?: string;
  publish?: string[];
  egress?: string;
  from?: string;
}

export const sizingOptions: readonly OptionSpec[] = [
  {
    flags: "--image <ref>",
    description:
      "image name, or a registry reference pulled on first use (default: the configured default image)",
  },
  { flags: "--cpus <n>", description: "virtual CPUs" },
  { flags: "--memory <size>", description: "memory: MiB, or with a unit (512m, 2g)" },
  { flags: "--disk <size>", description: "root disk: GiB, or with a unit (10g, 20GiB)" },
  { flags: "--vmm <driver>", description: "VMM driver", choices: ["auto", "qemu", "firecracker"] },
  {
    flags: "-p, --publish <spec>",
    description: "publish a guest port on the host: [HOST_IP:]HOST_PORT:GUEST_PORT[/udp], repeatable",
    repeatable: true,
  },
  {
    flags: "--egress <policy>",
    description: "allow | deny | NAME,*.SUFFIX,... (default: config network.egress)",
  },
  {
    flags: "--from <snapshot>",
    description: "start from a memory snapshot instead of booting (its image, VMM, vCPUs and memory)",
  },
];

export function sizingParams(flags: SizingFlags): CreateVmParams {
  const params: CreateVmParams = {};
  if (flags.image) params.image = flags.image;
  if (flags.cpus !== undefined) params.cpus = parseInteger("--cpus", flags.cpus);
  if (flags.memory !== undefined) params.memoryMib = parseSize("--memory", flags.memory, "MiB");
  if (flags.disk !== undefined) params.diskGib = parseSize("--disk", flags.disk, "GiB");
  if (flags.vmm && flags.vmm !== "auto") params.vmm = flags.vmm as "qemu" | "firecracker";
  if (flags.publish !== undefined) params.publish = flags.publish;
  if (flags.egress !== undefined) params.egress = flags.egress;
  if (flags.from !== undefined) params.from = flags.from;
  return params;
}
