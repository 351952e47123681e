import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { describeAccel, describeAccelFailure } from "../../src/daemon/doctor/checks/accel.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import type { RunResult } from "../../src/sys/runner/index.ts";
import { chooseAccel } from "../../src/sys/vmm/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

/** A FakeRunner that plays the KVM probe QEMU: writes `console` to its -serial file, then replies. */
function probeRunner(console: string, result: Partial<RunResult>): FakeRunner {
  return new FakeRunner().on(["qemu-system-x86_64", "-M", "microvm", "-accel", "kvm"], async (argv) => {
    const serial = argv[argv.indexOf("-serial") + 1] ?? "";
    await writeFile(serial.replace(/^file:/, ""), console);
    return result;
  });
}

const BANNER = "Probing EDD (edd=off to disable)... ok\n[    0.000000] Linux version 6.1.0-56-cloud-amd64\n";

describe("chooseAccel", () => {
  let dir: string;
  let kernel: string;
  let kvm: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-accel-"));
    kernel = join(dir, "vmlinuz");
    kvm = join(dir, "kvm");
    await writeFile(kernel, "kernel");
    await writeFile(kvm, "");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const base = (name: string) => ({
    kernel,
    binary: "qemu-system-x86_64",
    cacheFile: join(dir, `${name}.json`),
    kvmDevice: kvm,
  });

  it("tcg configured: no probe at all", async () => {
    const runner = new FakeRunner();
    const choice = await chooseAccel({ ...base("tcg"), configured: "tcg", runner });
    assert.equal(choice.accel, "tcg");
    assert.equal(runner.calls.length, 0);
    assert.equal(describeAccel(choice).status, "warn");
  });

  it("auto without /dev/kvm: TCG, no probe", async () => {
    const runner = new FakeRunner();
    const choice = await chooseAccel({
      ...base("nokvm"),
      configured: "auto",
      runner,
      kvmDevice: join(dir, "absent"),
    });
    assert.equal(choice.accel, "tcg");
    assert.match(choice.reason, /does not exist; using TCG/);
    assert.equal(runner.calls.length, 0);
  });

  it("auto with a working KVM: probe once, then the cache answers", async () => {
    const runner = probeRunner(BANNER, { code: 0 });
    const first = await chooseAccel({ ...base("works"), configured: "auto", runner });
    assert.equal(first.accel, "kvm");
    assert.equal(first.cached, false);
    assert.equal(describeAccel(first).status, "ok");
    const second = await chooseAccel({ ...base("works"), configured: "auto", runner });
    assert.deepEqual({ ...second, cached: false }, first);
    assert.equal(second.cached, true);
    assert.equal(runner.calls.length, 1, "the probe ran once");
    assert.equal(runner.calls[0]?.options.timeoutMs, 8000);
    const cache = JSON.parse(await readFile(join(dir, "works.json"), "utf8")) as Record<
      string,
      { works: boolean }
    >;
    assert.deepEqual(
      Object.values(cache).map((entry) => entry.works),
      [true],
    );
  });

  it("auto with a hanging KVM: TCG with the timeout as the reason", async () => {
    const runner = probeRunner("Probing EDD (edd=off to disable)... ok\n", {
      code: null,
      signal: "SIGTERM",
      durationMs: 8001,
    });
    const choice = await chooseAccel({ ...base("hangs"), configured: "auto", runner });
    assert.equal(choice.accel, "tcg");
    assert.equal(choice.reason, "KVM probe boot did not complete in 8 s; using TCG");
  });

  it("auto when QEMU aborts under KVM: TCG with QEMU's complaint", async () => {
    const runner = probeRunner("", {
      code: null,
      signal: "SIGABRT",
      stderr: "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nAssertion failed\n",
    });
    const choice = await chooseAccel({ ...base("aborts"), configured: "auto", runner });
    assert.equal(choice.accel, "tcg");
    assert.match(
      choice.reason,
      /^KVM probe: QEMU was killed by SIGABRT before the kernel started: .*failed to set MSR 0x10a.*; using TCG$/,
    );
  });

  it("a changed kernel (mtime) probes again", async () => {
    const runner = probeRunner(BANNER, { code: 0 });
    await chooseAccel({ ...base("mtime"), configured: "auto", runner });
    const later = new Date(Date.now() + 60_000);
    await utimes(kernel, later, later);
    await chooseAccel({ ...base("mtime"), configured: "auto", runner });
    assert.equal(runner.calls.length, 2);
  });

  it("kvm configured but the probe fails: BAD_STATE naming the reason", async () => {
    const runner = probeRunner("", { code: null, signal: "SIGTERM", durationMs: 8000 });
    const failure = await chooseAccel({ ...base("forced"), configured: "kvm", runner }).catch(
      (error: unknown) => error,
    );
    assert.ok(failure instanceof BangerError);
    assert.equal(failure.code, ErrorCode.BAD_STATE);
    assert.match(failure.message, /KVM is not usable: KVM probe boot did not complete in 8 s/);
    assert.match(failure.hint ?? "", /vmm\.accel/);
    assert.equal(describeAccelFailure(failure).status, "fail");
  });

  it("kvm configured without /dev/kvm: TOOL_MISSING", async () => {
    await assert.rejects(
      chooseAccel({
        ...base("forced2"),
        configured: "kvm",
        runner: new FakeRunner(),
        kvmDevice: join(dir, "absent"),
      }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING,
    );
  });
});
