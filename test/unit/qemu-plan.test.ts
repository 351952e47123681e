import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type BootSpec, planKvmProbeArgv, planQemuArgv } from "../../src/core/vmm/index.ts";

function spec(overrides: Partial<BootSpec> = {}): BootSpec {
  return {
    vmId: "01J",
    vmName: "web",
    cpus: 2,
    memoryMib: 512,
    kernel: "/img/vmlinuz",
    initrd: "/img/initrd.gz",
    kernelCmdline: "console=ttyS0 root=/dev/vda rw",
    disk: { path: "/vms/web/root.qcow2", format: "qcow2" },
    tap: "bgr-web",
    mac: "52:54:00:12:34:56",
    consoleLog: "/vms/web/console.log",
    vmmLog: "/vms/web/vmm.log",
    vmDir: "/run/banger/web",
    ...overrides,
  };
}

/** The value following `flag` at each of its occurrences. */
function values(argv: readonly string[], flag: string): string[] {
  return argv.flatMap((arg, index) => (arg === flag ? [argv[index + 1] ?? "<missing>"] : []));
}

describe("planQemuArgv", () => {
  it("plans a TCG microvm boot with every device the guest needs", () => {
    const argv = planQemuArgv({ spec: spec(), accel: "tcg", binary: "qemu-system-x86_64" });
    assert.equal(argv[0], "qemu-system-x86_64");
    assert.deepEqual(values(argv, "-M"), ["microvm"], "microvm with ACPI left on (no acpi=off)");
    assert.deepEqual(values(argv, "-accel"), ["tcg,tb-size=64"]);
    assert.deepEqual(values(argv, "-cpu"), ["max"]);
    assert.deepEqual(values(argv, "-m"), ["512M"]);
    assert.deepEqual(values(argv, "-smp"), ["2"]);
    for (const flag of ["-nodefaults", "-no-user-config", "-no-reboot"]) assert.ok(argv.includes(flag), flag);
    assert.deepEqual(values(argv, "-display"), ["none"]);
    assert.deepEqual(values(argv, "-chardev"), [
      "file,id=console,path=/vms/web/console.log,append=on",
      "socket,id=agent,path=/run/banger/web/agent.sock,server=on,wait=off",
    ]);
    assert.deepEqual(values(argv, "-serial"), ["chardev:console"]);
    assert.deepEqual(values(argv, "-kernel"), ["/img/vmlinuz"]);
    assert.deepEqual(values(argv, "-initrd"), ["/img/initrd.gz"]);
    assert.deepEqual(values(argv, "-append"), ["console=ttyS0 root=/dev/vda rw"]);
    assert.deepEqual(values(argv, "-drive"), [
      "id=root,if=none,file=/vms/web/root.qcow2,format=qcow2,cache=writeback,discard=unmap",
    ]);
    assert.deepEqual(values(argv, "-netdev"), ["tap,id=net0,ifname=bgr-web,script=no,downscript=no"]);
    assert.deepEqual(values(argv, "-device"), [
      "virtio-blk-device,drive=root",
      "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
      "virtio-rng-device",
      "virtio-serial-device",
      "virtserialport,chardev=agent,name=banger.0",
    ]);
    assert.deepEqual(values(argv, "-qmp"), ["unix:/run/banger/web/qmp.sock,server=on,wait=off"]);
  });

  it("uses -accel kvm with the host CPU model under KVM", () => {
    const argv = planQemuArgv({ spec: spec(), accel: "kvm", binary: "/opt/qemu" });
    assert.deepEqual(values(argv, "-accel"), ["kvm"]);
    assert.deepEqual(values(argv, "-cpu"), ["host"]);
  });

  it("omits -initrd without one and passes a raw disk as raw", () => {
    const argv = planQemuArgv({
      spec: spec({ initrd: null, disk: { path: "/vms/web/root.raw", format: "raw" } }),
      accel: "tcg",
      binary: "qemu",
    });
    assert.deepEqual(values(argv, "-initrd"), []);
    assert.match(values(argv, "-drive")[0] ?? "", /file=\/vms\/web\/root\.raw,format=raw,/);
  });

  it("attaches the base disk read-only as the second virtio disk", () => {
    const argv = planQemuArgv({ spec: spec({ baseDisk: "/img/base.ext4" }), accel: "tcg", binary: "qemu" });
    assert.deepEqual(values(argv, "-drive").slice(1), [
      "id=base,if=none,file=/img/base.ext4,format=raw,readonly=on",
    ]);
    assert.deepEqual(
      values(argv, "-device").filter((device) => device.startsWith("virtio-blk-device")),
      ["virtio-blk-device,drive=root", "virtio-blk-device,drive=base"],
    );
    assert.deepEqual(
      values(planQemuArgv({ spec: spec(), accel: "tcg", binary: "qemu" }), "-drive").length,
      1,
    );
  });

  it("doubles commas in paths inside QEMU option lists", () => {
    const argv = planQemuArgv({
      spec: spec({ vmDir: "/run/a,b", disk: { path: "/v,m/root.qcow2", format: "qcow2" } }),
      accel: "tcg",
      binary: "qemu",
    });
    assert.deepEqual(values(argv, "-qmp"), ["unix:/run/a,,b/qmp.sock,server=on,wait=off"]);
    assert.match(values(argv, "-drive")[0] ?? "", /file=\/v,,m\/root\.qcow2,/);
  });
});

describe("planKvmProbeArgv", () => {
  it("boots only the kernel under KVM and exits on the root-mount panic", () => {
    const argv = planKvmProbeArgv({ binary: "qemu", kernel: "/k/vmlinuz", consoleLog: "/tmp/p/console.log" });
    assert.deepEqual(values(argv, "-accel"), ["kvm"]);
    assert.deepEqual(values(argv, "-serial"), ["file:/tmp/p/console.log"]);
    assert.ok(argv.includes("-no-reboot"));
    assert.match(values(argv, "-append")[0] ?? "", /panic=-1/);
    assert.equal(
      values(argv, "-drive").length + values(argv, "-netdev").length + values(argv, "-initrd").length,
      0,
    );
  });
});
