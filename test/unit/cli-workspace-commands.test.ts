/**
 * The workspace, copy and auth commands, and what they change in delete,
 * start and proxy, run in-process against a fake daemon client (with a real
 * git repository and the real tar where the CLI uses them on the host).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { tarArchive } from "../../src/core/workspace/index.ts";
import { BangerError, ErrorCode, exitStatusFor, type WorkspaceInfo } from "../../src/protocol/index.ts";
import { FakeDaemonClient, fakeCli, fakeVmInfo } from "../fakes/cli.ts";

const scratch = mkdtempSync(join(tmpdir(), "bgt-cliws-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const tick = () => new Promise((resolve) => setImmediate(resolve));
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await tick();
}

const HEAD = "a".repeat(40);

function workspaceInfo(overrides: Partial<WorkspaceInfo> = {}): WorkspaceInfo {
  return {
    vm: "box",
    path: "/root/work/app",
    baseCommit: HEAD,
    branch: "main",
    readonly: false,
    includeUntracked: true,
    hostRepo: {
      path: join(scratch, "app"),
      head: HEAD,
      branch: "main",
      dirtyFiles: 2,
      untrackedFiles: 1,
      submodules: [],
      lfsFiles: 0,
      worktree: false,
      alternates: false,
      depth: null,
    },
    preparedAt: "2026-11-30T20:00:00.000Z",
    exported: null,
    ...overrides,
  };
}

/** The names in a tar archive, as the system tar lists them. */
/** A tar holding one regular file (the head of a copy out's stream). */
function tarOf(name: string, text: string): Buffer {
  return Buffer.from(tarArchive([{ name, data: new TextEncoder().encode(text), mode: 0o644 }]));
}

function tarNames(archive: Buffer): string[] {
  return execFileSync("tar", ["-t"], { input: archive, encoding: "utf8" }).trim().split("\n");
}

const noAuth = {
  "vm.auth.config": () => ({ authorizedKeys: [], gitIdentity: false, files: [] }),
  "vm.auth.sync": (params: { name: string }) => ({
    name: params.name,
    keys: 0,
    files: [],
    gitIdentity: false,
  }),
};

describe("vm workspace", () => {
  it("show prints the workspace as a table, and as JSON with --json", async () => {
    const client = new FakeDaemonClient({ "vm.workspace.show": () => workspaceInfo() });
    const table = fakeCli({ client });
    assert.equal(await table.run(["vm", "workspace", "show", "box"]), 0);
    assert.match(table.stdout(), /path\s+\/root\/work\/app\n/);
    assert.match(table.stdout(), /changes\s+2 dirty, 1 untracked \(copied\)\n/);
    assert.match(table.stdout(), /exported\s+never\n/);
    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["vm", "workspace", "show", "box", "--json"]), 0);
    assert.deepEqual(JSON.parse(asJson.stdout()), workspaceInfo());
  });

  it("prepare inspects the repository as the user, streams its payload as a tar, and prints the workspace", async () => {
    const repo = join(scratch, "app");
    mkdirSync(repo);
    const git = (...args: string[]) =>
      execFileSync("git", ["-C", repo, "-c", "user.name=t", "-c", "user.email=t@e", ...args], {
        encoding: "utf8",
      }).trim();
    git("init", "-q", "-b", "main");
    writeFileSync(join(repo, "a.txt"), "one\n");
    git("add", "a.txt");
    git("commit", "-q", "-m", "one");
    writeFileSync(join(repo, "a.txt"), "two\n");
    writeFileSync(join(repo, "new.txt"), "new\n");
    const head = git("rev-parse", "HEAD");
    const client = new FakeDaemonClient({
      "vm.workspace.prepare": async (params, call) => {
        await until(() => call.ended.has("stdin"));
        return workspaceInfo({ path: params.path, baseCommit: params.repo.head });
      },
    });
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "workspace", "prepare", "box", "--repo", repo, "--include-untracked"]),
      0,
    );
    const [call] = client.callsOf("vm.workspace.prepare");
    const params = call!.params as { path: string; includeUntracked: boolean; repo: { head: string } };
    assert.equal(params.path, "/root/work/app");
    assert.equal(params.includeUntracked, true);
    assert.equal(params.repo.head, head);
    const names = tarNames(Buffer.concat(call!.written.stdin ?? []));
    assert.ok(names.length > 1, `the payload holds the repository's parts: ${names.join(", ")}`);
    assert.match(cli.stdout(), new RegExp(`base commit\\s+${head}`));
  });

  it("export refuses an unknown --format before asking the daemon", async () => {
    const client = new FakeDaemonClient({});
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "workspace", "export", "box", "--format", "zip"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(cli.stderr(), /--format must be patch, bundle or branch, not 'zip'/);
    assert.equal(client.calls.length, 0);
  });

  it("export as patches writes the daemon's patches and confirms the export with its head and tree", async () => {
    const tree = "b".repeat(40);
    const archive = Buffer.from(
      tarArchive([
        {
          name: "meta",
          data: new TextEncoder().encode(
            `head ${HEAD}\ntree ${tree}\ntip ${"c".repeat(40)}\ncommits 1\ndirty 1\n`,
          ),
          mode: 0o644,
        },
        { name: "patches/0001-guest.patch", data: new TextEncoder().encode("From x\n"), mode: 0o644 },
        { name: "uncommitted.patch", data: new TextEncoder().encode("diff\n"), mode: 0o644 },
      ]),
    );
    const client = new FakeDaemonClient({
      "vm.workspace.show": () => workspaceInfo(),
      "vm.workspace.export": (_params, call) => {
        call.options.onStream?.("stdout", archive);
        call.options.onStream?.("stdout", null);
        return { bytes: archive.length, fromDisk: false };
      },
      "vm.workspace.exported": () => workspaceInfo(),
    });
    const output = join(scratch, "out.patches");
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "workspace", "export", "box", "-o", output, "--json"]), 0);
    assert.deepEqual(readdirSync(output).sort(), ["0001-guest.patch", "uncommitted.patch"]);
    assert.equal(readFileSync(join(output, "0001-guest.patch"), "utf8"), "From x\n");
    const result = JSON.parse(cli.stdout()) as { commits: number; uncommitted: boolean; output: string };
    assert.deepEqual([result.commits, result.uncommitted, result.output], [1, true, output]);
    assert.deepEqual(client.callsOf("vm.workspace.exported")[0]!.params, { name: "box", head: HEAD, tree });

    const again = fakeCli({ client });
    assert.equal(
      await again.run(["vm", "workspace", "export", "box", "--output", output]),
      exitStatusFor[ErrorCode.NAME_TAKEN],
    );
    assert.match(again.stderr(), /already exists\nhint: pass --output PATH for another place, or --force/);
  });
});

