/**
 * Baseline for the VM rows, run by the bench inside its network namespace
 * (`ip netns exec NS node bench/vm-worker.ts CONFIG_JSON`), where the daemon
 * also runs. It does by hand what banger does: a qcow2 overlay, a tap on its
 * own bridge, the same QEMU command line (planQemuArgv + planKernelCmdline),
 * an SSH banner poll, host-key pinning from the console, `ssh … true`, QMP
 * quit and teardown; and, for the warm row, ssh over its own ControlMaster.
 *
 * Protocol: one JSON request per stdin line (with an `id`), answered by one
 * `{"type":"result","id":ID,...}` line on stdout (id 0: ready); `{"type":"pid","pid":N}` lines
 * announce every long-lived child (QEMU, ssh master) so the bench can end
 * them by pid if this worker dies. Closing stdin tears everything down.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { planKernelCmdline } from "../src/core/image/cmdline.ts";
import { planQemuArgv, qemuControlSocket } from "../src/core/vmm/qemu-plan.ts";
import { pidAlive, run, runChecked, signalPid, sleep, stopPid, waitPidGone } from "./proc.ts";

export interface WorkerConfig {
  /** Directory for overlays, consoles, sockets (short path). */
  dir: string;
  kernel: string;
  initrd: string | null;
  rootfs: string;
  qemuBinary: string;
  /** The daemon's client key pair; the guest authorizes its public half. */
  privateKey: string;
  publicKey: string;
  tscKhz: number;
  cpus: number;
  memoryMib: number;
  diskBytes: number;
}

export type WorkerRequest =
  | { op: "cold" }
  | { op: "master-open"; ip: string; knownHostsFile: string }
  | { op: "mux-exec" }
  | { op: "mux-cat"; bytes: number }
  | { op: "mux-shell"; script: string; args: string[] }
  | { op: "master-close" };

export const BASELINE_BRIDGE = "benchbr0";
export const BASELINE_TAP = "benchtap0";
const GATEWAY = "10.78.0.1";
const GUEST_IP = "10.78.0.2";
const PREFIX = 24;
const HOST_KEY_MARKER = "banger-init: hostkey ";
const BOOT_DEADLINE_MS = 120_000;
/** Same pacing as the daemon's banner poll. */
const BANNER_INTERVAL_MS = 100;

interface WorkerState {
  config: WorkerConfig;
  runs: number;
  qemu: ChildProcess | null;
  master: { child: ChildProcess; ip: string; knownHostsFile: string; controlPath: string } | null;
}

