/**
 * Snapshots through the VM service on the fake platform: `vm snapshot`
 * pauses, saves and resumes the source (which stays running); a clone is
 * restored (not booted), gets its identity through the guest channel before
 * its guest-ready hooks, and its host key is pinned from that output; a
 * mismatched or impossible restore is refused before anything is made; a
 * fault at any step of a save or a restore leaves nothing behind.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { vmPaths } from "../../src/core/paths/index.ts";
import { tapNameForVmId } from "../../src/core/vm/index.ts";
import { AUTH_FILES_JSON } from "../../src/core/workspace/index.ts";
import {
  createSnapshotService,
  createSnapshotStore,
  type SnapshotService,
} from "../../src/daemon/snapshot/index.ts";
import { createVmService, type VmService } from "../../src/daemon/vm/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { createNodeFs, readDiskUsage } from "../../src/sys/fs/index.ts";
import { createFakeVmPlatform, type FakeVmPlatform, indexOf } from "../fakes/vm-platform/index.ts";
import { isBangerError } from "../helpers/assert.ts";

const HANG_GUARD = { timeout: 60_000 };
const op = () => ({ signal: new AbortController().signal, progress: () => {} });

interface World {
  platform: FakeVmPlatform;
  vms: VmService;
  snapshots: SnapshotService;
}

function world(options: { restore?: boolean } = {}): World & AsyncDisposable {
  const platform = createFakeVmPlatform(
    options.restore === false ? {} : { overrides: { restoreReadiness: [] } },
  );
  const vms = createVmService(platform.deps);
  let ids = 0;
  const snapshots = createSnapshotService({
    snapshots: createSnapshotStore({
      store: platform.store,
      fs: createNodeFs(),
      dir: platform.layout.snapshotsDir,
      publishMutex: new Mutex(),
      logger: platform.deps.logger,
      newId: () => `snap${++ids}`,
    }),
    store: platform.store,
    fs: createNodeFs(),
    diskUsage: readDiskUsage,
    vms: {
      save: (name, dir, o) => vms.saveSnapshot(name, dir, o),
      create: (params, o, from) => vms.create(params, o, from),
      delete: (name) => vms.delete(name),
    },
    logger: platform.deps.logger,
    now: () => new Date("2026-11-30T22:00:00Z"),
  });
  return { platform, vms, snapshots, [Symbol.asyncDispose]: () => platform.close() };
}

/** Whether a held resource (tap, VMM, disk, handles, hook) is the source VM's. */
function ownedBy(resourceId: string, vmId: string): boolean {
  return resourceId.includes(vmId) || resourceId === tapNameForVmId(vmId);
}

function stagingEntries(platform: FakeVmPlatform): string[] {
  const staging = join(platform.layout.snapshotsDir, ".staging");
  return existsSync(staging) ? readdirSync(staging) : [];
}

