/**
 * The snapshot service: `vm snapshot` (the VM service saves the state and
 * disk into a staging directory under the VM's lock; this service writes
 * the manifest and publishes), `snapshot ls|show|rm`, `vm create --from`
 * (reads and checks the manifest, then the VM service creates the clone
 * and restores it) and `vm fork` (one snapshot, N clones at once; a failed
 * clone removes the others and the snapshot).
 */
import { join } from "node:path";
import { errorMessage } from "../../core/async/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  defaultSnapshotName,
  forkNames,
  parseManifest,
  SNAPSHOT_FORMAT,
  SnapshotFiles,
  type SnapshotManifest,
} from "../../core/snapshot/index.ts";
import { GIB } from "../../core/units.ts";
import { validateVmName } from "../../core/vm/index.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  type Progress,
  type SnapshotInfo,
  type VmForkParams,
  type VmInfo,
  type VmSnapshotParams,
} from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { SnapshotRecord, Store } from "../../sys/store/index.ts";
import type { SnapshotStore } from "./store.ts";

export interface OpOptions {
  signal: AbortSignal;
  progress: Progress;
}

/** What the VM service saved of a VM into a staging directory (everything the manifest needs but its name). */
export type SavedVm = Omit<SnapshotManifest, "format" | "id" | "name" | "createdAt"> & {
  vm: { id: string; name: string; imageId: string; imageName: string; diskGib: number };
};

/** A published snapshot, as a restore needs it. */
export interface RestoreSource {
  snapshotId: string;
  dir: string;
  manifest: SnapshotManifest;
}

/** The VM service's part (implemented there, under its per-VM locks). */
export interface SnapshotVms {
  /** Pauses the running or paused VM, writes its VMM state and disk into `dir`, lets it run on. */
  save(name: string, dir: string, options: OpOptions & { includeSecrets: boolean }): Promise<SavedVm>;
  /** Creates a VM whose disk is backed by the snapshot's and restores it instead of booting. */
  create(params: CreateVmParams, options: OpOptions, from: RestoreSource): Promise<VmInfo>;
  delete(name: string): Promise<void>;
}

export interface SnapshotServiceDeps {
  snapshots: SnapshotStore;
  store: Pick<Store, "clonesOf" | "getVmByName">;
  fs: Pick<Fs, "readFile" | "writeFileAtomic">;
  /** Allocated and apparent bytes of a file; undefined when absent. */
  diskUsage(path: string): Promise<{ allocatedBytes: number; apparentBytes: number } | undefined>;
  vms: SnapshotVms;
  logger: Logger;
  now(): Date;
}

export interface SnapshotService {
  take(params: VmSnapshotParams, options: OpOptions): Promise<SnapshotInfo>;
  list(): Promise<SnapshotInfo[]>;
  show(name: string): Promise<SnapshotInfo>;
  delete(name: string): Promise<void>;
  /** `vm create --from` / `vm run --from`. */
  createFrom(params: CreateVmParams & { from: string }, options: OpOptions): Promise<VmInfo>;
  fork(params: VmForkParams, options: OpOptions): Promise<{ snapshot: SnapshotInfo; vms: VmInfo[] }>;
}

