/**
 * The workspace lock split (the seeds' two regression tests), on the fake
 * VM platform with the real VM service and real KeyedLocks:
 * - prepare holds the VM lock only to validate and snapshot, so `vm stop`
 *   (and so delete and restart, which take the same lock) completes while
 *   an import is stalled in the guest;
 * - prepares on one VM run their guest I/O one at a time, and an export
 *   waits for the import in flight instead of reading half of it;
 * - workspaces of different VMs never wait for each other: N VMs export at
 *   once, each reading its own workspace and marking only its own record.
 * Progress is driven by gates on the guest exec, never by time.
 */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { KeyedLocks } from "../../src/core/concurrency/index.ts";
import { TAR_END, tarHeader, tarPadding } from "../../src/core/workspace/index.ts";
import { createVmService, type GuestAccess, type VmService } from "../../src/daemon/vm/index.ts";
import {
  createWorkspaceService,
  type WorkspaceRecords,
  type WorkspaceService,
} from "../../src/daemon/workspace/index.ts";
import { BangerError, ErrorCode, type WorkspaceInfo } from "../../src/protocol/index.ts";
import { createFakeVmPlatform, type FakeVmPlatform } from "../fakes/vm-platform/index.ts";

const HANG_GUARD = { timeout: 30_000 };
const HEAD = "a".repeat(40);

/** Guest programs by their $0 name, each held until its `release()` is called. */
class GuestPrograms {
  readonly entered: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  #waiters: Array<{ name: string; argv: readonly string[]; release: () => void }> = [];
  #arrivals: Array<() => void> = [];