describe("VM snapshots on the fake platform", () => {
  it(
    "saves a running VM, which goes on running, and restores a clone with its own identity",
    HANG_GUARD,
    async () => {
      await using w = world();
      const { platform, vms, snapshots } = w;
      const source = await vms.create({ name: "src" }, op());
      const info = await snapshots.take({ name: "src", snapshot: "warm" }, op());
      assert.equal(info.sourceVm, "src");
      assert.deepEqual(readdirSync(info.dir).sort(), ["disk.qcow2", "manifest.json", "state"]);
      const events = platform.events;
      assert.ok(
        indexOf(events.all, { kind: "pause", vmId: source.id }) <
          indexOf(events.all, { kind: "snapshot-save", vmId: source.id }),
      );
      assert.ok(
        indexOf(events.all, { kind: "disk-snapshot" }) <
          indexOf(events.all, { kind: "resume", vmId: source.id }),
        "the disk is copied while the VMM is paused",
      );
      assert.equal((await vms.show("src")).state, "running");

      const clone = await snapshots.createFrom({ name: "c1", from: "warm" }, op());
      assert.equal(clone.state, "running");
      assert.notEqual(clone.guestIp, source.guestIp);
      assert.notEqual(clone.mac, source.mac);
      assert.equal(indexOf(events.all, { kind: "boot-start", vmId: clone.id }), -1, "a clone is not booted");
      assert.ok(indexOf(events.all, { kind: "restore-start", vmId: clone.id }) >= 0);
      const execs = events.all.filter((event) => event.kind === "exec" && event.vmId === clone.id);
      assert.deepEqual(
        execs.map((event) =>
          event.kind === "exec"
            ? event.argv[0] === "date"
              ? "clock"
              : (event.argv[3] ?? event.argv[0])
            : "",
        ),
        ["clock", "banger-identity"],
      );
      const network = execs.at(-1);
      assert.ok(network?.kind === "exec" && network.argv.includes(`${clone.guestIp}/24`));
      assert.ok(network?.kind === "exec" && network.argv.includes(clone.mac));
      assert.ok(
        indexOf(events.all, { kind: "exec", vmId: clone.id }) <
          indexOf(events.all, { kind: "hook-start", hook: "fake-auth", vmId: clone.id }),
        "the identity is applied before the guest-ready hooks",
      );
      const knownHosts = readFileSync(vmPaths(platform.layout, clone.id).knownHosts, "utf8");
      assert.match(knownHosts, new RegExp(`^${clone.guestIp.replaceAll(".", "\\.")} ssh-ed25519 `));
      assert.equal(platform.store.snapshotOfVm(clone.id), "snap1");
      assert.deepEqual((await snapshots.show("warm")).usedBy, ["c1"]);
      await assert.rejects(snapshots.delete("warm"), { code: ErrorCode.BAD_STATE });

      await vms.delete("c1");
      await snapshots.delete("warm");
      await vms.delete("src");
      assert.deepEqual(platform.held(), []);
    },
  );

  it(
    "refuses: a stopped VM, synced secrets without --include-secrets, a mismatched or impossible restore",
    HANG_GUARD,
    async () => {
      await using w = world();
      const { platform, vms, snapshots } = w;
      const source = await vms.create({ name: "src" }, op());
      await assert.rejects(snapshots.take({ name: "nope" }, op()), { code: ErrorCode.VM_NOT_FOUND });
      await vms.stop("src", op());
      await assert.rejects(snapshots.take({ name: "src" }, op()), { code: ErrorCode.BAD_STATE });
      await vms.start("src", op());
      const authFiles = join(vmPaths(platform.layout, source.id).dir, AUTH_FILES_JSON);
      // Keys and git identity only (an empty list of files) hold no secret.
      await createNodeFs().writeFileAtomic(authFiles, "[]\n");
      await snapshots.take({ name: "src", snapshot: "keys-only" }, op());
      await createNodeFs().writeFileAtomic(authFiles, `${JSON.stringify(["/root/.config/gh/hosts.yml"])}\n`);
      await assert.rejects(snapshots.take({ name: "src", snapshot: "s" }, op()), {
        code: ErrorCode.SNAPSHOT_SECRETS,
      });
      const withSecrets = await snapshots.take({ name: "src", snapshot: "s", includeSecrets: true }, op());
      assert.equal(withSecrets.includesSecrets, true);
      assert.deepEqual(stagingEntries(platform), []);

      // A clone inherits its source's auth record: promote scrubs those paths, a snapshot of it refuses them,
      // and its first sync is skipped when the material is the same.
      const record = { paths: ["/root/.config/gh/hosts.yml"], salt: "s1", digest: "d".repeat(64) };
      await createNodeFs().writeFileAtomic(authFiles, `${JSON.stringify(record)}\n`);
      await snapshots.take({ name: "src", snapshot: "synced", includeSecrets: true }, op());
      const clone = await snapshots.createFrom({ name: "c-synced", from: "synced" }, op());
      const inherited = readFileSync(join(vmPaths(platform.layout, clone.id).dir, AUTH_FILES_JSON), "utf8");
      assert.deepEqual(JSON.parse(inherited), record);
      await assert.rejects(snapshots.take({ name: "c-synced", snapshot: "of-clone" }, op()), {
        code: ErrorCode.SNAPSHOT_SECRETS,
      });
      const keysOnly = await snapshots.createFrom({ name: "c-keys", from: "keys-only" }, op());
      assert.deepEqual(
        JSON.parse(readFileSync(join(vmPaths(platform.layout, keysOnly.id).dir, AUTH_FILES_JSON), "utf8")),
        { paths: [] },
        "the older list form comes through as a record",
      );
      await vms.delete("c-synced");
      await vms.delete("c-keys");

      const before = platform.store.listVms().length;
      await assert.rejects(
        snapshots.createFrom({ name: "c", from: "s", cpus: 2 }, op()),
        (error: unknown) => {
          assert.ok(isBangerError(error, ErrorCode.SNAPSHOT_MISMATCH));
          assert.match(error.message, /vCPUs 1; this restore has 2/);
          return true;
        },
      );
      await assert.rejects(snapshots.createFrom({ name: "c", from: "s", vmm: "firecracker" }, op()), {
        code: ErrorCode.SNAPSHOT_MISMATCH,
      });
      assert.equal(platform.store.listVms().length, before, "a refused restore leaves no VM");
      assert.deepEqual(
        platform.held().filter((resource) => !ownedBy(resource.id, source.id)),
        [],
      );
    },
  );

  it(
    "without a restore channel (SSH only) a clone is refused before anything is made",
    HANG_GUARD,
    async () => {
      await using w = world({ restore: false });
      const { platform, vms, snapshots } = w;
      await vms.create({ name: "src" }, op());
      await snapshots.take({ name: "src", snapshot: "s" }, op());
      await assert.rejects(snapshots.createFrom({ name: "c", from: "s" }, op()), (error: unknown) => {
        assert.ok(isBangerError(error, ErrorCode.BAD_STATE));
        assert.match(error.message, /needs the guest agent/);
        return true;
      });
      assert.equal(platform.store.getVmByName("c"), undefined);
    },
  );
});

