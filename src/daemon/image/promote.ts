/**
 * `image promote VM NAME`: a stopped VM's root disk becomes a new image
 * (kind `promoted`, the VM's kernel and initrd beside it; a VM of an OCI
 * image has none, so the new image boots like that one and keeps its run
 * defaults), with banger's
 * per-VM material removed (`core/image/promote.ts`). The copy runs
 * unlocked in a staging directory; the VM's row is read again afterwards
 * and a VM that was started meanwhile fails the promote. Published with
 * the shared publication atom.
 */

import { join } from "node:path";
import { ROOT_DISK_FILES } from "../../core/disk/index.ts";
import { planPromote } from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { type Layout, vmPaths } from "../../core/paths/index.ts";
import { AUTH_FILES_JSON, parseAuthRecord } from "../../core/workspace/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import type { createPublisher } from "./publish.ts";

export interface PromoteDeps {
  store: Pick<Store, "getVmByName" | "getImageById" | "getImageByName">;
  layout: Layout;
  runner: Runner;
  fs: Pick<Fs, "mkdir" | "rm" | "stat" | "writeFileAtomic">;
  logger: Logger;
  newId(): string;
  now(): Date;
  copyFile(from: string, to: string): Promise<void>;
  /** Reads a small file of the VM's directory (the auth-files list); absent means nothing to add. */
  readFile?: (path: string) => Promise<string>;
  publish: ReturnType<typeof createPublisher>;
}

const PROMOTABLE = new Set(["stopped", "created", "error"]);

export function createPromoter(deps: PromoteDeps) {
  const log = deps.logger.child({ service: "image-promote" });
  return async function promote(
    vmName: string,
    name: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<ImageRecord> {
    const vm = deps.store.getVmByName(vmName);
    if (!vm) throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${vmName}'`);
    if (!PROMOTABLE.has(vm.state)) {
      throw new BangerError(
        ErrorCode.BAD_STATE,
        `VM '${vm.name}' is ${vm.state}; only a stopped VM can be promoted`,
        {
          hint: `stop it first: banger vm stop ${vm.name}`,
        },
      );
    }
    if (deps.store.getImageByName(name)) {
      throw new BangerError(ErrorCode.NAME_TAKEN, `an image named '${name}' exists`, {
        hint: "pick another name, or delete that image first",
      });
    }
    const image = deps.store.getImageById(vm.imageId);
    if (!image) {
      throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' has no image to take its kernel from`);
    }
    // An OCI image's VM has no kernel of its own: the promoted image boots like it and keeps its run defaults.
    const kernelless = image.kernel === "";
    const vmDir = vmPaths(deps.layout, vm.id).dir;
    const overlay = join(vmDir, ROOT_DISK_FILES["qcow2-overlay"].file);
    const rawDisk = join(vmDir, ROOT_DISK_FILES["sparse-copy"].file);
    const source = (await deps.fs.stat(overlay))
      ? ({ kind: "qcow2", path: overlay } as const)
      : (await deps.fs.stat(rawDisk))
        ? ({ kind: "raw", path: rawDisk } as const)
        : undefined;
    if (!source) {
      throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' has no qcow2 or raw root disk to promote`, {
        hint: "device-mapper snapshot disks cannot be promoted yet",
      });
    }
    const id = deps.newId();
    const staging = join(deps.layout.imageStagingDir, `promote-${id}`);
    await deps.fs.mkdir(staging);
    try {
      const rootfs = join(staging, "rootfs.ext4");
      const script = join(staging, "scrub.debugfs");
      const plan = planPromote(source, rootfs, script, await authFilesOf(deps, vmDir));
      await deps.runner.run(plan.flatten, { signal: options.signal });
      await deps.fs.writeFileAtomic(script, plan.scrubScript);
      await deps.runner.run(plan.scrubArgv, { signal: options.signal });
      const fsck = await deps.runner.run(plan.fsck, { signal: options.signal, allowFailure: true });
      if (fsck.code !== 0 && fsck.code !== 1) {
        throw new BangerError(
          ErrorCode.IMAGE_BUILD_FAILED,
          `the promoted filesystem does not check clean: ${fsck.stdout.trim().split("\n").slice(-3).join(" ")}`,
        );
      }
      await deps.fs.rm(script);
      if (!kernelless) await deps.copyFile(image.kernel, join(staging, "vmlinuz"));
      if (image.initrd) await deps.copyFile(image.initrd, join(staging, "initrd.gz"));
      const after = deps.store.getVmByName(vmName);
      if (!after || after.id !== vm.id || after.updatedAt !== vm.updatedAt) {
        throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' changed while it was being promoted`, {
          hint: "keep it stopped and promote again",
        });
      }
      const dir = join(deps.layout.imagesDir, id);
      const record: ImageRecord = {
        id,
        name,
        kind: "promoted",
        dir,
        kernel: kernelless ? "" : join(dir, "vmlinuz"),
        initrd: image.initrd ? join(dir, "initrd.gz") : null,
        rootfs: join(dir, "rootfs.ext4"),
        sizeBytes: (await deps.fs.stat(rootfs))?.size ?? 0,
        createdAt: deps.now().toISOString(),
        source: `vm:${vm.name}`,
        ...(kernelless && image.meta ? { meta: image.meta } : {}),
      };
      const published = await deps.publish(record, staging, undefined);
      log.info("VM promoted to an image", { vm: vm.name, image: name });
      return published;
    } finally {
      await deps.fs.rm(staging);
    }
  };
}

export type Promote = ReturnType<typeof createPromoter>;

/** The guest paths `vm auth sync` wrote for this VM (vms/<id>/auth-files.json), to scrub from the image. */
async function authFilesOf(deps: PromoteDeps, vmDir: string): Promise<string[]> {
  const text = await deps.readFile?.(join(vmDir, AUTH_FILES_JSON)).catch(() => undefined);
  if (text === undefined) return [];
  return parseAuthRecord(text)?.paths ?? [];
}
