/**
 * Row "vm-oci": `banger vm run --rm --image bench-oci -- true` next to
 * `banger vm run --rm -- true` (the default image), alternating, in the
 * bench's one daemon. bench-oci is a busybox-only OCI image (Debian's static
 * busybox, `sh` and `true` linked to it) written by the bench as an OCI
 * layout and imported untimed, the same store path as a pull. It boots the
 * default image's kernel with banger's init, scripts and busybox in the
 * per-boot initrd and the default image's rootfs as a read-only second disk,
 * so the ratio is what booting an image without a kernel of its own costs.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { makeTar, rawImage } from "../test/helpers/registry.ts";
import { bangerChecked } from "./env.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { alternate } from "./stats.ts";

export const VM_OCI_ROW = {
  id: "vm-oci",
  benchmark: "vm run --rm --image OCI -- true vs the default image (cold)",
  unit: "ms",
  goal: "≤1.1x",
} as const;

const RUNS = 5;
const BUDGET_MS = 240_000;
const VM_TIMEOUT_MS = 180_000;
const IMAGE_NAME = "bench-oci";
const BUSYBOX = "/bin/busybox";

/** Writes a one-layer busybox image as an OCI layout in `dir`. */
async function busyboxLayout(dir: string): Promise<void> {
  const link = (name: string) => ({ header: { name, type: "symlink" as const, linkname: "busybox" } });
  const { tar, diffId } = await makeTar([
    { header: { name: "bin/", type: "directory", mode: 0o755 } },
    { header: { name: "bin/busybox", mode: 0o755 }, body: await readFile(BUSYBOX) },
    link("bin/sh"),
    link("bin/true"),
  ]);
  const image = rawImage([{ blob: gzipSync(tar), diffId }], { config: { Env: ["PATH=/bin"] } });
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  for (const [digest, bytes] of image.blobs)
    await writeFile(join(dir, "blobs", "sha256", digest.slice(7)), bytes);
  await writeFile(join(dir, "blobs", "sha256", image.manifestDigest.slice(7)), image.manifest);
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: image.manifestDigest,
          size: image.manifest.length,
          annotations: { "org.opencontainers.image.ref.name": "latest" },
        },
      ],
    }),
  );
}

export async function benchVmOci(ctx: VmContext): Promise<RowResult> {
  const layout = join(ctx.env.home, "oci-bench");
  await busyboxLayout(layout);
  ctx.log(`vm-oci: importing ${IMAGE_NAME} (not timed)`);
  await bangerChecked(ctx.env, ["image", "import", layout, "--name", IMAGE_NAME], VM_TIMEOUT_MS);
  const runOnce = (image: string[]) => async () =>
    (
      await bangerChecked(
        ctx.env,
        ["vm", "run", "--rm", "--vmm", "qemu", ...image, "--", "true"],
        VM_TIMEOUT_MS,
      )
    ).ms;
  const oci = runOnce(["--image", IMAGE_NAME]);
  const plain = runOnce([]);
  ctx.log("vm-oci: warm-up pair (not timed)");
  await oci();
  await plain();
  ctx.log(`vm-oci: ${RUNS} boots each, alternating`);
  const samples = await alternate({
    runs: RUNS,
    budgetMs: BUDGET_MS,
    signal: ctx.env.signal,
    banger: oci,
    baseline: plain,
    afterEach: (run, ociMs, plainMs) =>
      ctx.log(
        `vm-oci: run ${run}: oci ${(ociMs / 1000).toFixed(2)} s, default ${(plainMs / 1000).toFixed(2)} s`,
      ),
  });
  const notes = [
    `${samples.banger.length} runs each, alternating, one daemon, QEMU driver; CLI spawn to exit (create, boot, guest agent hello, exec, delete); ${ctx.defaults.cpus} vCPU, ${ctx.defaults.memoryMib} MiB, ${ctx.defaults.diskGib} GiB disk`,
    `banger = image ${IMAGE_NAME} (busybox only, imported from an OCI layout): the default image's kernel and initrd plus banger's init, scripts and busybox in the per-boot initrd, the default image's rootfs read-only as /dev/vdb (modules, resize2fs); baseline = the default image ${ctx.image.name}`,
  ];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${BUDGET_MS / 1000} s cap`);
  return pairedRow(VM_OCI_ROW, samples, notes);
}
