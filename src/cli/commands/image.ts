/**
 * `banger image ...`: list, show, build-default, delete, pull, import,
 * prune, login, logout.
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { BangerError, ErrorCode, type ProgressParams } from "../../protocol/index.ts";
import { type CliContext, printJson } from "../context.ts";
import { createProgressRenderer } from "../render/progress.ts";
import { formatAge, formatBytes, formatTable } from "../render/table.ts";
import type { RpcClient } from "../rpc/client.ts";

export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command("image").description("manage the images VMs boot from");

  image
    .command("list")
    .alias("ls")
    .description("list images (--catalog: the images banger can build)")
    .option("--catalog", "list the built-in catalog instead")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger image ls\n  banger image ls --catalog")
    .action(async (options: { json?: boolean; catalog?: boolean }) => {
      if (options.catalog) {
        const { entries } = await (await ctx.client()).call("image.catalog", {});
        if (options.json) printJson(ctx, entries);
        else
          ctx.stdout.write(
            `${formatTable(
              ["name", "kind", "present", "description"],
              entries.map((e) => [e.name, e.kind, e.present ? "yes" : "no", e.description]),
            )}\n`,
          );
        return;
      }
      const { images } = await (await ctx.client()).call("image.list", {});
      if (options.json) printJson(ctx, images);
      else
        ctx.stdout.write(
          `${formatTable(
            ["name", "id", "kind", "source", "digest", "size", "created", "used by"],
            images.map((i) => [
              i.name,
              i.id.slice(0, 12),
              i.kind,
              i.source ?? "-",
              i.digest ? i.digest.slice(0, 19) : "-",
              formatBytes(i.sizeBytes),
              formatAge(i.createdAt),
              i.usedBy && i.usedBy.length > 0 ? i.usedBy.join(",") : "-",
            ]),
          )}\n`,
        );
    });

  image
    .command("show <name>")
    .description("show one image")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger image show debian-bookworm --json")
    .action(async (name: string, options: { json?: boolean }) => {
      const info = await (await ctx.client()).call("image.show", { name });
      if (options.json) printJson(ctx, info);
      else
        ctx.stdout.write(
          `${formatTable(
            ["field", "value"],
            [
              ["name", info.name],
              ["id", info.id],
              ["kind", info.kind],
              ["dir", info.dir],
              ["kernel", info.kernel || "-"],
              ["initrd", info.initrd ?? "-"],
              ["rootfs", info.rootfs],
              ["size", formatBytes(info.sizeBytes)],
              ["created", info.createdAt],
              ["source", info.source ?? "-"],
              ["digest", info.digest ?? "-"],
              ["platform", info.platform ?? "-"],
              ["used by", info.usedBy && info.usedBy.length > 0 ? info.usedBy.join(", ") : "-"],
              ...(info.runDefaults
                ? [
                    ["entrypoint", JSON.stringify(info.runDefaults.entrypoint)],
                    ["cmd", JSON.stringify(info.runDefaults.cmd)],
                    ["env", info.runDefaults.env.join(" ") || "-"],
                    ["workdir", info.runDefaults.workdir ?? "-"],
                    ["user", info.runDefaults.user ?? "-"],
                  ]
                : []),
            ],
          )}\n`,
        );
    });

  image
    .command("build-default")
    .description("build the default Debian image from Debian packages (vm create does this on first use)")
    .option("--force", "rebuild even if it exists (only when no VM uses it)")
    .addHelpText("after", "\nExamples:\n  banger image build-default\n  banger image build-default --force")
    .action(async (options: { force?: boolean }) => {
      const progress = createProgressRenderer(ctx.stderr, false);
      const controller = new AbortController();
      process.once("SIGINT", () => controller.abort());
      const built = await (await ctx.client()).call(
        "image.build-default",
        { force: options.force === true },
        {
          signal: controller.signal,
          onProgress: (event) => progress.onProgress(event),
        },
      );
      progress.finish();
      ctx.stdout.write(`${built.name} ${built.id}\n`);
    });

  image
    .command("delete <name>")
    .alias("rm")
    .description("delete an image no VM uses")
    .option("-f, --force", "also delete the stopped VMs that use it (running ones still refuse)")
    .addHelpText(
      "after",
      "\nExamples:\n  banger image rm alpine:latest\n  banger image rm --force debian-bookworm",
    )
    .action(async (name: string, options: { force?: boolean }) => {
      const result = await (await ctx.client()).call("image.delete", { name, force: options.force === true });
      if (result.vmsDeleted) ctx.stderr.write(`deleted VMs: ${result.vmsDeleted.join(", ")}\n`);
      ctx.stdout.write(`${name}\n`);
    });

  image
    .command("pull <reference>")
    .description(
      "pull an image from an OCI registry (docker's references: alpine, debian:12, host:port/repo:tag, @sha256:...)",
    )
    .option("--platform <os/arch>", "the platform to pull from a multi-platform image (default: this host's)")
    .option("--name <name>", "store it under this name instead of the reference")
    .option(
      "--insecure-registry <host>",
      "speak plain HTTP to this registry (loopback ones always are)",
      collect,
      [],
    )
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nCredentials come from `banger image login` or docker's ~/.docker/config.json.\n\nExamples:\n  banger image pull alpine\n  banger image pull --platform linux/arm64 debian:bookworm\n  banger image pull 127.0.0.1:5000/team/app:v1",
    )
    .action(
      async (
        reference: string,
        options: { platform?: string; name?: string; insecureRegistry: string[]; json?: boolean },
      ) => {
        const pulled = await withProgress(ctx, (client, call) =>
          client.call(
            "image.pull",
            {
              reference,
              ...(options.platform ? { platform: options.platform } : {}),
              ...(options.name ? { name: options.name } : {}),
              ...(options.insecureRegistry.length > 0
                ? { insecureRegistries: options.insecureRegistry }
                : {}),
            },
            call,
          ),
        );
        if (options.json) printJson(ctx, pulled);
        else ctx.stdout.write(`${pulled.name} ${pulled.digest ?? ""}\n`);
      },
    );

  image
    .command("import <file>")
    .description("import `docker save` output (either format), an OCI layout directory, or a tar of one")
    .option("--name <name>", "store it under this name (default: the name the archive gives, else import-ID)")
    .option("--tag <tag>", "the image to take from an OCI layout that holds several")
    .option("--platform <os/arch>", "the platform to take from a multi-platform layout")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  docker save app:v1 -o app.tar && banger image import app.tar --name app\n  banger image import ./oci-layout --tag v1",
    )
    .action(
      async (file: string, options: { name?: string; tag?: string; platform?: string; json?: boolean }) => {
        const imported = await withProgress(ctx, (client, call) =>
          client.call(
            "image.import",
            {
              path: resolve(file),
              ...(options.name ? { name: options.name } : {}),
              ...(options.tag ? { tag: options.tag } : {}),
              ...(options.platform ? { platform: options.platform } : {}),
            },
            call,
          ),
        );
        if (options.json) printJson(ctx, imported);
        else ctx.stdout.write(`${imported.name} ${imported.digest ?? ""}\n`);
      },
    );

  image
    .command("build <context>")
    .description(
      "build an image from a Dockerfile with buildah (chroot isolation); FROM names a registry image",
    )
    .requiredOption("-t, --tag <name>", "the image's name")
    .option("-f, --file <dockerfile>", "the Dockerfile (default: CONTEXT/Dockerfile)")
    .option("--build-arg <key=value>", "a build argument (repeatable)", collect, [])
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger image build -t app .\n  banger image build -t app -f docker/Dockerfile --build-arg VERSION=1.2 .",
    )
    .action(
      async (
        context: string,
        options: { tag: string; file?: string; buildArg: string[]; json?: boolean },
      ) => {
        const built = await withProgress(ctx, (client, call) =>
          client.call(
            "image.build",
            {
              name: options.tag,
              context: resolve(context),
              ...(options.file ? { dockerfile: resolve(options.file) } : {}),
              ...(options.buildArg.length > 0 ? { buildArgs: options.buildArg } : {}),
            },
            call,
          ),
        );
        if (options.json) printJson(ctx, built);
        else ctx.stdout.write(`${built.name} ${built.digest ?? ""}\n`);
      },
    );

  image
    .command("promote <vm> <name>")
    .description(
      "make a stopped VM's disk a new image (its host keys, authorized key and machine id removed)",
    )
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm stop dev && banger image promote dev golden\n  banger vm run --image golden -- make test",
    )
    .action(async (vm: string, name: string, options: { json?: boolean }) => {
      const promoted = await withProgress(ctx, (client, call) =>
        client.call("image.promote", { vm, name }, call),
      );
      if (options.json) printJson(ctx, promoted);
      else ctx.stdout.write(`${promoted.name} ${promoted.id}\n`);
    });

  image
    .command("register <name>")
    .description("add a root filesystem, kernel and initrd made elsewhere (copied into the store)")
    .requiredOption("--rootfs <file>", "ext4 root filesystem image")
    .requiredOption("--kernel <file>", "guest kernel (bzImage)")
    .option("--initrd <file>", "initramfs")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger image register mine --rootfs rootfs.ext4 --kernel vmlinuz --initrd initrd.gz",
    )
    .action(
      async (name: string, options: { rootfs: string; kernel: string; initrd?: string; json?: boolean }) => {
        const registered = await (await ctx.client()).call("image.register", {
          name,
          rootfs: resolve(options.rootfs),
          kernel: resolve(options.kernel),
          ...(options.initrd ? { initrd: resolve(options.initrd) } : {}),
        });
        if (options.json) printJson(ctx, registered);
        else ctx.stdout.write(`${registered.name} ${registered.id}\n`);
      },
    );

  image
    .command("prune")
    .description("remove cached layer blobs that no image uses (--all: also every image no VM uses)")
    .option("-a, --all", "also delete every image no VM uses")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger image prune\n  banger image prune --all")
    .action(async (options: { json?: boolean; all?: boolean }) => {
      const pruned = await (await ctx.client()).call("image.prune", { all: options.all === true });
      if (options.json) printJson(ctx, pruned);
      else
        ctx.stdout.write(
          `${pruned.images.map((name) => `deleted ${name}\n`).join("")}removed ${pruned.blobs} blobs, ${formatBytes(pruned.bytes)}\n`,
        );
    });

  image
    .command("login <registry>")
    .description("store credentials for a registry in banger's own 0600 file")
    .option("-u, --username <user>", "user name")
    .option("-p, --password <password>", "password (prefer --password-stdin)")
    .option("--password-stdin", "read the password from stdin")
    .addHelpText("after", '\nExamples:\n  echo "$TOKEN" | banger image login ghcr.io -u me --password-stdin')
    .action(
      async (
        registry: string,
        options: { username?: string; password?: string; passwordStdin?: boolean },
      ) => {
        const password = options.passwordStdin
          ? (await readAll(process.stdin)).replace(/\r?\n$/, "")
          : options.password;
        if (!options.username || !password) {
          throw new BangerError(ErrorCode.INVALID_PARAMS, "image login needs --username and a password", {
            hint: "pass -u USER and --password-stdin (or -p PASSWORD)",
          });
        }
        await (await ctx.client()).call("image.login", { registry, username: options.username, password });
        ctx.stdout.write(`Login Succeeded (${registry})\n`);
      },
    );

  image
    .command("logout <registry>")
    .description("remove banger's stored credentials for a registry")
    .addHelpText("after", "\nExamples:\n  banger image logout ghcr.io")
    .action(async (registry: string) => {
      const result = await (await ctx.client()).call("image.logout", { registry });
      ctx.stdout.write(
        result.removed ? `Removed login credentials for ${registry}\n` : `Not logged in to ${registry}\n`,
      );
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/** Runs a call with a progress renderer on stderr and Ctrl-C as cancel. */
async function withProgress<T>(
  ctx: CliContext,
  run: (
    client: RpcClient,
    call: { signal: AbortSignal; onProgress: (event: ProgressParams) => void },
  ) => Promise<T>,
): Promise<T> {
  const progress = createProgressRenderer(ctx.stderr, false);
  const controller = new AbortController();
  const onSigint = (): void => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    return await run(await ctx.client(), {
      signal: controller.signal,
      onProgress: (event) => progress.onProgress(event),
    });
  } finally {
    process.off("SIGINT", onSigint);
    progress.finish();
  }
}
