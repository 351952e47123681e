/**
 * Row "vm-fc": `banger vm run --rm --vmm firecracker -- true` next to
 * `banger vm run --rm --vmm qemu -- true`, alternating, in the bench's one
 * daemon (same image, same sizing). Firecracker is the test double
 * (test/doubles/firecracker), which serves Firecracker's API and boots the
 * guest under QEMU `-M microvm` with TCG, so the ratio is the Firecracker
 * driver's own overhead: the double's Node process, the API calls, the raw
 * root disk. The daemon gets the double through its config file, written
 * before it starts (`writeFirecrackerConfig`); that key sets only the
 * binary, so `vmm.default` stays `auto`.
 */
import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { probeCowStrategy } from "../src/sys/disk/index.ts";
import { createProcessRunner } from "../src/sys/runner/index.ts";
import { type BenchEnv, bangerChecked } from "./env.ts";
import { runChecked } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { alternate, median } from "./stats.ts";

export const VM_FC_ROW = {
  id: "vm-fc",
  benchmark: "vm run --rm -- true: firecracker (double) vs qemu",
  unit: "ms",
  goal: "≤1.1x",
} as const;

const RUNS = 5;
const BUDGET_MS = 240_000;
const VM_TIMEOUT_MS = 180_000;
const VERSION_RUNS = 3;

export function firecrackerDouble(env: BenchEnv): string {
  return join(env.root, "test", "doubles", "firecracker", "firecracker");
}

/**
 * Writes the bench daemon's config.toml (inside BANGER_HOME, so removed
 * with it) naming the double as the firecracker binary. Call before the
 * daemon starts; the config must not exist yet.
 */
export async function writeFirecrackerConfig(env: BenchEnv): Promise<void> {
  const file = env.layout.configFile;
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, `[vmm]\nfirecracker_binary = ${JSON.stringify(firecrackerDouble(env))}\n`, {
    flag: "wx",
    mode: 0o600,
  });
}

export async function benchVmFc(ctx: VmContext): Promise<RowResult> {
  const runOnce = (vmm: "firecracker" | "qemu") => async () =>
    (await bangerChecked(ctx.env, ["vm", "run", "--rm", "--vmm", vmm, "--", "true"], VM_TIMEOUT_MS)).ms;
  const firecracker = runOnce("firecracker");
  const qemu = runOnce("qemu");
  ctx.log("vm-fc: warm-up pair (not timed; the daemon probes the double's --version once)");
  await firecracker();
  await qemu();
  ctx.log(`vm-fc: ${RUNS} boots each, alternating (about 15 s per pair under TCG)`);
  const samples = await alternate({
    runs: RUNS,
    budgetMs: BUDGET_MS,
    signal: ctx.env.signal,
    banger: firecracker,
    baseline: qemu,
    afterEach: (run, fcMs, qemuMs) =>
      ctx.log(`vm-fc: run ${run}: firecracker ${seconds(fcMs)}, qemu ${seconds(qemuMs)}`),
  });
  // The same probe the daemon runs once for its VM directory (the daemon's copy is cached in-process).
  const cow = await probeCowStrategy(ctx.env.layout.vmsDir, { runner: createProcessRunner() });
  const rootfs = await stat(ctx.image.rootfs);
  // What the double's Node process costs to start, the part of the gap a real binary would not have.
  const versionMs: number[] = [];
  for (let i = 0; i < VERSION_RUNS; i++) {
    const version = await runChecked([firecrackerDouble(ctx.env), "--version"], {
      timeoutMs: 30_000,
      onSpawn: ctx.onPid,
      signal: ctx.env.signal,
    });
    versionMs.push(version.ms);
  }
  const mib = (bytes: number) => Math.round(bytes / 1024 ** 2);
  const notes = [
    `${samples.banger.length} runs each, alternating, one daemon; CLI spawn to exit (create, boot, SSH, exec, delete); ${ctx.defaults.cpus} vCPU, ${ctx.defaults.memoryMib} MiB, ${ctx.defaults.diskGib} GiB disk, image ${ctx.image.name}`,
    `banger = Firecracker driver with vmm.firecracker_binary = ${firecrackerDouble(ctx.env)} (the test double: a Node process serving the Firecracker API that boots the guest with qemu-system-x86_64 -M microvm, TCG, raw virtio-blk, the ELF vmlinux the daemon extracted from the image's bzImage during the warm-up); baseline = QEMU driver (-M microvm, TCG, bzImage, qcow2 overlay)`,
    `the double alone (\`firecracker --version\`, spawn to exit, ${VERSION_RUNS} runs): p50 ${Math.round(median(versionMs))} ms; the daemon spawns it once per boot (its --version probe is cached)`,
    `so the ratio is the driver's own overhead, not Firecracker's speed: the double's Node start, the API calls, and the raw root disk (${cow.strategy} of the ${mib(rootfs.size)} MiB rootfs, ${mib(rootfs.blocks * 512)} MiB allocated: ${cow.reason}) where QEMU gets a qcow2 overlay`,
  ];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${BUDGET_MS / 1000} s cap`);
  return pairedRow(VM_FC_ROW, samples, notes);
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}