describe("vm cp", () => {
  it("needs exactly one side to name a VM", async () => {
    const client = new FakeDaemonClient({});
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "cp", "./a", "./b"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(cli.stderr(), /exactly one of SRC and DST must be NAME:PATH\nhint: /);
    assert.equal(client.calls.length, 0);
  });

  it("- sends the tar on stdin into the VM, and writes the VM's tar to stdout", async () => {
    const client = new FakeDaemonClient({
      "vm.cp.in": async (params, call) => {
        await until(() => call.ended.has("stdin"));
        return { path: params.path };
      },
      "vm.cp.out": (_params, call) => {
        call.options.onStream?.("stdout", Buffer.from("tar bytes"));
        return { bytes: 9 };
      },
    });
    const upload = fakeCli({ client });
    const status = upload.run(["vm", "cp", "-", "box:in"]);
    upload.stdin.end("tar on stdin");
    assert.equal(await status, 0);
    const [into] = client.callsOf("vm.cp.in");
    assert.deepEqual(into!.params, {
      name: "box",
      path: "/root/in",
      source: "contents",
      base: ".",
      archive: false,
    });
    assert.equal(Buffer.concat(into!.written.stdin ?? []).toString(), "tar on stdin");

    const download = fakeCli({ client });
    assert.equal(await download.run(["vm", "cp", "box:/etc", "-"]), 0);
    assert.equal(download.stdout(), "tar bytes");
  });

  it("copies a local directory in as a tar of that directory", async () => {
    const dir = join(scratch, "data");
    mkdirSync(dir);
    writeFileSync(join(dir, "f.txt"), "x");
    const client = new FakeDaemonClient({
      "vm.cp.in": async (params, call) => {
        await until(() => call.ended.has("stdin"));
        return { path: params.path };
      },
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "cp", "-a", dir, "box:/srv"]), 0);
    const [call] = client.callsOf("vm.cp.in");
    assert.deepEqual(call!.params, { name: "box", path: "/srv", source: "dir", base: "data", archive: true });
    assert.deepEqual(tarNames(Buffer.concat(call!.written.stdin ?? [])).sort(), ["data/", "data/f.txt"]);
  });
});

