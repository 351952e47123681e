/**
 * RPC handlers of the `image.*` methods: the image store (list, show,
 * delete, build-default) and OCI images (pull, import, prune, login,
 * logout). `image delete --force` also deletes the stopped VMs that use
 * the image, naming them; a running one still refuses.
 */
import { catalogEntries } from "../core/image/index.ts";
import { BangerError, ErrorCode, type ImageInfo } from "../protocol/index.ts";
import type { ImageRecord, Store } from "../sys/store/index.ts";
import type { DockerfileBuilds } from "./image/dockerfile.ts";
import type { ImageService } from "./image/index.ts";
import { type OciImages, ociMetaOf } from "./image/oci.ts";
import type { Promote } from "./image/promote.ts";
import type { HandlerContext, HandlerTable } from "./rpc/server.ts";
import type { VmService } from "./vm/index.ts";

export interface ImageHandlerDeps {
  images: ImageService;
  oci: OciImages;
  dockerfiles: DockerfileBuilds;
  promote: Promote;
  vms: Pick<VmService, "delete">;
  store: Pick<Store, "listVms">;
  /** vm.default_image, marked in the catalog listing. */
  defaultImage: string;
}

const ACTIVE = new Set(["starting", "running", "paused", "stopping"]);

export function buildImageHandlers(deps: ImageHandlerDeps): HandlerTable {
  const { images, oci, dockerfiles, promote, vms, store } = deps;
  const op = (ctx: HandlerContext) => ({ signal: ctx.signal, progress: ctx.progress });
  const users = (image: ImageRecord) => store.listVms().filter((vm) => vm.imageId === image.id);
  const info = (image: ImageRecord): ImageInfo => {
    const meta = ociMetaOf(image);
    const { meta: _meta, ...row } = image;
    return {
      ...row,
      usedBy: users(image).map((vm) => vm.name),
      ...(meta
        ? {
            platform: meta.platform,
            runDefaults: {
              entrypoint: meta.runDefaults.entrypoint,
              cmd: meta.runDefaults.cmd,
              env: meta.runDefaults.env,
              ...(meta.runDefaults.workdir ? { workdir: meta.runDefaults.workdir } : {}),
              ...(meta.runDefaults.user ? { user: meta.runDefaults.user } : {}),
            },
          }
        : {}),
    };
  };
  return {
    "image.list": () => ({ images: images.list().map(info) }),
    "image.show": (params) => info(images.get(params.name)),
    "image.build-default": async (params, ctx) =>
      info(await images.buildDefault({ force: params?.force === true, ...op(ctx) })),
    "image.delete": async (params) => {
      const image = images.get(params.name);
      const using = users(image);
      const deleted: string[] = [];
      if (using.length > 0) {
        const running = using.filter((vm) => ACTIVE.has(vm.state)).map((vm) => vm.name);
        if (!params.force || running.length > 0) {
          throw new BangerError(
            ErrorCode.BAD_STATE,
            `image '${image.name}' is used by ${using.map((vm) => `${vm.name} (${vm.state})`).join(", ")}`,
            {
              hint:
                running.length > 0
                  ? `stop ${running.join(", ")} first; then --force also deletes the stopped VMs`
                  : "--force deletes those stopped VMs with the image",
            },
          );
        }
        for (const vm of using) {
          await vms.delete(vm.name);
          deleted.push(vm.name);
        }
      }
      await images.delete(image.name);
      return {
        name: image.name,
        deleted: true as const,
        ...(deleted.length > 0 ? { vmsDeleted: deleted } : {}),
      };
    },
    "image.pull": async (params, ctx) => info(await oci.pull(params, op(ctx))),
    "image.import": async (params, ctx) => info(await oci.import(params, op(ctx))),
    "image.build": async (params, ctx) => info(await dockerfiles.build(params, op(ctx))),
    "image.promote": async (params, ctx) =>
      info(await promote(params.vm, params.name, { signal: ctx.signal })),
    "image.register": async (params) => info(await oci.register(params)),
    "image.catalog": () => ({
      entries: catalogEntries().map((entry) => ({
        name: entry.name,
        kind: entry.kind,
        description: entry.description,
        default: entry.name === deps.defaultImage,
        present: images.list().some((image) => image.name === entry.name),
      })),
    }),
    "image.prune": async (params) => {
      // --all: every image no VM uses goes first, so its blobs go with the blob prune.
      const removed: string[] = [];
      if (params?.all) {
        for (const image of images.list()) {
          if (users(image).length > 0) continue;
          try {
            await images.delete(image.name);
            removed.push(image.name);
          } catch (error) {
            // A VM that started using it meanwhile keeps it.
            if (!(error instanceof BangerError) || error.code !== ErrorCode.BAD_STATE) throw error;
          }
        }
      }
      return { images: removed, ...(await oci.prune()) };
    },
    "image.login": async (params) => {
      await oci.login(params.registry, { username: params.username, password: params.password });
      return { registry: params.registry };
    },
    "image.logout": async (params) => ({
      registry: params.registry,
      removed: await oci.logout(params.registry),
    }),
  };
}
