/** The bench's side of bench/vm-worker.ts: spawns it inside the netns and sends it requests. */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { BenchEnv } from "./env.ts";
import { pidAlive, stopPid, waitPidGone } from "./proc.ts";
import type { WorkerConfig, WorkerRequest } from "./vm-worker.ts";

export interface VmWorker {
  /** Sends one request; rejects with the worker's error, or after `timeoutMs`. */
  request(request: WorkerRequest, timeoutMs: number): Promise<Record<string, unknown>>;
  /** Closes its stdin (it tears down its bridge, tap, QEMU and ssh master) and waits for its exit. */
  stop(): Promise<void>;
}

type Reply = { type: "result"; ok: boolean; error?: string } & Record<string, unknown>;

export async function startWorker(options: {
  env: BenchEnv;
  config: WorkerConfig;
  onPid: (pid: number) => void;
}): Promise<VmWorker> {
  const { env } = options;
  if (!env.netns) throw new Error("the VM worker needs the bench's network namespace");
  const logFd = openSync(join(env.home, "vm-worker.log"), "a", 0o600);
  const argv = [
    "ip",
    "netns",
    "exec",
    env.netns,
    env.node,
    join(env.root, "bench", "vm-worker.ts"),
    JSON.stringify(options.config),
  ];
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", logFd] });
  } finally {
    closeSync(logFd);
  }
  if (child.pid === undefined) throw new Error("could not spawn the VM worker");
  const pid = child.pid;
  options.onPid(pid);

  /** Resolvers by request id; the ready message has id 0. */
  const waiting = new Map<number, (reply: Reply) => void>();
  let nextId = 1;
  let exited = false;
  child.once("exit", () => {
    exited = true;
    for (const resolve of waiting.values())
      resolve({ type: "result", ok: false, error: "the VM worker exited" });
    waiting.clear();
  });
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (message.type === "pid" && typeof message.pid === "number") options.onPid(message.pid);
    if (message.type === "result" && typeof message.id === "number") {
      const resolve = waiting.get(message.id);
      waiting.delete(message.id);
      resolve?.(message as Reply);
    }
  });
  /** The reply to request `id`; a late reply to a request given up on is dropped. */
  const replyTo = (id: number, timeoutMs: number) =>
    new Promise<Reply>((resolve, reject) => {
      if (exited) {
        reject(new Error("the VM worker exited"));
        return;
      }
      const settle = () => {
        clearTimeout(timer);
        env.signal.removeEventListener("abort", onAbort);
        waiting.delete(id);
      };
      const onAbort = () => {
        settle();
        reject(new Error("interrupted"));
      };
      const timer = setTimeout(() => {
        settle();
        reject(new Error(`the VM worker did not answer in ${timeoutMs} ms`));
      }, timeoutMs);
      env.signal.addEventListener("abort", onAbort, { once: true });
      waiting.set(id, (reply) => {
        settle();
        resolve(reply);
      });
    });
  const expectOk = (reply: Reply) => {
    if (!reply.ok) throw new Error(`VM worker: ${reply.error ?? "failed"}`);
    return reply;
  };

  const stop = async () => {
    child.stdin?.end();
    if (!(await waitPidGone(pid, 30_000)) && pidAlive(pid)) await stopPid(pid, 5000);
  };
  try {
    expectOk(await replyTo(0, 30_000));
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    async request(request, timeoutMs) {
      const id = nextId++;
      const reply = replyTo(id, timeoutMs);
      child.stdin?.write(`${JSON.stringify({ ...request, id })}\n`);
      return expectOk(await reply);
    },
    stop,
  };
}