describe("vm cp and Ctrl-C", () => {
  it("cancels a copy out in the daemon, removes what it had written here, and exits 130", async () => {
    const into = join(scratch, "cp-cancel");
    mkdirSync(into);
    const client = new FakeDaemonClient({
      "vm.cp.out": async (_params, call) => {
        await call.options.onStream?.("stdout", tarOf("big.bin", "partial"));
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "cancelled");
      },
    });
    const cli = fakeCli({ client });
    const running = cli.run(["vm", "cp", "box:/root/big.bin", join(into, "out.bin")]);
    while (client.callsOf("vm.cp.out").length === 0) await new Promise((resolve) => setImmediate(resolve));
    cli.signal("SIGINT");
    assert.equal(await running, exitStatusFor[ErrorCode.CANCELLED]);
    assert.equal(client.callsOf("vm.cp.out")[0]!.cancelled, true, "the daemon was told to cancel");
    assert.match(cli.stderr(), /copy cancelled/);
    assert.deepEqual(readdirSync(into), [], "no partial file and no scratch directory are left");
  });

  it("a cancelled copy in says that what reached the VM stays there", async () => {
    const client = new FakeDaemonClient({
      "vm.cp.in": async (_params, call) => {
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "cancelled");
      },
    });
    const cli = fakeCli({ client });
    const running = cli.run(["vm", "cp", "-", "box:/srv/in"]);
    while (client.callsOf("vm.cp.in").length === 0) await new Promise((resolve) => setImmediate(resolve));
    cli.signal("SIGINT");
    assert.equal(await running, exitStatusFor[ErrorCode.CANCELLED]);
    assert.match(
      cli.stderr(),
      /copy cancelled\nhint: what reached box:\/srv\/in stays there; copy again to replace it/,
    );
  });
});

describe("vm auth sync", () => {
  it("sends the keys the [auth] patterns find and the files' bytes, and prints names only", async () => {
    const keys = join(scratch, "keys");
    mkdirSync(keys);
    writeFileSync(join(keys, "a.pub"), "ssh-ed25519 AAAA a@host\n# comment\n\n");
    writeFileSync(join(keys, "b.pub"), "ssh-ed25519 BBBB b@host\n");
    writeFileSync(join(scratch, "netrc"), "machine x password SECRET\n");
    const client = new FakeDaemonClient({
      "vm.auth.config": () => ({
        authorizedKeys: [join(keys, "*.pub")],
        gitIdentity: false,
        files: [{ host: join(scratch, "netrc"), guest: "/root/.netrc" }],
      }),
      "vm.auth.sync": (params) => ({
        name: params.name,
        keys: params.authorizedKeys.length,
        files: params.files.map((file) => file.guest),
        gitIdentity: params.gitIdentity !== null,
      }),
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "auth", "sync", "box"]), 0);
    assert.equal(cli.stdout(), "box: 2 key(s), git identity not set, 1 file(s): /root/.netrc\n");
    const params = client.callsOf("vm.auth.sync")[0]!.params as {
      authorizedKeys: string[];
      files: { data: string }[];
    };
    assert.deepEqual(params.authorizedKeys.sort(), ["ssh-ed25519 AAAA a@host", "ssh-ed25519 BBBB b@host"]);
    assert.equal(Buffer.from(params.files[0]!.data, "base64").toString(), "machine x password SECRET\n");
    assert.doesNotMatch(cli.stdout() + cli.stderr(), /SECRET/);

    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["vm", "auth", "sync", "box", "--json"]), 0);
    assert.deepEqual(JSON.parse(asJson.stdout()), {
      name: "box",
      keys: 2,
      files: ["/root/.netrc"],
      gitIdentity: false,
    });
  });

  it("an unreadable [auth] file is refused by name, with a hint", async () => {
    const client = new FakeDaemonClient({
      "vm.auth.config": () => ({
        authorizedKeys: [],
        gitIdentity: false,
        files: [{ host: join(scratch, "missing"), guest: "/root/x" }],
      }),
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "auth", "sync", "box"]), exitStatusFor[ErrorCode.INVALID_PARAMS]);
    assert.match(
      cli.stderr(),
      /\[auth\] files: cannot read .*missing: ENOENT\nhint: fix or remove the entry/,
    );
    assert.equal(client.callsOf("vm.auth.sync").length, 0);
  });

  it("runs after vm start and restart; a failed sync only warns", async () => {
    const client = new FakeDaemonClient({
      ...noAuth,
      "vm.start": (params) => fakeVmInfo({ name: params.name }),
      "vm.restart": (params) => fakeVmInfo({ name: params.name }),
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "start", "web"]), 0);
    assert.equal(await fakeCli({ client }).run(["vm", "restart", "db"]), 0);
    assert.deepEqual(
      client.callsOf("vm.auth.sync").map((call) => (call.params as { name: string }).name),
      ["web", "db"],
    );

    const failing = new FakeDaemonClient({
      "vm.start": (params) => fakeVmInfo({ name: params.name }),
      "vm.auth.config": () => {
        throw new BangerError(ErrorCode.INTERNAL, "config unreadable");
      },
    });
    const warned = fakeCli({ client: failing });
    assert.equal(await warned.run(["vm", "start", "web"]), 0);
    assert.equal(warned.stdout(), "web\n");
    assert.match(warned.stderr(), /warning: auth sync for 'web' failed: config unreadable/);
  });
});

