import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  capabilitiesFor,
  firecrackerFeatures,
  MODELLED_SPEC_ENUMS,
  parseFirecrackerVersion,
  planFirecrackerBoot,
} from "../../src/core/firecracker/index.ts";
import type { BootSpec } from "../../src/core/vmm/contract.ts";
import { BangerError } from "../../src/protocol/index.ts";
import { createSpecValidator, loadSpec } from "../doubles/firecracker/spec.ts";

const spec: BootSpec = {
  vmId: "vm1",
  vmName: "web",
  cpus: 2,
  memoryMib: 512,
  kernel: "/k/vmlinux",
  initrd: "/k/initrd.img",
  kernelCmdline: "console=ttyS0 reboot=k panic=1",
  disk: { path: "/vms/web/root.ext4", format: "raw" },
  tap: "tap-web",
  mac: "06:00:ac:10:00:02",
  consoleLog: "/vms/web/console.log",
  vmmLog: "/vms/web/vmm.log",
  vmDir: "/vms/web",
};
const caps = capabilitiesFor(parseFirecrackerVersion("Firecracker v1.16.1\n"));

describe("planFirecrackerBoot", () => {
  it("configures machine, kernel, root drive, eth0, vsock and entropy, then starts", () => {
    const plan = planFirecrackerBoot(spec, caps);
    assert.deepEqual(
      plan.map((call) => `${call.method} ${call.path}`),
      [
        "PUT /machine-config",
        "PUT /boot-source",
        "PUT /drives/rootfs",
        "PUT /network-interfaces/eth0",
        "PUT /vsock",
        "PUT /entropy",
        "PUT /actions",
      ],
    );
    assert.deepEqual(plan[0]?.body, { vcpu_count: 2, mem_size_mib: 512 });
    assert.deepEqual(plan[1]?.body, {
      kernel_image_path: "/k/vmlinux",
      boot_args: "console=ttyS0 reboot=k panic=1",
      initrd_path: "/k/initrd.img",
    });
    assert.deepEqual(plan[2]?.body, {
      drive_id: "rootfs",
      // Relative to the VM directory, Firecracker's working directory, so a snapshot restores onto a clone's own disk.
      path_on_host: "root.ext4",
      is_root_device: true,
      is_read_only: false,
    });
    assert.deepEqual(plan[3]?.body, {
      iface_id: "eth0",
      host_dev_name: "tap-web",
      guest_mac: "06:00:ac:10:00:02",
    });
    assert.deepEqual(plan[4]?.body, { guest_cid: 3, uds_path: "/vms/web/vsock.sock" });
    assert.deepEqual(plan[6]?.body, { action_type: "InstanceStart" });
  });

  it("adds the base disk as a read-only second drive after the root drive", () => {
    const validator = createSpecValidator();
    const plan = planFirecrackerBoot({ ...spec, baseDisk: "/img/base.ext4" }, caps);
    assert.deepEqual(
      plan.slice(2, 4).map((call) => [call.path, call.body]),
      [
        [
          "/drives/rootfs",
          {
            drive_id: "rootfs",
            path_on_host: "root.ext4",
            is_root_device: true,
            is_read_only: false,
          },
        ],
        [
          "/drives/base",
          { drive_id: "base", path_on_host: "/img/base.ext4", is_root_device: false, is_read_only: true },
        ],
      ],
    );
    for (const call of plan)
      assert.equal(validator.validateRequest(call.method, call.path, call.body).valid, true);
  });

  it("omits initrd_path without an initrd", () => {
    const plan = planFirecrackerBoot({ ...spec, initrd: null }, caps);
    assert.equal("initrd_path" in (plan[1]?.body ?? {}), false);
  });

  it("sends only bodies the pinned spec accepts (Firecracker's validation recipe)", () => {
    const validator = createSpecValidator();
    for (const call of planFirecrackerBoot(spec, caps)) {
      const outcome = validator.validateRequest(call.method, call.path, call.body);
      assert.equal(outcome.valid, true, `${call.method} ${call.path}: ${JSON.stringify(outcome.issues)}`);
    }
  });

  it("the double's validator compiles every request and response schema of the pinned spec", () => {
    const count = createSpecValidator().compileAll();
    assert.ok(count > 40, `${count} schemas compiled`);
  });

  it("refuses a qcow2 disk, naming it", () => {
    assert.throws(
      () => planFirecrackerBoot({ ...spec, disk: { path: "/d/root.qcow2", format: "qcow2" } }, caps),
      (error: unknown) =>
        error instanceof BangerError && error.code === "INVALID_PARAMS" && /root\.qcow2/.test(error.message),
    );
  });
});

