/**
 * `image build -t NAME [-f Dockerfile] [--build-arg K=V] CONTEXT`: buildah
 * builds the Dockerfile in a storage directory of its own inside a staging
 * directory (chroot isolation, vfs), pushes the result to an OCI layout
 * there, and the image import publishes it like any imported image. Under
 * BANGER_NETNS buildah runs in the host's network namespace, so FROM pulls
 * and RUN steps have the network the daemon's host has. `.dockerignore` is
 * buildah's to honour. The staging directory is removed in every case.
 */
import { basename, isAbsolute, join } from "node:path";
import type { Logger } from "../../core/log/index.ts";
import {
  BUILD_REGISTRIES_CONF,
  fromReferences,
  isLoopbackRegistry,
  parseReference,
  planDockerfileBuild,
} from "../../core/oci/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { BangerError, ErrorCode, type ProgressEvent } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { ImageRecord } from "../../sys/store/index.ts";
import type { OciImages } from "./oci.ts";

export interface DockerfileBuildRequest {
  name: string;
  context: string;
  /** Relative to the context, or absolute; CONTEXT/Dockerfile when undefined. */
  dockerfile?: string | undefined;
  buildArgs?: readonly string[] | undefined;
}

export interface DockerfileBuildsDeps {
  layout: Layout;
  runner: Runner;
  fs: Pick<Fs, "mkdir" | "rm" | "stat" | "readFile" | "writeFileAtomic">;
  logger: Logger;
  newId(): string;
  oci: Pick<OciImages, "import">;
  /** Argv prefix into the host's network namespace (BANGER_NETNS). */
  launcher?: readonly string[] | undefined;
}

export function createDockerfileBuilds(deps: DockerfileBuildsDeps) {
  const log = deps.logger.child({ service: "image-dockerfile" });
  return {
    async build(
      request: DockerfileBuildRequest,
      options: {
        signal?: AbortSignal | undefined;
        progress?: ((event: ProgressEvent) => void) | undefined;
      } = {},
    ): Promise<ImageRecord> {
      const context = await deps.fs.stat(request.context);
      if (!context?.isDirectory) {
        throw new BangerError(
          ErrorCode.INVALID_PARAMS,
          `build context ${request.context} is not a directory`,
          {
            hint: "give the directory the Dockerfile's COPY and ADD read from, e.g. `banger image build -t app .`",
          },
        );
      }
      // The CLI sends -f as an absolute path (docker reads it from the current directory); a relative one is the context's.
      const dockerfile =
        request.dockerfile === undefined
          ? join(request.context, "Dockerfile")
          : isAbsolute(request.dockerfile)
            ? request.dockerfile
            : join(request.context, request.dockerfile);
      const text = await deps.fs.readFile(dockerfile).catch(() => {
        throw new BangerError(ErrorCode.INVALID_PARAMS, `no Dockerfile at ${dockerfile}`, {
          hint: "pass -f PATH, or put a Dockerfile in the context",
        });
      });
      const insecure = fromReferences(text.toString()).some((ref) => {
        try {
          return isLoopbackRegistry(parseReference(ref).registry);
        } catch {
          return false;
        }
      });
      const staging = join(deps.layout.imageStagingDir, `dockerfile-${deps.newId()}`);
      await deps.fs.mkdir(staging);
      try {
        const registriesConf = join(staging, "registries.conf");
        await deps.fs.writeFileAtomic(registriesConf, BUILD_REGISTRIES_CONF);
        const layout = join(staging, "layout");
        const steps = planDockerfileBuild({
          storage: join(staging, "storage"),
          runroot: join(staging, "run"),
          context: request.context,
          dockerfile: request.dockerfile === undefined ? undefined : dockerfile,
          buildArgs: request.buildArgs ?? [],
          layout,
          insecure,
          registriesConf,
        });
        for (const step of steps) {
          options.progress?.({ step: `image.dockerfile.${step.id}`, message: step.message, status: "start" });
          const argv = step.id === "build" && deps.launcher ? [...deps.launcher, ...step.argv] : step.argv;
          try {
            await deps.runner.run(argv, { signal: options.signal, cwd: request.context });
          } catch (error) {
            const stderr = (error as { result?: { stderr?: string; stdout?: string } }).result;
            const tail = `${stderr?.stdout ?? ""}\n${stderr?.stderr ?? ""}`
              .trim()
              .split("\n")
              .slice(-6)
              .join("\n");
            throw new BangerError(
              ErrorCode.IMAGE_BUILD_FAILED,
              `image build of '${request.name}' failed at ${step.id}: ${tail || String(error)}`,
              {
                hint: "the lines above are buildah's; fix the Dockerfile and build again",
              },
            );
          }
          options.progress?.({ step: `image.dockerfile.${step.id}`, message: step.message, status: "done" });
        }
        const image = await deps.oci.import(
          { path: layout, tag: "latest", name: request.name, source: `dockerfile:${request.context}` },
          options,
        );
        log.info("image built from a Dockerfile", { image: image.name, context: basename(request.context) });
        return image;
      } finally {
        await deps.fs.rm(staging);
      }
    },
  };
}

export type DockerfileBuilds = ReturnType<typeof createDockerfileBuilds>;
