/**
 * `image build` through buildah, planned as argv: a build with chroot
 * isolation and the vfs storage driver in a storage directory of its own
 * (no daemon, no overlay mounts), then a push of the result to an OCI
 * layout that the image import reads. Pure.
 */

export interface DockerfileBuild {
  /** buildah's storage root and run root (inside the build's staging directory). */
  storage: string;
  runroot: string;
  context: string;
  /** The Dockerfile; buildah's default (CONTEXT/Dockerfile or Containerfile) when undefined. */
  dockerfile: string | undefined;
  buildArgs: readonly string[];
  /** Where the built image is written as an OCI layout (tag `latest`). */
  layout: string;
  /** Registries FROM may pull from over plain HTTP. */
  insecure: boolean;
  /** registries.conf for the build: unqualified names resolve on docker.io, as docker does. */
  registriesConf: string;
}

/** registries.conf with docker's rule for short names. */
export const BUILD_REGISTRIES_CONF =
  'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n';

const TAG = "localhost/banger-build:latest";

function buildah(build: DockerfileBuild): string[] {
  return [
    "buildah",
    "--root",
    build.storage,
    "--runroot",
    build.runroot,
    "--storage-driver",
    "vfs",
    "--registries-conf",
    build.registriesConf,
  ];
}

export function planDockerfileBuild(
  build: DockerfileBuild,
): { id: "build" | "export"; message: string; argv: string[] }[] {
  const args = build.buildArgs.flatMap((arg) => ["--build-arg", arg]);
  return [
    {
      id: "build",
      message: "building the Dockerfile (buildah, chroot isolation)",
      argv: [
        ...buildah(build),
        "bud",
        "--isolation",
        "chroot",
        "--layers=false",
        ...(build.insecure ? ["--tls-verify=false"] : []),
        ...(build.dockerfile === undefined ? [] : ["--file", build.dockerfile]),
        ...args,
        "--tag",
        TAG,
        build.context,
      ],
    },
    {
      id: "export",
      message: "exporting the built image",
      argv: [...buildah(build), "push", TAG, `oci:${build.layout}:latest`],
    },
  ];
}

/** The image references of a Dockerfile's FROM lines (stage names and `scratch` left out). */
export function fromReferences(dockerfile: string): string[] {
  const stages = new Set<string>();
  const refs: string[] = [];
  for (const line of dockerfile.replace(/\\\r?\n/g, " ").split(/\r?\n/)) {
    const match = /^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (!match) continue;
    const ref = match[1] as string;
    if (ref !== "scratch" && !stages.has(ref.toLowerCase())) refs.push(ref);
    if (match[2]) stages.add(match[2].toLowerCase());
  }
  return refs;
}