function emit(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function sshOptions(config: WorkerConfig, knownHostsFile: string): string[] {
  return [
    "-F",
    "/dev/null",
    "-i",
    config.privateKey,
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${knownHostsFile}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
  ];
}

async function ip(args: string[]): Promise<void> {
  await runChecked(["ip", ...args], { timeoutMs: 10_000 });
}

/** One cold boot-to-teardown, timed phase by phase. */
async function coldRun(state: WorkerState): Promise<{ ms: number; phases: Record<string, number> }> {
  const { config } = state;
  const n = state.runs++;
  const overlay = join(config.dir, `base-${n}.qcow2`);
  const consoleLog = join(config.dir, `base-${n}.console`);
  const vmmLog = join(config.dir, `base-${n}.vmm.log`);
  // QEMU names its QMP socket inside the VM directory it is given.
  const vmDir = join(config.dir, `base-${n}`);
  await mkdir(vmDir, { recursive: true });
  const qmpSocket = qemuControlSocket(vmDir);
  const knownHosts = join(config.dir, `base-${n}.known_hosts`);
  const phases: Record<string, number> = {};
  const started = performance.now();
  let mark = started;
  const phase = (name: string) => {
    const now = performance.now();
    phases[name] = now - mark;
    mark = now;
  };
  try {
    await runChecked(
      [
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        config.rootfs,
        "-F",
        "raw",
        overlay,
        String(config.diskBytes),
      ],
      { timeoutMs: 30_000 },
    );
    phase("disk");
    await ip(["tuntap", "add", "dev", BASELINE_TAP, "mode", "tap"]);
    await ip(["link", "set", "dev", BASELINE_TAP, "master", BASELINE_BRIDGE, "up"]);
    phase("tap");
    const kernelCmdline = planKernelCmdline({
      guestIp: GUEST_IP,
      gatewayIp: GATEWAY,
      prefixLength: PREFIX,
      hostname: "bench-base",
      sshPublicKey: config.publicKey,
      tscKhz: config.tscKhz,
    });
    const argv = planQemuArgv({
      accel: "tcg",
      binary: config.qemuBinary,
      spec: {
        vmId: `bench-${n}`,
        vmName: "bench-base",
        cpus: config.cpus,
        memoryMib: config.memoryMib,
        kernel: config.kernel,
        initrd: config.initrd,
        kernelCmdline,
        disk: { path: overlay, format: "qcow2" },
        tap: BASELINE_TAP,
        // A new MAC per boot, as banger derives one from each new VM's id.
        mac: `52:54:00:78:${hexByte(n >> 8)}:${hexByte(n)}`,
        consoleLog,
        vmmLog,
        vmDir,
      },
    });
    const logFd = openSync(vmmLog, "a", 0o600);
    let qemu: ChildProcess;
    try {
      qemu = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    state.qemu = qemu;
    if (qemu.pid === undefined) throw new Error("QEMU did not spawn");
    emit({ type: "pid", pid: qemu.pid });
    const qemuPid = qemu.pid;
    phase("spawn");
    await waitForBanner(GUEST_IP, () => pidAlive(qemuPid));
    phase("banner");
    const key = parseHostKey(await readFile(consoleLog, "utf8"));
    await writeFile(knownHosts, `${GUEST_IP} ${key}\n`, { mode: 0o600 });
    phase("pin");
    await runChecked(["ssh", ...sshOptions(config, knownHosts), `root@${GUEST_IP}`, "true"], {
      timeoutMs: 30_000,
    });
    phase("ssh");
    await qmpQuit(qmpSocket);
    if (!(await waitPidGone(qemuPid, 10_000))) throw new Error(`QEMU pid ${qemuPid} ignored QMP quit`);
    state.qemu = null;
    await ip(["link", "del", "dev", BASELINE_TAP]);
    await rm(overlay, { force: true });
    phase("teardown");
    return { ms: performance.now() - started, phases };
  } finally {
    if (state.qemu?.pid !== undefined) await stopPid(state.qemu.pid, 0);
    state.qemu = null;
    await run(["ip", "link", "del", "dev", BASELINE_TAP], { timeoutMs: 10_000 });
    for (const file of [overlay, consoleLog, vmmLog, knownHosts]) await rm(file, { force: true });
    await rm(vmDir, { recursive: true, force: true });
  }
}

function hexByte(value: number): string {
  return (value & 0xff).toString(16).padStart(2, "0");
}

/** The last well-formed `banger-init: hostkey TYPE BASE64` console line, as "TYPE BASE64". */
function parseHostKey(consoleText: string): string {
  const lines = consoleText.split("\n").reverse();
  for (const raw of lines) {
    const line = raw.replaceAll("\r", "");
    if (!line.startsWith(HOST_KEY_MARKER)) continue;
    const [type, blob] = line.slice(HOST_KEY_MARKER.length).trim().split(/\s+/);
    if (type && blob && /^[A-Za-z0-9+/]+={0,2}$/.test(blob)) return `${type} ${blob}`;
  }
  throw new Error("the guest printed no host key line on its console");
}

async function waitForBanner(host: string, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + BOOT_DEADLINE_MS;
  for (;;) {
    if (await readsBanner(host, Math.min(1000, deadline - Date.now()))) return;
    if (!alive()) throw new Error("QEMU exited before sshd answered");
    if (Date.now() >= deadline) throw new Error(`sshd on ${host} did not answer in ${BOOT_DEADLINE_MS} ms`);
    await sleep(BANNER_INTERVAL_MS);
  }
}

function readsBanner(host: string, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host, port: 22 });
    let received = "";
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), Math.max(1, timeoutMs));
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      received += chunk;
      if (received.length >= 4) finish(received.startsWith("SSH-"));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}

/** Connects to QMP, negotiates capabilities and sends `quit`; resolves when QEMU closes the socket. */
function qmpQuit(socketPath: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = connect(socketPath);
    let buffer = "";
    let step = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`QMP on ${socketPath} did not finish quit in 10 s`));
    }, 10_000);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let newline = buffer.indexOf("\n");
      while (newline !== -1) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf("\n");
        if (step === 0 && line.includes('"QMP"')) {
          step = 1;
          socket.write('{"execute":"qmp_capabilities"}\n');
        } else if (step === 1 && line.includes('"return"')) {
          step = 2;
          socket.write('{"execute":"quit"}\n');
        }
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      if (step === 2) resolve();
      else reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function openMaster(state: WorkerState, ip: string, knownHostsFile: string): Promise<number> {
  const controlPath = join(state.config.dir, "ctl");
  const child = spawn(
    "ssh",
    [
      ...sshOptions(state.config, knownHostsFile),
      "-M",
      "-S",
      controlPath,
      "-o",
      "ControlPersist=no",
      "-N",
      `root@${ip}`,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  if (child.pid === undefined) throw new Error("ssh master did not spawn");
  emit({ type: "pid", pid: child.pid });
  state.master = { child, ip, knownHostsFile, controlPath };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const check = await run(["ssh", "-S", controlPath, "-O", "check", `root@${ip}`], { timeoutMs: 5000 });
    if (check.code === 0) return child.pid;
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`ssh ControlMaster to ${ip} did not come up: ${check.stderr.trim()}`);
    }
    await sleep(50);
  }
}

