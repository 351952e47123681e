/** `banger image list` and `banger image show NAME`. */
import type { ImageInfo } from "../../../protocol/index.ts";
import { formatAge, formatBytes, formatTable } from "../../render/table.ts";
import { type CommandSpec, JSON_OPTION, json, success } from "../../spec.ts";

interface JsonArgs {
  json?: boolean;
}

const usedBy = (image: ImageInfo, separator: string) =>
  image.usedBy && image.usedBy.length > 0 ? image.usedBy.join(separator) : "-";

export const imageListSpec: CommandSpec<JsonArgs & { catalog?: boolean }> = {
  name: "list",
  aliases: ["ls"],
  describe: "list images (--catalog: the images banger can build)",
  examples: ["banger image ls", "banger image ls --catalog", "banger image ls --json | jq -r '.[].name'"],
  options: [{ flags: "--catalog", description: "list the built-in catalog instead" }, JSON_OPTION],
  async handler(ctx, args) {
    const client = await ctx.client();
    if (args.catalog) {
      const { entries } = await client.call("image.catalog", {});
      if (args.json) return success(json(entries));
      return success(
        formatTable(
          ["name", "kind", "default", "present", "description"],
          entries.map((e) => [
            e.name,
            e.kind,
            e.default ? "yes" : "-",
            e.present ? "yes" : "no",
            e.description,
          ]),
        ),
      );
    }
    const { images } = await client.call("image.list", {});
    if (args.json) return success(json(images));
    return success(
      formatTable(
        ["name", "id", "kind", "source", "digest", "size", "created", "used by"],
        images.map((i) => [
          i.name,
          i.id.slice(0, 12),
          i.kind,
          i.source ?? "-",
          i.digest ? i.digest.slice(0, 19) : "-",
          formatBytes(i.sizeBytes),
          formatAge(i.createdAt),
          usedBy(i, ","),
        ]),
      ),
    );
  },
};

export const imageShowSpec: CommandSpec<JsonArgs & { name: string }> = {
  name: "show <name>",
  describe: "show one image",
  examples: ["banger image show debian-bookworm", "banger image show alpine:latest --json"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const info = await (await ctx.client()).call("image.show", { name: args.name });
    if (args.json) return success(json(info));
    const defaults = info.runDefaults;
    return success(
      formatTable(
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
          ["used by", usedBy(info, ", ")],
          ...(defaults
            ? [
                ["entrypoint", JSON.stringify(defaults.entrypoint)],
                ["cmd", JSON.stringify(defaults.cmd)],
                ["env", defaults.env.join(" ") || "-"],
                ["workdir", defaults.workdir ?? "-"],
                ["user", defaults.user ?? "-"],
              ]
            : []),
        ],
      ),
    );
  },
};
