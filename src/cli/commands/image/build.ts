/**
 * Commands that make or remove images with the daemon's progress on stderr
 * (each step with the time it took) and Ctrl-C as cancel: build-default,
 * pull, import, delete, prune.
 */
import { resolve } from "node:path";
import type { CliContext } from "../../context.ts";
import { createProgressRenderer, type ProgressLine } from "../../render/progress.ts";
import { formatBytes } from "../../render/table.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

/** Runs a call with a progress renderer on stderr; an interrupt cancels it. */
async function withProgress<T>(
  ctx: CliContext,
  run: (
    client: DaemonClient,
    call: { signal: AbortSignal; onProgress: (event: ProgressLine) => void },
  ) => Promise<T>,
): Promise<T> {
  const progress = createProgressRenderer(ctx.stderr, false);
  try {
    return await run(await ctx.client(), { signal: ctx.interrupted(), onProgress: progress.onProgress });
  } finally {
    progress.finish();
  }
}

export const buildDefaultSpec: CommandSpec<{ force?: boolean }> = {
  name: "build-default",
  describe: "build the default Debian image from Debian packages (vm create does this on first use)",
  examples: ["banger image build-default", "banger image build-default --force"],
  notes:
    "Builds vm.default_image when it is a catalog image (`banger image ls --catalog`), else debian-bookworm.\n" +
    "Each step is shown with the time it took; Ctrl-C stops the build and removes its partial files.",
  options: [{ flags: "--force", description: "rebuild even if it exists (only when no VM uses it)" }],
  async handler(ctx, args) {
    const built = await withProgress(ctx, (client, call) =>
      client.call("image.build-default", { force: args.force === true }, call),
    );
    return success(`${built.name} ${built.id}`);
  },
};

interface PullArgs {
  reference: string;
  platform?: string;
  name?: string;
  insecureRegistry?: string[];
  json?: boolean;
}

export const pullSpec: CommandSpec<PullArgs> = {
  name: "pull <reference>",
  describe:
    "pull an image from an OCI registry (docker's references: alpine, debian:12, host:port/repo:tag, @sha256:...)",
  examples: [
    "banger image pull alpine",
    "banger image pull --platform linux/arm64 debian:bookworm",
    "banger image pull 127.0.0.1:5000/team/app:v1",
  ],
  notes: "Credentials come from `banger image login` or docker's ~/.docker/config.json.",
  options: [
    {
      flags: "--platform <os/arch>",
      description: "the platform to pull from a multi-platform image (default: this host's)",
    },
    { flags: "--name <name>", description: "store it under this name instead of the reference" },
    {
      flags: "--insecure-registry <host>",
      description: "speak plain HTTP to this registry (loopback ones always are)",
      repeatable: true,
    },
    JSON_OPTION,
  ],
  async handler(ctx, args) {
    const insecure = args.insecureRegistry ?? [];
    const pulled = await withProgress(ctx, (client, call) =>
      client.call(
        "image.pull",
        {
          reference: args.reference,
          ...(args.platform ? { platform: args.platform } : {}),
          ...(args.name ? { name: args.name } : {}),
          ...(insecure.length > 0 ? { insecureRegistries: insecure } : {}),
        },
        call,
      ),
    );
    return success(args.json ? json(pulled) : `${pulled.name} ${pulled.digest ?? ""}`);
  },
};

interface ImportArgs {
  file: string;
  name?: string;
  tag?: string;
  platform?: string;
  json?: boolean;
}

export const importSpec: CommandSpec<ImportArgs> = {
  name: "import <file>",
  describe: "import `docker save` output (either format), an OCI layout directory, or a tar of one",
  examples: [
    "docker save app:v1 -o app.tar && banger image import app.tar --name app",
    "banger image import ./oci-layout --tag v1",
  ],
  options: [
    {
      flags: "--name <name>",
      description: "store it under this name (default: the name the archive gives, else import-ID)",
    },
    { flags: "--tag <tag>", description: "the image to take from an OCI layout that holds several" },
    { flags: "--platform <os/arch>", description: "the platform to take from a multi-platform layout" },
    JSON_OPTION,
  ],
  async handler(ctx, args) {
    const imported = await withProgress(ctx, (client, call) =>
      client.call(
        "image.import",
        {
          path: resolve(args.file),
          ...(args.name ? { name: args.name } : {}),
          ...(args.tag ? { tag: args.tag } : {}),
          ...(args.platform ? { platform: args.platform } : {}),
        },
        call,
      ),
    );
    return success(args.json ? json(imported) : `${imported.name} ${imported.digest ?? ""}`);
  },
};

