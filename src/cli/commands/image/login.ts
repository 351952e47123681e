/** `banger image login REGISTRY` and `banger image logout REGISTRY`: banger's own registry credentials. */
import { BangerError, ErrorCode } from "../../../protocol/index.ts";
import { type CommandSpec, success } from "../../spec.ts";

interface LoginArgs {
  registry: string;
  username?: string;
  password?: string;
  passwordStdin?: boolean;
}

export const loginSpec: CommandSpec<LoginArgs> = {
  name: "login <registry>",
  describe: "store credentials for a registry in banger's own 0600 file",
  examples: ['echo "$TOKEN" | banger image login ghcr.io -u me --password-stdin'],
  options: [
    { flags: "-u, --username <user>", description: "user name" },
    { flags: "-p, --password <password>", description: "password (prefer --password-stdin)" },
    { flags: "--password-stdin", description: "read the password from stdin" },
  ],
  async handler(ctx, args) {
    const password = args.passwordStdin ? (await readAll(ctx.stdin)).replace(/\r?\n$/, "") : args.password;
    if (!args.username || !password) {
      throw new BangerError(ErrorCode.INVALID_PARAMS, "image login needs --username and a password", {
        hint: "pass -u USER and --password-stdin (or -p PASSWORD)",
      });
    }
    await (await ctx.client()).call("image.login", {
      registry: args.registry,
      username: args.username,
      password,
    });
    return success(`Login Succeeded (${args.registry})`);
  },
};

export const logoutSpec: CommandSpec<{ registry: string }> = {
  name: "logout <registry>",
  describe: "remove banger's stored credentials for a registry",
  examples: ["banger image logout ghcr.io"],
  async handler(ctx, args) {
    const result = await (await ctx.client()).call("image.logout", { registry: args.registry });
    return success(
      result.removed ? `Removed login credentials for ${args.registry}` : `Not logged in to ${args.registry}`,
    );
  },
};

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}