export function createSnapshotService(deps: SnapshotServiceDeps): SnapshotService {
  const { snapshots } = deps;

  async function info(record: SnapshotRecord): Promise<SnapshotInfo> {
    const manifest = await readManifest(record).catch(() => undefined);
    const stateFiles = [SnapshotFiles.state, SnapshotFiles.memory];
    let memoryBytes = 0;
    for (const file of stateFiles) {
      memoryBytes += (await deps.diskUsage(join(record.dir, file)))?.apparentBytes ?? 0;
    }
    const disk = manifest ? await deps.diskUsage(join(record.dir, manifest.disk.file)) : undefined;
    return {
      id: record.id,
      name: record.name,
      sourceVm: record.sourceVm,
      vmm: record.vmm,
      image: record.imageName,
      cpus: record.cpus,
      memoryMib: record.memoryMib,
      diskGib: record.diskGib,
      memoryBytes,
      diskBytes: disk?.allocatedBytes ?? 0,
      includesSecrets: record.includesSecrets,
      createdAt: record.createdAt,
      dir: record.dir,
      usedBy: deps.store.clonesOf(record.id),
    };
  }

  async function readManifest(record: SnapshotRecord): Promise<SnapshotManifest> {
    const path = join(record.dir, SnapshotFiles.manifest);
    let text: string;
    try {
      text = (await deps.fs.readFile(path)).toString("utf8");
    } catch (error) {
      throw new BangerError(
        ErrorCode.SNAPSHOT_MISMATCH,
        `snapshot '${record.name}' has no readable ${path}`,
        {
          cause: error,
          hint: `its files are damaged; delete it with \`banger snapshot rm ${record.name}\``,
        },
      );
    }
    return parseManifest(text, path);
  }

  async function take(params: VmSnapshotParams, options: OpOptions): Promise<SnapshotRecord> {
    const name = params.snapshot ?? defaultSnapshotName(params.name, deps.now());
    const staged = await snapshots.stage();
    try {
      const saved = await deps.vms.save(params.name, staged.dir, {
        ...options,
        includeSecrets: params.includeSecrets === true,
      });
      const { vm, ...rest } = saved;
      const manifest: SnapshotManifest = {
        format: SNAPSHOT_FORMAT,
        id: staged.id,
        name,
        createdAt: deps.now().toISOString(),
        ...rest,
      };
      await deps.fs.writeFileAtomic(
        join(staged.dir, SnapshotFiles.manifest),
        `${JSON.stringify(manifest, null, 2)}\n`,
        { mode: 0o600 },
      );
      options.progress({ step: "snapshot.publish", message: `publishing snapshot ${name}` });
      return await snapshots.publish(staged.dir, {
        id: staged.id,
        name,
        sourceVm: vm.name,
        imageId: vm.imageId,
        imageName: vm.imageName,
        vmm: manifest.driver,
        cpus: manifest.machine.cpus,
        memoryMib: manifest.machine.memoryMib,
        diskGib: vm.diskGib,
        includesSecrets: manifest.includesSecrets,
        createdAt: manifest.createdAt,
      });
    } catch (error) {
      await snapshots.discard(staged.dir);
      throw error;
    }
  }

  async function createFrom(params: CreateVmParams & { from: string }, options: OpOptions): Promise<VmInfo> {
    const record = snapshots.byName(params.from);
    const manifest = await readManifest(record);
    if (params.image !== undefined && params.image !== record.imageName) {
      throw new BangerError(
        ErrorCode.SNAPSHOT_MISMATCH,
        `snapshot '${record.name}' holds image ${record.imageName}, not ${params.image}`,
      );
    }
    if (params.diskGib !== undefined && params.diskGib * GIB < manifest.disk.sizeBytes) {
      throw new BangerError(
        ErrorCode.SNAPSHOT_MISMATCH,
        `snapshot '${record.name}' has a ${manifest.disk.sizeBytes / GIB} GiB disk; a clone's disk cannot be smaller`,
        { hint: "omit --disk with --from, or ask for at least that size" },
      );
    }
    const { from: _from, ...rest } = params;
    return deps.vms.create(rest, options, { snapshotId: record.id, dir: record.dir, manifest });
  }

  return {
    async take(params, options) {
      return info(await take(params, options));
    },

    async list() {
      return Promise.all(snapshots.list().map(info));
    },

    async show(name) {
      return info(snapshots.byName(name));
    },

    delete: (name) => snapshots.delete(name),

    createFrom,

    async fork(params, options) {
      const count = params.count ?? 1;
      const names = forkNames(params.newName, count);
      // Names first: a fork that cannot name its clones takes no snapshot.
      for (const name of names) {
        validateVmName(name);
        if (deps.store.getVmByName(name)) {
          throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${name}' already exists`);
        }
      }
      const record = await take(
        {
          name: params.name,
          snapshot: `fork-${params.newName}`,
          ...(params.includeSecrets === undefined ? {} : { includeSecrets: params.includeSecrets }),
        },
        options,
      );
      const outcomes = await Promise.allSettled(
        names.map((name) => createFrom({ name, from: record.name }, options)),
      );
      const made = outcomes.flatMap((outcome) => (outcome.status === "fulfilled" ? [outcome.value] : []));
      const failure = outcomes.find((outcome) => outcome.status === "rejected");
      if (failure) {
        // All or nothing: the clones that were made go, then the snapshot they shared.
        for (const vm of made) {
          await deps.vms
            .delete(vm.name)
            .catch((error: unknown) =>
              deps.logger.error("could not remove a fork clone", { vm: vm.name, err: errorMessage(error) }),
            );
        }
        await snapshots.delete(record.name).catch((error: unknown) =>
          deps.logger.error("could not remove a fork's snapshot", {
            snapshot: record.name,
            err: errorMessage(error),
          }),
        );
        throw failure.reason;
      }
      return { snapshot: await info(record), vms: made };
    },
  };
}