async function muxExec(state: WorkerState, remote: readonly string[] = ["true"]): Promise<number> {
  const master = state.master;
  if (!master) throw new Error("no ControlMaster is open");
  const result = await runChecked(
    [
      "ssh",
      ...sshOptions(state.config, master.knownHostsFile),
      "-S",
      master.controlPath,
      "-o",
      "ControlMaster=no",
      `root@${master.ip}`,
      ...remote,
    ],
    { timeoutMs: 120_000, discardStdout: true },
  );
  const wanted = remote[0] === "head" ? Number(remote[2]) : 0;
  if (result.stdoutBytes !== wanted)
    throw new Error(`ssh ${remote.join(" ")}: ${result.stdoutBytes} bytes, not ${wanted}`);
  return result.ms;
}

/**
 * Runs a constant shell script (a baseline pipeline) with the open
 * ControlMaster: $SSH holds the ssh options that reach it (paths without
 * spaces), $GUEST is root@IP, and `args` are $1..$n.
 */
async function muxShell(state: WorkerState, script: string, args: readonly string[]): Promise<number> {
  const master = state.master;
  if (!master) throw new Error("no ControlMaster is open");
  const ssh = [
    ...sshOptions(state.config, master.knownHostsFile),
    "-o",
    `ControlPath=${master.controlPath}`,
    "-o",
    "ControlMaster=no",
  ];
  const result = await runChecked(["sh", "-c", script, "bench", ...args], {
    timeoutMs: 600_000,
    env: { ...process.env, SSH: ssh.join(" "), GUEST: `root@${master.ip}` },
  });
  return result.ms;
}

async function closeMaster(state: WorkerState): Promise<void> {
  const master = state.master;
  if (!master) return;
  state.master = null;
  await run(["ssh", "-S", master.controlPath, "-O", "exit", `root@${master.ip}`], { timeoutMs: 5000 });
  if (master.child.pid !== undefined) await stopPid(master.child.pid, 2000);
  await rm(master.controlPath, { force: true });
}

async function handle(state: WorkerState, request: WorkerRequest): Promise<object> {
  switch (request.op) {
    case "cold":
      return coldRun(state);
    case "master-open":
      return { pid: await openMaster(state, request.ip, request.knownHostsFile) };
    case "mux-exec":
      return { ms: await muxExec(state) };
    case "mux-cat":
      return { ms: await muxExec(state, ["head", "-c", String(request.bytes), "/dev/zero"]) };
    case "mux-shell":
      return { ms: await muxShell(state, request.script, request.args) };
    case "master-close":
      await closeMaster(state);
      return {};
  }
}

async function teardown(state: WorkerState): Promise<void> {
  await closeMaster(state).catch(() => undefined);
  if (state.qemu?.pid !== undefined) signalPid(state.qemu.pid, "SIGKILL");
  await run(["ip", "link", "del", "dev", BASELINE_TAP], { timeoutMs: 10_000 });
  await run(["ip", "link", "del", "dev", BASELINE_BRIDGE], { timeoutMs: 10_000 });
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "") as WorkerConfig;
  const state: WorkerState = { config, runs: 0, qemu: null, master: null };
  await run(["ip", "link", "del", "dev", BASELINE_BRIDGE], { timeoutMs: 10_000 });
  await ip(["link", "add", "name", BASELINE_BRIDGE, "type", "bridge"]);
  await ip(["addr", "add", `${GATEWAY}/${PREFIX}`, "dev", BASELINE_BRIDGE]);
  await ip(["link", "set", "dev", BASELINE_BRIDGE, "up"]);
  emit({ type: "result", id: 0, ok: true, ready: true });
  process.on("SIGTERM", () => void teardown(state).finally(() => process.exit(143)));
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === "") continue;
    const request = JSON.parse(line) as WorkerRequest & { id: number };
    try {
      const reply = await handle(state, request);
      emit({ type: "result", id: request.id, ok: true, ...reply });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      emit({ type: "result", id: request.id, ok: false, error: message });
    }
  }
  await teardown(state);
}

await main();
