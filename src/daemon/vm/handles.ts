/**
 * Each VM's handles.json and the in-memory cache of it. The file is the
 * truth a new daemon reads at reconcile; the cache saves a read on every
 * liveness check. Every write goes to both, file after cache.
 */
import { type Layout, vmPaths } from "../../core/paths/index.ts";
import { emptyHandles, type VmHandles, type VmRecord } from "../../core/vm/index.ts";
import type { VmmHandle } from "../../core/vmm/contract.ts";
import type { VmFiles } from "./platform.ts";

export class HandleStore {
  readonly #cache = new Map<string, VmHandles>();
  readonly #files: VmFiles;
  readonly #layout: Layout;

  constructor(options: { files: VmFiles; layout: Layout }) {
    this.#files = options.files;
    this.#layout = options.layout;
  }

  /** The cached handles of a VM, without touching the file. */
  cached(vmId: string): VmHandles | undefined {
    return this.#cache.get(vmId);
  }

  /** Cached handles, else the file's, else empty ones. */
  async load(vm: VmRecord): Promise<VmHandles> {
    return this.#cache.get(vm.id) ?? (await this.read(vm)) ?? emptyHandles();
  }

  /** The file's handles, bypassing the cache (reconcile trusts only the file). */
  read(vm: VmRecord): Promise<VmHandles | undefined> {
    return this.#files.readHandles(this.#file(vm));
  }

  async save(vm: VmRecord, handles: VmHandles): Promise<void> {
    this.#cache.set(vm.id, handles);
    await this.#files.writeHandles(this.#file(vm), handles);
  }

  async clear(vm: VmRecord): Promise<void> {
    this.#cache.delete(vm.id);
    await this.#files.removeFile(this.#file(vm));
  }

  /** Caches handles a previous daemon wrote, for a VM kept at reconcile. */
  adopt(vm: VmRecord, handles: VmHandles): void {
    this.#cache.set(vm.id, handles);
  }

  /** Drops the cache entry of a VM whose directory (and file) is being removed. */
  forget(vmId: string): void {
    this.#cache.delete(vmId);
  }

  /** What a driver needs to find the VMM again, when the handles hold one. */
  vmmHandle(handles: VmHandles): VmmHandle | undefined {
    return handles.pid !== null && handles.controlSocket !== null
      ? { pid: handles.pid, pidStartTicks: handles.pidStartTicks ?? 0, controlSocket: handles.controlSocket }
      : undefined;
  }

  #file(vm: VmRecord): string {
    return vmPaths(this.#layout, vm.id).handles;
  }
}
