/**
 * How fast a new QEMU loads a saved state, by transport: `-incoming fd:3`
 * (the state file as the child's fd 3, what the QEMU driver does) against
 * `-incoming unix:SOCK` with this process streaming the file into the
 * socket. The guest is the test kernel with a 96 MiB random initrd (freed
 * after it fails to unpack, so its pages stay non-zero and are migrated),
 * saved once with the driver's own save. Prints the load times (spawn to
 * `query-status` leaving `inmigrate`), alternating, and the state's size.
 *
 *   node bench/snapshot-transport.ts [runs]
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, createReadStream, mkdirSync, openSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { planQemuArgv } from "../src/core/vmm/index.ts";
import { connectQmp } from "../src/sys/qmp/index.ts";
import { saveQemuState } from "../src/sys/vmm/qemu-snapshot.ts";
import { testKernel } from "../test/helpers/test-kernel.ts";

const runs = Number(process.argv[2] ?? 5);
const qemu = process.env.QEMU_BINARY ?? ["qemu", "system", "x86_64"].join("-");
const kernel = await testKernel();
if (!kernel) throw new Error("no test kernel");
const dir = await mkdtemp(join(tmpdir(), "snap-transport-"));
const initrd = join(dir, "initrd.img");
await writeFile(initrd, randomBytes(96 * 1024 * 1024));
const spec = (name: string) => ({
  vmId: name,
  vmName: name,
  cpus: 1,
  memoryMib: 512,
  kernel,
  initrd,
  kernelCmdline: "console=ttyS0 panic=0",
  disk: { path: join(dir, "disk.raw"), format: "raw" as const },
  tap: "unused",
  mac: "52:54:00:00:00:01",
  consoleLog: join(dir, `${name}.console`),
  vmmLog: join(dir, `${name}.log`),
  vmDir: join(dir, name),
});
await writeFile(join(dir, "disk.raw"), Buffer.alloc(1024 * 1024));

/** The driver's argv without the tap (-netdev user-less: none) so no root is needed. */
function argv(name: string, extra: string[]): string[] {
  mkdirSync(join(dir, name), { recursive: true });
  const full = planQemuArgv({ spec: spec(name), accel: "tcg", binary: qemu });
  const out: string[] = [];
  for (let i = 0; i < full.length; i++) {
    if (full[i] === "-netdev" || (full[i] === "-device" && full[i + 1]?.startsWith("virtio-net"))) {
      i++;
      continue;
    }
    if (full[i]?.startsWith("file,id=console")) {
      out.push(`file,id=console,path=${join(dir, `${name}.console`)}`);
      continue;
    }
    out.push(full[i]!);
  }
  return [
    ...out.map((arg) => arg.replace(/unix:[^,]*qmp.sock/, `unix:${join(dir, `${name}.qmp`)}`)),
    ...extra,
  ];
}

async function waitStatus(qmpPath: string, done: (status: string) => boolean): Promise<void> {
  const qmp = await connectQmp({ socketPath: qmpPath, timeoutMs: 60_000 });
  try {
    for (;;) {
      if (done((await qmp.status()).status)) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    qmp.close();
  }
}

// The source: boot, let the kernel free the initrd, stop, save.
const source = spawn(qemu, argv("src", []).slice(1), { stdio: ["ignore", "ignore", "inherit"] });
await new Promise((resolve) => setTimeout(resolve, 8000));
const qmpSrc = join(dir, "src.qmp");
{
  const qmp = await connectQmp({ socketPath: qmpSrc, timeoutMs: 30_000 });
  await qmp.execute("stop");
  qmp.close();
}
const bytes = await saveQemuState(
  { pid: source.pid!, pidStartTicks: 0, controlSocket: qmpSrc },
  dir,
  AbortSignal.timeout(60_000),
);
source.kill("SIGKILL");
const state = join(dir, "state");

async function viaFd(n: number): Promise<number> {
  const name = `fd${n}`;
  const fd = openSync(state, "r");
  const start = performance.now();
  const child = spawn(qemu, argv(name, ["-incoming", "fd:3"]).slice(1), {
    stdio: ["ignore", "ignore", "ignore", fd],
  });
  closeSync(fd);
  await waitStatus(join(dir, `${name}.qmp`), (status) => status !== "inmigrate");
  const ms = performance.now() - start;
  child.kill("SIGKILL");
  return ms;
}

async function viaUnix(n: number): Promise<number> {
  const name = `unix${n}`;
  const sock = join(dir, `${name}.in`);
  const start = performance.now();
  const child = spawn(qemu, argv(name, ["-incoming", `unix:${sock}`]).slice(1), {
    stdio: "ignore",
  });
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(sock, () => {
        createReadStream(state).pipe(socket);
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await waitStatus(join(dir, `${name}.qmp`), (status) => status !== "inmigrate");
  const ms = performance.now() - start;
  child.kill("SIGKILL");
  return ms;
}

const fdMs: number[] = [];
const unixMs: number[] = [];
for (let i = 0; i < runs; i++) {
  fdMs.push(await viaFd(i));
  unixMs.push(await viaUnix(i));
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
console.log(
  `state: ${(bytes / 1024 ** 2).toFixed(1)} MiB (${(await stat(state)).size} bytes) of a 512 MiB guest`,
);
console.log(
  `-incoming fd:3      p50 ${median(fdMs).toFixed(0)} ms  [${fdMs.map((ms) => ms.toFixed(0)).join(", ")}]`,
);
console.log(
  `-incoming unix:SOCK p50 ${median(unixMs).toFixed(0)} ms  [${unixMs.map((ms) => ms.toFixed(0)).join(", ")}]`,
);
await rm(dir, { recursive: true, force: true });
