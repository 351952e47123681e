/**
 * `banger vm auth sync NAME`, and the same sync after every start the CLI
 * asks for: the CLI user's public keys, git identity and configured files
 * (config `[auth]`, read by the daemon; the files themselves read here, as
 * this user) go to the guest. Contents are never printed.
 */
import { glob, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { BangerError, ErrorCode, type ResultOf } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { type CommandSpec, type GroupSpec, JSON_OPTION, json, success } from "../../spec.ts";
import { runProgram } from "../../workspace/host.ts";

const syncSpec: CommandSpec<{ name: string; json?: boolean }> = {
  name: "sync <name>",
  describe: "copy your public keys, git identity and the [auth] files into a running VM",
  examples: ["banger vm auth sync box", "banger vm auth sync box --json   # names synced, never contents"],
  notes:
    'Config (config.toml):\n  [auth]\n  authorized_keys = ["~/.ssh/*.pub"]   # then: ssh root@<vm ip> with your own key\n  git_identity = true                  # user.name and user.email from your git config\n  files = [{ host = "~/.config/gh/hosts.yml" }, { host = "~/.netrc", guest = "/root/.netrc" }]\n\nIt also runs after every vm create, start, restart and run, where it leaves alone a guest that\nalready holds exactly this material (recorded at its last sync, or inherited from its snapshot).\nThis command always writes.',
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const result = await syncAuth(await ctx.client(), args.name);
    if (args.json) return success(json(result));
    const files = result.files.length > 0 ? `: ${result.files.join(", ")}` : "";
    return success(
      `${args.name}: ${result.keys} key(s), git identity ${result.gitIdentity ? "set" : "not set"}, ${result.files.length} file(s)${files}`,
    );
  },
};

export const authGroup: GroupSpec = {
  name: "auth",
  describe: "your keys, git identity and auth files in a VM",
  commands: [syncSpec],
};

/**
 * Reads this user's auth material per the daemon's `[auth]` config and
 * sends it; with `ifChanged`, a guest that already holds exactly this
 * material is left alone.
 */
async function syncAuth(
  client: DaemonClient,
  name: string,
  options: { ifChanged?: boolean } = {},
): Promise<ResultOf<"vm.auth.sync">> {
  const config = await client.call("vm.auth.config", {});
  const keys: string[] = [];
  for (const pattern of config.authorizedKeys) {
    for await (const file of glob(expandHome(pattern))) {
      const text = await readFile(file, "utf8").catch(() => "");
      for (const line of text.split("\n")) {
        const trimmed = line.trim();
        if (trimmed !== "" && !trimmed.startsWith("#")) keys.push(trimmed);
      }
    }
  }
  const files = [];
  for (const file of config.files) {
    const path = expandHome(file.host);
    const data = await readFile(path).catch((error: NodeJS.ErrnoException) => {
      throw new BangerError(
        ErrorCode.INVALID_PARAMS,
        `[auth] files: cannot read ${path}: ${error.code ?? error.message}`,
        {
          hint: "fix or remove the entry in config.toml's [auth] files",
        },
      );
    });
    files.push({ guest: file.guest, data: data.toString("base64") });
  }
  return client.call("vm.auth.sync", {
    name,
    authorizedKeys: keys,
    gitIdentity: config.gitIdentity ? await gitIdentity() : null,
    files,
    ...(options.ifChanged ? { ifChanged: true } : {}),
  });
}

/** After a start: sync, and on failure only warn (the VM is up; the user can retry). */
export async function syncAuthAfterStart(
  ctx: Pick<CliContext, "stderr">,
  client: DaemonClient,
  name: string,
): Promise<void> {
  try {
    await syncAuth(client, name, { ifChanged: true });
  } catch (error) {
    ctx.stderr.write(`banger: warning: auth sync for '${name}' failed: ${(error as Error).message}\n`);
  }
}

async function gitIdentity(): Promise<{ name: string; email: string } | null> {
  const get = async (key: string) => {
    const result = await runProgram(["git", "config", "--get", key], { cwd: homedir() }).catch(
      () => undefined,
    );
    return result?.code === 0 ? result.stdout.toString("utf8").trim() : "";
  };
  const [name, email] = [await get("user.name"), await get("user.email")];
  return name || email ? { name, email } : null;
}

function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return join(homedir(), path.slice(2));
  return isAbsolute(path) ? path : join(homedir(), path);
}
