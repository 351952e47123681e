/** `banger vm create NAME`: create a VM from an image and boot it. */
import type { CliContext } from "../../context.ts";
import { type CommandSpec, json, success } from "../../spec.ts";
import { createWithProgress } from "./create-flow.ts";
import { type SizingFlags, sizingOptions, sizingParams } from "./sizing.ts";

interface CreateArgs extends SizingFlags {
  name: string;
  start: boolean;
  json?: boolean;
}

export const createSpec: CommandSpec<CreateArgs> = {
  name: "create <name>",
  describe: "create a VM from an image and boot it",
  examples: [
    "banger vm create web",
    "banger vm create web2 --from warm",
    "banger vm create build --cpus 2 --memory 2g --disk 10g",
    "banger vm create idle --no-start",
    "banger vm create web --publish 8080:80 --publish 0.0.0.0:5353:53/udp",
    "banger vm create builder --egress '*.debian.org,registry.npmjs.org'",
  ],
  options: [
    ...sizingOptions,
    { flags: "--no-start", description: "create it stopped" },
    { flags: "--json", description: "print the VM as JSON" },
  ],
  async handler(ctx: CliContext, args) {
    const created = await createWithProgress(ctx, await ctx.client(), {
      ...sizingParams(args),
      name: args.name,
      start: args.start,
    });
    return success(args.json ? json(created) : created.name);
  },
};