export const imageDeleteSpec: CommandSpec<{ name: string; force?: boolean }> = {
  name: "delete <name>",
  aliases: ["rm"],
  describe: "delete an image no VM uses",
  examples: ["banger image rm alpine:latest", "banger image rm --force debian-bookworm"],
  options: [
    {
      flags: "-f, --force",
      description: "also delete the stopped VMs that use it (running ones still refuse)",
    },
  ],
  async handler(ctx, args) {
    const result = await (await ctx.client()).call("image.delete", {
      name: args.name,
      force: args.force === true,
    });
    if (result.vmsDeleted) ctx.stderr.write(`deleted VMs: ${result.vmsDeleted.join(", ")}\n`);
    return success(args.name);
  },
};

export const imagePruneSpec: CommandSpec<{ all?: boolean; json?: boolean }> = {
  name: "prune",
  describe: "remove cached layer blobs that no image uses (--all: also every image no VM uses)",
  examples: ["banger image prune", "banger image prune --all"],
  options: [{ flags: "-a, --all", description: "also delete every image no VM uses" }, JSON_OPTION],
  async handler(ctx, args) {
    const pruned = await (await ctx.client()).call("image.prune", { all: args.all === true });
    if (args.json) return success(json(pruned));
    const lines = pruned.images.map((name) => `deleted ${name}`);
    lines.push(`removed ${pruned.blobs} blobs, ${formatBytes(pruned.bytes)}`);
    return success(lines.join("\n"));
  },
};

interface DockerfileArgs {
  context: string;
  tag: string;
  file?: string;
  buildArg?: string[];
  json?: boolean;
}

export const dockerfileBuildSpec: CommandSpec<DockerfileArgs> = {
  name: "build <context>",
  describe: "build an image from a Dockerfile with buildah (chroot isolation); FROM names a registry image",
  examples: [
    "banger image build -t app .",
    "banger image build -t app -f docker/Dockerfile --build-arg VERSION=1.2 .",
  ],
  notes: "Each step is shown with the time it took.",
  options: [
    { flags: "-t, --tag <name>", description: "the image's name", required: true },
    { flags: "-f, --file <dockerfile>", description: "the Dockerfile (default: CONTEXT/Dockerfile)" },
    { flags: "--build-arg <key=value>", description: "a build argument (repeatable)", repeatable: true },
    JSON_OPTION,
  ],
  async handler(ctx, args) {
    const buildArgs = args.buildArg ?? [];
    const built = await withProgress(ctx, (client, call) =>
      client.call(
        "image.build",
        {
          name: args.tag,
          context: resolve(args.context),
          ...(args.file ? { dockerfile: resolve(args.file) } : {}),
          ...(buildArgs.length > 0 ? { buildArgs } : {}),
        },
        call,
      ),
    );
    return success(args.json ? json(built) : `${built.name} ${built.digest ?? ""}`);
  },
};

export const promoteSpec: CommandSpec<{ vm: string; name: string; json?: boolean }> = {
  name: "promote <vm> <name>",
  describe: "make a stopped VM's disk a new image (its host keys, authorized key and machine id removed)",
  examples: [
    "banger vm stop dev && banger image promote dev golden",
    "banger vm run --image golden -- make test",
  ],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const promoted = await withProgress(ctx, (client, call) =>
      client.call("image.promote", { vm: args.vm, name: args.name }, call),
    );
    return success(args.json ? json(promoted) : `${promoted.name} ${promoted.id}`);
  },
};

interface RegisterArgs {
  name: string;
  rootfs: string;
  kernel: string;
  initrd?: string;
  json?: boolean;
}

export const registerSpec: CommandSpec<RegisterArgs> = {
  name: "register <name>",
  describe: "add a root filesystem, kernel and initrd made elsewhere (copied into the store)",
  examples: ["banger image register mine --rootfs rootfs.ext4 --kernel vmlinuz --initrd initrd.gz"],
  options: [
    { flags: "--rootfs <file>", description: "ext4 root filesystem image", required: true },
    { flags: "--kernel <file>", description: "guest kernel (bzImage)", required: true },
    { flags: "--initrd <file>", description: "initramfs" },
    JSON_OPTION,
  ],
  async handler(ctx, args) {
    const registered = await (await ctx.client()).call("image.register", {
      name: args.name,
      rootfs: resolve(args.rootfs),
      kernel: resolve(args.kernel),
      ...(args.initrd ? { initrd: resolve(args.initrd) } : {}),
    });
    return success(args.json ? json(registered) : `${registered.name} ${registered.id}`);
  },
};