describe("vm delete with unexported work", () => {
  const refusing = (state: "running" | "stopped") =>
    new FakeDaemonClient({
      "vm.show": (params) => fakeVmInfo({ name: params.name, state }),
      "vm.delete": (params) => {
        if (!params.force)
          throw new BangerError(
            ErrorCode.UNEXPORTED_WORK,
            `VM '${params.name}' holds 2 commit(s) not exported`,
          );
        return { name: params.name, deleted: true };
      },
    });

  it("without a terminal the daemon's refusal stands", async () => {
    const client = refusing("stopped");
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "delete", "box"]), exitStatusFor[ErrorCode.UNEXPORTED_WORK]);
    assert.match(cli.stderr(), /2 commit\(s\) not exported\nhint: export it first/);
    assert.deepEqual(
      client.callsOf("vm.delete").map((call) => call.params),
      [{ name: "box", force: false }],
    );
  });

  it("on a terminal asks, saying a running VM will be killed, and deletes with force on yes only", async () => {
    for (const [state, answer, deletes] of [
      ["running", "y\n", 2],
      ["stopped", "n\n", 1],
    ] as const) {
      const client = refusing(state);
      const cli = fakeCli({ client, stdinTty: true });
      const status = cli.run(["vm", "delete", "box"]);
      await until(() => cli.stderr().includes("[y/N]"));
      cli.stdin.write(answer);
      assert.equal(await status, answer === "y\n" ? 0 : exitStatusFor[ErrorCode.UNEXPORTED_WORK]);
      const killed = state === "running" ? " \\(it is running; it will be killed\\)" : "";
      assert.match(cli.stderr(), new RegExp(`delete 'box'${killed} and lose that work\\? \\[y/N\\] `));
      assert.equal(client.callsOf("vm.delete").length, deletes);
      if (deletes === 2)
        assert.deepEqual(client.callsOf("vm.delete")[1]!.params, { name: "box", force: true });
    }
  });
});

describe("vm proxy", () => {
  it("reads stdin only as fast as the daemon's socket takes it, then ends the channel", async () => {
    let release: () => void = () => {};
    const taken: Promise<void>[] = [];
    const client = new FakeDaemonClient(
      {
        "vm.proxy": async (_params, call) => {
          await until(() => call.ended.has("tcp"));
          return { closed: true as const };
        },
      },
      {
        socketTakes: () => {
          const next = new Promise<void>((resolve) => {
            release = resolve;
          });
          taken.push(next);
          return next;
        },
      },
    );
    const cli = fakeCli({ client });
    const status = cli.run(["vm", "proxy", "web", "22"]);
    cli.stdin.write("one");
    cli.stdin.write("two");
    await until(() => client.callsOf("vm.proxy")[0]?.written.tcp?.length === 1);
    for (let i = 0; i < 20; i++) await tick();
    const call = client.callsOf("vm.proxy")[0]!;
    assert.equal(call.written.tcp?.length, 1, "the second chunk waits until the socket took the first");
    release();
    await until(() => call.written.tcp?.length === 2);
    release();
    cli.stdin.end();
    assert.equal(await status, 0);
    assert.equal(Buffer.concat(call.written.tcp ?? []).toString(), "onetwo");
  });
});

describe("the new commands in the tree", () => {
  it("have --help with examples, and complete in bash under their groups", async () => {
    for (const argv of [
      ["vm", "cp"],
      ["vm", "workspace", "prepare"],
      ["vm", "workspace", "export"],
      ["vm", "auth", "sync"],
    ]) {
      const cli = fakeCli({ client: new FakeDaemonClient({}) });
      assert.equal(await cli.run([...argv, "--help"]), 0);
      assert.match(cli.stdout(), /\nExamples:\n {2}banger /, argv.join(" "));
    }
    const cli = fakeCli({ client: new FakeDaemonClient({}) });
    assert.equal(await cli.run(["completion", "bash"]), 0);
    const complete = (words: string[]) =>
      spawnSync(
        "bash",
        [
          "--norc",
          "--noprofile",
          "-c",
          `source <(printf '%s' "$SCRIPT"); banger() { printf 'box\\n'; }; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _banger; printf '%s\\n' "\${COMPREPLY[@]}"`,
        ],
        { env: { PATH: process.env.PATH, SCRIPT: cli.stdout() }, encoding: "utf8" },
      )
        .stdout.trim()
        .split("\n");
    assert.deepEqual(complete(["banger", "vm", "workspace", "e"]), ["export"]);
    assert.deepEqual(complete(["banger", "vm", "workspace", "export", "--form"]), ["--format"]);
    assert.deepEqual(complete(["banger", "vm", "workspace", "show", "b"]), ["box"]);
    assert.deepEqual(complete(["banger", "vm", "au"]), ["auth"]);
  });
});
