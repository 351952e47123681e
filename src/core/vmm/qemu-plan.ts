/**
 * Pure planner for the QEMU `microvm` command line. The argv it returns is
 * exactly what the QEMU driver spawns; nothing here touches the system.
 */
import { join } from "node:path";
import type { BootSpec } from "./contract.ts";

/** QEMU's private files in a VM's directory. */
const QEMU_FILES = { control: "qmp.sock", agent: "agent.sock" } as const;

/** The QMP socket of the VM whose directory is `vmDir`. */
export function qemuControlSocket(vmDir: string): string {
  return join(vmDir, QEMU_FILES.control);
}

/** The name of the virtio-serial port banger's guest agent looks for. */
const AGENT_SERIAL_PORT_NAME = "banger.0";

/** The Unix socket of the guest agent's virtio-serial port, in the VM's directory. */
export function qemuAgentSocket(vmDir: string): string {
  return join(vmDir, QEMU_FILES.agent);
}

export const QemuAccel = ["kvm", "tcg"] as const;
export type QemuAccel = (typeof QemuAccel)[number];

export interface QemuPlanInput {
  spec: BootSpec;
  accel: QemuAccel;
  /** The QEMU executable (a name on PATH or an absolute path). */
  binary: string;
  /**
   * Serve the serial console on this Unix socket (for the daemon's bounded
   * drain) and start with the vCPUs stopped, so the caller attaches the
   * drain before the guest prints and then sends QMP `cont`. Without it the
   * console is appended to `spec.consoleLog` by QEMU itself.
   */
  consoleSocket?: string | undefined;
}

/** TCG translation cache in MiB: about 260 MB RSS instead of 375 MB per VM, same speed (guest recipe §5.2). */
const TCG_TB_SIZE_MIB = 64;

/**
 * QEMU argv for one boot. Keeps `microvm`'s ACPI on: a stock distro kernel
 * finds its virtio-mmio devices only through ACPI (it lacks
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES). The console is a Unix socket the
 * daemon drains (see `consoleSocket`), or a chardev file opened with
 * `append=on`.
 */
export function planQemuArgv(input: QemuPlanInput): string[] {
  const { spec, accel, binary } = input;
  return [
    binary,
    ...["-M", "microvm"],
    ...accelArgs(accel),
    ...["-m", `${spec.memoryMib}M`],
    ...["-smp", String(spec.cpus)],
    "-nodefaults",
    "-no-user-config",
    ...["-display", "none"],
    "-no-reboot",
    ...["-name", `banger-${spec.vmName},process=banger-${spec.vmName}`],
    ...(input.consoleSocket === undefined
      ? ["-chardev", `file,id=console,path=${optionValue(spec.consoleLog)},append=on`]
      : ["-S", "-chardev", `socket,id=console,path=${optionValue(input.consoleSocket)},server=on,wait=off`]),
    ...["-serial", "chardev:console"],
    ...["-kernel", spec.kernel],
    ...(spec.initrd === null ? [] : ["-initrd", spec.initrd]),
    ...["-append", spec.kernelCmdline],
    ...[
      "-drive",
      `id=root,if=none,file=${optionValue(spec.disk.path)},format=${spec.disk.format},cache=writeback,discard=unmap`,
    ],
    ...["-device", "virtio-blk-device,drive=root"],
    ...(spec.baseDisk === undefined
      ? []
      : [
          "-drive",
          `id=base,if=none,file=${optionValue(spec.baseDisk)},format=raw,readonly=on`,
          "-device",
          "virtio-blk-device,drive=base",
        ]),
    ...["-netdev", `tap,id=net0,ifname=${spec.tap},script=no,downscript=no`],
    ...["-device", `virtio-net-device,netdev=net0,mac=${spec.mac}`],
    ...["-device", "virtio-rng-device"],
    ...["-qmp", `unix:${optionValue(qemuControlSocket(spec.vmDir))},server=on,wait=off`],
    // The guest agent's channel: a virtio-serial port named banger.0 on a Unix socket the daemon connects to.
    ...["-chardev", `socket,id=agent,path=${optionValue(qemuAgentSocket(spec.vmDir))},server=on,wait=off`],
    ...["-device", "virtio-serial-device"],
    ...["-device", `virtserialport,chardev=agent,name=${AGENT_SERIAL_PORT_NAME}`],
  ];
}

function accelArgs(accel: QemuAccel): string[] {
  return accel === "kvm"
    ? ["-accel", "kvm", "-cpu", "host"]
    : ["-accel", `tcg,tb-size=${TCG_TB_SIZE_MIB}`, "-cpu", "max"];
}

/** QEMU option values separate key=value pairs with commas; a literal comma is written twice. */
function optionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * Argv of the KVM probe boot: the same machine and CPU model as a real KVM
 * boot, no disks and no network. The kernel prints its banner, panics at
 * mounting root, `panic=-1` reboots it and `-no-reboot` makes QEMU exit.
 */
export function planKvmProbeArgv(input: { binary: string; kernel: string; consoleLog: string }): string[] {
  return [
    input.binary,
    ...["-M", "microvm", ...accelArgs("kvm"), "-m", "128M", "-smp", "1"],
    ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    ...["-serial", `file:${input.consoleLog}`],
    ...["-kernel", input.kernel],
    ...["-append", "console=ttyS0 panic=-1"],
  ];
}
