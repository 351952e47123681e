/** `banger image ...`: list, show, build-default, delete. */
import { createProgressRenderer } from "../../render/progress.ts";
import { formatAge, formatBytes, formatTable } from "../../render/table.ts";
import { type CommandSpec, type GroupSpec, json, success } from "../../spec.ts";

interface JsonArgs {
  json?: boolean;
}

interface NameArgs extends JsonArgs {
  name: string;
}

const listSpec: CommandSpec<JsonArgs> = {
  name: "list",
  aliases: ["ls"],
  describe: "list images",
  examples: ["banger image ls"],
  options: [{ flags: "--json", description: "print JSON" }],
  async handler(ctx, args) {
    const { images } = await (await ctx.client()).call("image.list", {});
    if (args.json) return success(json(images));
    return success(
      formatTable(
        ["name", "id", "kind", "size", "created"],
        images.map((i) => [
          i.name,
          i.id.slice(0, 12),
          i.kind,
          formatBytes(i.sizeBytes),
          formatAge(i.createdAt),
        ]),
      ),
    );
  },
};

const showSpec: CommandSpec<NameArgs> = {
  name: "show <name>",
  describe: "show one image",
  examples: ["banger image show debian-bookworm --json"],
  options: [{ flags: "--json", description: "print JSON" }],
  async handler(ctx, args) {
    const info = await (await ctx.client()).call("image.show", { name: args.name });
    if (args.json) return success(json(info));
    return success(
      formatTable(
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
      ),
    );
  },
};

const buildSpec: CommandSpec<{ force?: boolean }> = {
  name: "build-default",
  describe: "build the default Debian image from Debian packages (vm create does this on first use)",
  examples: ["banger image build-default", "banger image build-default --force"],
  notes: "Each step is shown with the time it took; Ctrl-C stops the build and removes its partial files.",
  options: [{ flags: "--force", description: "rebuild even if it exists (only when no VM uses it)" }],
  async handler(ctx, args) {
    const progress = createProgressRenderer(ctx.stderr, false);
    try {
      const built = await (await ctx.client()).call(
        "image.build-default",
        { force: args.force === true },
        { signal: ctx.interrupted(), onProgress: (event) => progress.onProgress(event) },
      );
      return success(`${built.name} ${built.id}`);
    } finally {
      progress.finish();
    }
  },
};

const deleteSpec: CommandSpec<NameArgs> = {
  name: "delete <name>",
  aliases: ["rm"],
  describe: "delete an image no VM uses",
  examples: ["banger image rm debian-bookworm"],
  async handler(ctx, args) {
    await (await ctx.client()).call("image.delete", { name: args.name });
    return success(args.name);
  },
};

export const imageGroup: GroupSpec = {
  name: "image",
  describe: "manage the images VMs boot from",
  commands: [listSpec, showSpec, buildSpec, deleteSpec],
};