  async run(name: string, argv: readonly string[], stdin: Readable | undefined): Promise<void> {
    const released = new Promise<void>((resolve) => this.#waiters.push({ name, argv, release: resolve }));
    this.entered.push(name);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    for (const wake of this.#arrivals.splice(0)) wake();
    if (stdin) for await (const _ of stdin) void _;
    await released;
    this.inFlight -= 1;
  }

  /** Resolves once `count` programs have entered in total. */
  async arrived(count: number): Promise<void> {
    while (this.entered.length < count) await new Promise<void>((resolve) => this.#arrivals.push(resolve));
  }

  waiting(): string[] {
    return this.#waiters.map((waiter) => waiter.name);
  }

  releaseOne(): void {
    this.#waiters.shift()?.release();
  }

  /** The argv of each program held now. */
  held(): (readonly string[])[] {
    return this.#waiters.map((waiter) => waiter.argv);
  }

  /** Releases the held programs whose argv matches. */
  releaseWhere(matches: (argv: readonly string[]) => boolean): void {
    for (const waiter of this.#waiters.filter((candidate) => matches(candidate.argv))) {
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.release();
    }
  }
}

interface Rig {
  platform: FakeVmPlatform;
  vms: VmService;
  workspaces: WorkspaceService;
  programs: GuestPrograms;
  vmLocks: KeyedLocks;
  /** The arguments of each undo of a failed import (staging directory, destination). */
  unstaged: string[][];
}

async function withRig(body: (rig: Rig) => Promise<void>): Promise<void> {
  await using platform = createFakeVmPlatform();
  const programs = new GuestPrograms();
  const base = platform.deps.guest;
  const guest: GuestAccess = {
    ...base,
    identityFile: () => base.identityFile(),
    publicKey: () => base.publicKey(),
    waitForBanner: (o) => base.waitForBanner(o),
    pinHostKey: (o) => base.pinHostKey(o),
    close: (t) => base.close(t),
    openTcp: (ip, port, signal) => base.openTcp(ip, port, signal),
    // The agent's file requests: a payload written into the staging directory is read and dropped.
    files: () => ({
      stat: async () => ({
        name: "",
        kind: "dir" as const,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: { seconds: 0, nanos: 0 },
        link: "",
      }),
      list: async () => [],
      readFile: async () => undefined,
      writeFile: async (_path, _mode, source) => {
        for await (const _ of source) void _;
      },
      mkdir: async () => undefined,
      link: async () => undefined,
      setAttrs: async () => undefined,
    }),
    async exec(target, exec) {
      const name = exec.argv[0] === "sh" ? exec.argv[3] : undefined;
      // The staging step is not held: it answers at once with its directory.
      if (name === "banger-stage") {
        await exec.onStdout?.(Buffer.from(`${exec.argv[4]}.stage\n`));
        return { exitCode: 0, signal: null };
      }
      if (name === undefined || !name.startsWith("banger-")) return base.exec(target, exec);
      if (name === "banger-unstage") {
        unstaged.push(exec.argv.slice(4));
        return { exitCode: 0, signal: null };
      }
      // A cancelled program is killed, as the agent's exec supervisor does.
      const killed = new Promise<never>((_, reject) => {
        const kill = () => reject(new BangerError(ErrorCode.CANCELLED, "the command was killed"));
        if (exec.signal?.aborted) kill();
        else exec.signal?.addEventListener("abort", kill, { once: true });
      });
      await Promise.race([programs.run(name, exec.argv, exec.stdin), killed]);
      // The export's output names the workspace and base it read, so a caller can tell whose it got.
      if (name === "banger-export")
        await exec.onStdout?.(Buffer.from(`tar of ${exec.argv[4]}@${exec.argv[5]}`));
      return { exitCode: 0, signal: null };
    },
  };
  const unstaged: string[][] = [];
  const vms = createVmService({ ...platform.deps, guest });
  const records = new Map<string, WorkspaceInfo>();
  const store: WorkspaceRecords = {
    read: async (id) => records.get(id),
    write: async (id, record) => void records.set(id, record),
  };
  const vmLocks = platform.deps.vmLocks;
  const workspaces = createWorkspaceService({
    vms,
    vmLocks,
    workspaceLocks: new KeyedLocks(),
    disk: {
      copyOut: () => Promise.reject(new Error("the VM is running; no disk read expected")),
      run: () => Promise.reject(new Error("no host program expected")),
    },
    records: store,
    now: () => new Date(0),
  });
  await vms.create({ name: "box" }, { signal: new AbortController().signal, progress: () => {} });
  await body({ platform, vms, workspaces, programs, vmLocks, unstaged });
}

function prepare(
  rig: Rig,
  path = "/root/work/app",
  name = "box",
  head = HEAD,
  signal = new AbortController().signal,
) {
  return rig.workspaces.prepare({
    name,
    path,
    readonly: false,
    includeUntracked: false,
    repo: {
      path: "/home/u/app",
      head,
      branch: "main",
      dirtyFiles: 0,
      untrackedFiles: 0,
      submodules: [],
      lfsFiles: 0,
      worktree: false,
      alternates: false,
      depth: null,
    },
    payload: Readable.from([
      Buffer.concat([
        tarHeader({ name: "staged.patch", type: "file", size: 1, mode: 0o644 }),
        Buffer.from("x"),
        tarPadding(1),
        TAR_END,
      ]),
    ]),
    signal,
  });
}

describe("workspace lock split", () => {
  it(
    "releases the VM lock during the guest import: stop completes while an import is stalled",
    HANG_GUARD,
    async () => {
      await withRig(async (rig) => {
        const id = (await rig.vms.show("box")).id;
        let prepared = false;
        const preparing = prepare(rig).then(() => {
          prepared = true;
        });
        await rig.programs.arrived(1);
        assert.deepEqual(rig.programs.waiting(), ["banger-prepare"], "the import is stalled in the guest");
        assert.equal(rig.vmLocks.isLocked(id), false, "the VM lock is free while the import runs");

        const stopped = await rig.vms.stop("box", {
          signal: new AbortController().signal,
          progress: () => {},
        });
        assert.equal(stopped.state, "stopped", "stop completed without queueing behind the import");
        assert.equal(prepared, false, "the import was still running when stop finished");

        rig.programs.releaseOne();
        await preparing;
      });
    },
  );

  it("serialises prepares on one VM, and an export waits for the import in flight", HANG_GUARD, async () => {
    await withRig(async (rig) => {
      const all = [prepare(rig, "/root/w1"), prepare(rig, "/root/w2"), prepare(rig, "/root/w3")];
      await rig.programs.arrived(1);
      const chunks: Buffer[] = [];
      const exporting = rig.workspaces.export({
        name: "box",
        format: "patch",
        onData: (chunk) => void chunks.push(chunk),
        signal: new AbortController().signal,
      });
      for (let done = 1; done <= 3; done++) {
        assert.deepEqual(rig.programs.waiting(), ["banger-prepare"], `only import ${done} is in the guest`);
        rig.programs.releaseOne();
        await rig.programs.arrived(done + 1);
      }
      assert.deepEqual(rig.programs.entered, [
        "banger-prepare",
        "banger-prepare",
        "banger-prepare",
        "banger-export",
      ]);
      assert.equal(rig.programs.maxInFlight, 1, "never two guest programs of one workspace at once");
      rig.programs.releaseOne();
      const results = await Promise.all(all);
      assert.deepEqual(
        results.map((r) => r.path),
        ["/root/w1", "/root/w2", "/root/w3"],
      );
      const expected = `tar of /root/w3@${HEAD}`;
      assert.deepEqual(await exporting, { bytes: expected.length, fromDisk: false });
      assert.equal(Buffer.concat(chunks).toString(), expected, "the export read the last import");
    });
  });

  it(
    "N VMs export at once, each its own workspace, and mark only their own records",
    HANG_GUARD,
    async () => {
      await withRig(async (rig) => {
        const names = ["box", "vm-b", "vm-c", "vm-d"];
        const headOf = (index: number) => String(index + 1).repeat(40);
        const quiet = { signal: new AbortController().signal, progress: () => {} };
        for (const name of names.slice(1)) await rig.vms.create({ name }, quiet);
        for (const [index, name] of names.entries()) {
          const preparing = prepare(rig, `/root/work/${name}`, name, headOf(index));
          await rig.programs.arrived(index + 1);
          rig.programs.releaseOne();
          await preparing;
        }

        const outputs = new Map(names.map((name) => [name, [] as Buffer[]]));
        const exports = names.map((name) =>
          rig.workspaces.export({
            name,
            format: "bundle",
            onData: (chunk) => void outputs.get(name)?.push(chunk),
            signal: new AbortController().signal,
          }),
        );
        await rig.programs.arrived(names.length * 2);
        assert.equal(rig.programs.inFlight, names.length, "every VM's export is in its guest at once");

        // A second prepare on the first VM waits for that VM's export, and for no other.
        const again = prepare(rig, "/root/work/again", "box", headOf(0));
        rig.programs.releaseWhere((argv) => argv[4] !== "/root/work/box");
        const others = await Promise.all(exports.slice(1));
        assert.equal(
          rig.programs.entered.length,
          names.length * 2,
          "the prepare still waits for box's export",
        );
        rig.programs.releaseWhere((argv) => argv[4] === "/root/work/box");
        await rig.programs.arrived(names.length * 2 + 1);
        rig.programs.releaseOne();
        const [first] = await Promise.all([exports[0], again]);

        for (const [index, result] of [first, ...others].entries()) {
          const name = names[index] as string;
          const expected = `tar of /root/work/${name}@${headOf(index)}`;
          assert.deepEqual(result, { bytes: expected.length, fromDisk: false }, name);
          assert.equal(
            Buffer.concat(outputs.get(name) ?? []).toString(),
            expected,
            `${name} got its own export`,
          );
        }

        const marked = await Promise.all(
          names.map((name, index) =>
            rig.workspaces.markExported(name, { head: headOf(index), tree: `tree-${name}` }),
          ),
        );
        for (const [index, name] of names.entries()) {
          const record = await rig.workspaces.show(name);
          assert.equal(record.exported?.tree, `tree-${name}`, `${name}'s record holds its own export`);
          assert.equal(record.exported?.head, headOf(index));
          assert.equal(marked[index]?.vm, name);
        }
        assert.equal((await rig.workspaces.show("box")).path, "/root/work/again");
      });
    },
  );

  it(
    "undoes a cancelled import in the guest: its staging directory, and its repository if it was renamed in",
    HANG_GUARD,
    async () => {
      await withRig(async (rig) => {
        const cancel = new AbortController();
        const preparing = prepare(rig, "/root/work/app", "box", HEAD, cancel.signal);
        await rig.programs.arrived(1);
        assert.deepEqual(rig.programs.waiting(), ["banger-prepare"]);
        cancel.abort();
        await assert.rejects(
          preparing,
          (error: unknown) => error instanceof BangerError && error.code === ErrorCode.CANCELLED,
        );
        assert.deepEqual(rig.unstaged, [["/root/work/app.stage", "/root/work/app"]]);
        await assert.rejects(rig.workspaces.show("box"), /has no workspace/);
        rig.programs.releaseOne();
      });
    },
  );
});
