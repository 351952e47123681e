/**
 * `banger image ...`: list, show, build-default, delete.
 */
import type { Command } from "commander";
import { type CliContext, printJson } from "../context.ts";
import { createProgressRenderer } from "../render/progress.ts";
import { formatAge, formatBytes, formatTable } from "../render/table.ts";

export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command("image").description("manage the images VMs boot from");

  image
    .command("list")
    .alias("ls")
    .description("list images")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger image ls")
    .action(async (options: { json?: boolean }) => {
      const { images } = await (await ctx.client()).call("image.list", {});
      if (options.json) printJson(ctx, images);
      else
        ctx.stdout.write(
          `${formatTable(
            ["name", "id", "kind", "size", "created"],
            images.map((i) => [
              i.name,
              i.id.slice(0, 12),
              i.kind,
              formatBytes(i.sizeBytes),
              formatAge(i.createdAt),
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
              ["kernel", info.kernel],
              ["initrd", info.initrd ?? "-"],
              ["rootfs", info.rootfs],
              ["size", formatBytes(info.sizeBytes)],
              ["created", info.createdAt],
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
    .addHelpText("after", "\nExamples:\n  banger image rm debian-bookworm")
    .action(async (name: string) => {
      await (await ctx.client()).call("image.delete", { name });
      ctx.stdout.write(`${name}\n`);
    });
}