describe("Firecracker versions and capabilities", () => {
  it("parses --version output, including dev builds", () => {
    assert.deepEqual(
      parseFirecrackerVersion("Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n"),
      {
        major: 1,
        minor: 16,
        patch: 1,
        text: "1.16.1",
      },
    );
    assert.equal(parseFirecrackerVersion("Firecracker v1.17.0-dev").text, "1.17.0-dev");
  });

  it("rejects output that is not Firecracker's", () => {
    assert.throws(() => parseFirecrackerVersion("QEMU emulator version 7.2.22"), { code: "TOOL_MISSING" });
  });

  it("maps each release to its capabilities", () => {
    const at = (text: string) => capabilitiesFor(parseFirecrackerVersion(`Firecracker v${text}`));
    assert.deepEqual(at("1.8.0"), {
      acpi: true,
      pvh: false,
      pci: false,
      serialEndpoint: false,
      vsockOverride: false,
      bzImage: false,
    });
    assert.equal(at("1.11.9").pvh, false);
    assert.equal(at("1.12.0").pvh, true);
    assert.equal(at("1.13.0").pci, true);
    assert.equal(at("1.14.0").serialEndpoint, true);
    assert.equal(at("1.16.1").vsockOverride, true);
    assert.equal(at("1.16.1").bzImage, false);
    assert.equal(at("1.17.0-dev").bzImage, true);
    assert.equal(at("2.0.0").bzImage, true);
  });

  it("refuses releases older than 1.8 with an upgrade hint", () => {
    assert.throws(
      () => capabilitiesFor(parseFirecrackerVersion("Firecracker v1.7.0")),
      (error: unknown) =>
        error instanceof BangerError &&
        error.code === "TOOL_MISSING" &&
        /1\.7\.0/.test(error.message) &&
        /newer/.test(error.hint ?? ""),
    );
  });

  it("offers bzImage kernels only where the binary boots them", () => {
    assert.deepEqual(firecrackerFeatures(caps).kernelFormats, ["elf"]);
    assert.deepEqual(firecrackerFeatures(undefined).kernelFormats, ["elf"]);
    const next = capabilitiesFor(parseFirecrackerVersion("Firecracker v1.17.0"));
    assert.deepEqual(firecrackerFeatures(next).kernelFormats, ["elf", "bzImage"]);
    assert.deepEqual(firecrackerFeatures(caps).diskFormats, ["raw"]);
  });
});

describe("spec drift", () => {
  it("the TypeScript enum unions equal the pinned spec's enums", () => {
    const document = loadSpec();
    const found: Record<string, string[]> = {};
    const modelledDefinitions = new Set(Object.keys(MODELLED_SPEC_ENUMS).map((key) => key.split(".")[0]));
    for (const [name, definition] of Object.entries(document.definitions)) {
      if (!modelledDefinitions.has(name)) continue;
      if (Array.isArray(definition.enum)) found[name] = definition.enum.map(String);
      for (const [property, schema] of Object.entries(
        (definition.properties ?? {}) as Record<string, { enum?: unknown[] }>,
      )) {
        if (Array.isArray(schema.enum)) found[`${name}.${property}`] = schema.enum.map(String);
      }
    }
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(MODELLED_SPEC_ENUMS).map(([key, values]) => [key, [...values].sort()]),
      ),
      Object.fromEntries(Object.entries(found).map(([key, values]) => [key, [...values].sort()])),
    );
    assert.equal(document.info.version, "1.16.1");
  });
});