describe("VM snapshots: faults at every step", () => {
  async function eachStep(
    t: TestContext,
    run: (k: number) => Promise<"failed" | "succeeded">,
  ): Promise<number> {
    for (let k = 1; k <= 200; k++) {
      let outcome: "failed" | "succeeded" | undefined;
      await t.test(`step ${k}`, async () => {
        outcome = await run(k);
      });
      if (outcome === "succeeded") return k - 1;
    }
    throw new Error("still failing after 200 steps");
  }

  it("a failed save leaves no staging directory and the source running", HANG_GUARD, async (t) => {
    const failed = await eachStep(t, async (k) => {
      await using w = world();
      const { platform, vms, snapshots } = w;
      const source = await vms.create({ name: "src" }, op());
      platform.resetSteps();
      platform.failAt(k, ErrorCode.INTERNAL);
      const outcome = await snapshots.take({ name: "src", snapshot: "s" }, op()).then(
        () => "succeeded" as const,
        () => "failed" as const,
      );
      if (platform.injected === null) {
        assert.equal(outcome, "succeeded");
        return "succeeded";
      }
      if (platform.injected.step === "driver.resume") {
        // The state and disk are saved: the snapshot stands, and the failed resume is logged.
        assert.equal(outcome, "succeeded");
        assert.ok(platform.logLines.some((line) => line.level === "error" && /resume/.test(line.msg)));
        return "failed";
      }
      assert.equal(outcome, "failed");
      assert.deepEqual(stagingEntries(platform), [], "no staging directory left");
      assert.deepEqual(await snapshots.list(), [], "nothing published");
      assert.equal((await vms.show("src")).state, "running");
      const pauses = platform.events.all.filter((e) => e.kind === "pause" && e.vmId === source.id).length;
      const resumes = platform.events.all.filter((e) => e.kind === "resume" && e.vmId === source.id).length;
      assert.ok(
        resumes >= pauses || platform.injected.step === "driver.resume",
        "a paused source is resumed",
      );
      return "failed";
    });
    assert.ok(failed >= 4, `a save has several steps (${failed})`);
  });

  it("a failed restore removes the clone entirely; the snapshot and source stay", HANG_GUARD, async (t) => {
    const failed = await eachStep(t, async (k) => {
      await using w = world();
      const { platform, vms, snapshots } = w;
      const source = await vms.create({ name: "src" }, op());
      await snapshots.take({ name: "src", snapshot: "s" }, op());
      platform.resetSteps();
      platform.failAt(k, ErrorCode.BOOT_FAILED);
      const outcome = await snapshots.createFrom({ name: "c", from: "s" }, op()).then(
        () => "succeeded" as const,
        () => "failed" as const,
      );
      if (platform.injected === null) {
        assert.equal(outcome, "succeeded");
        return "succeeded";
      }
      assert.equal(outcome, "failed");
      assert.equal(platform.store.getVmByName("c"), undefined, "the clone's row is gone");
      assert.deepEqual(readdirSync(platform.layout.vmsDir), [source.id], "only the source's directory");
      assert.deepEqual(
        platform.held().filter((resource) => !ownedBy(resource.id, source.id)),
        [],
        "everything the clone acquired was undone",
      );
      assert.deepEqual((await snapshots.show("s")).usedBy, []);
      return "failed";
    });
    assert.ok(failed > 8, `a restore has many steps (${failed})`);
  });

  it("a failed fork leaves no clone and no snapshot; the source runs on", HANG_GUARD, async (t) => {
    const failed = await eachStep(t, async (k) => {
      await using w = world();
      const { platform, vms, snapshots } = w;
      const source = await vms.create({ name: "src" }, op());
      platform.resetSteps();
      platform.failAt(k, ErrorCode.BOOT_FAILED);
      const outcome = await snapshots.fork({ name: "src", newName: "f", count: 2 }, op()).then(
        () => "succeeded" as const,
        () => "failed" as const,
      );
      if (platform.injected === null) {
        assert.equal(outcome, "succeeded");
        return "succeeded";
      }
      if (outcome === "succeeded") return "failed";
      assert.deepEqual(
        (await vms.list()).map((vm) => vm.name),
        ["src"],
        `only the source after a fault at ${platform.injected.step}`,
      );
      assert.equal((await vms.show("src")).state, "running");
      assert.deepEqual(await snapshots.list(), [], "the fork's snapshot is gone");
      assert.deepEqual(stagingEntries(platform), []);
      assert.deepEqual(
        platform.held().filter((resource) => !ownedBy(resource.id, source.id)),
        [],
        "everything the clones acquired was undone",
      );
      return "failed";
    });
    assert.ok(failed > 10, `a fork has many steps (${failed})`);
  });
});
