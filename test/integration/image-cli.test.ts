/**
 * The image commands end to end through the CLI and a daemon kept in its
 * own network namespace, against registries on the host's 127.0.0.1 (the
 * pull worker runs in the host's namespace): pull, ls, show, import of
 * both `docker save` formats and an OCI layout, login to an htpasswd
 * registry, auto-pull by `vm create`, delete and prune. The root
 * filesystems are read back with debugfs.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { gzipSync } from "node:zlib";
import { bangerBin, daemonPid } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv } from "../helpers/e2e.ts";
import {
  makeFixture,
  makeTar,
  pushRaw,
  pushToRegistry,
  rawImage,
  startRegistry,
  TEST_USER,
  type TestRegistry,
} from "../helpers/registry.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const skip = process.getuid?.() !== 0 ? "needs root (network namespaces)" : undefined;
const tmp = makeTempDir("bgt-icli-");
const fixture = join(tmp.path, "fixture");
let registry: TestRegistry;
let secured: TestRegistry;
let env: E2eEnv;

interface ImageJson {
  name: string;
  kind: string;
  source: string;
  digest: string;
  rootfs: string;
  usedBy: string[];
  runDefaults?: { entrypoint: string[]; cmd: string[]; env: string[]; workdir?: string; user?: string };
}

async function json<T>(args: string[], input?: string): Promise<T> {
  const result = await env.banger([...args, "--json"], input === undefined ? {} : { input });
  assert.equal(result.code, 0, `banger ${args.join(" ")}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

function debugfs(rootfs: string, request: string): string {
  return execFileSync("debugfs", ["-R", request, rootfs], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
}

before(async () => {
  if (skip) return;
  makeFixture(fixture);
  mkdirSync(join(tmp.path, "r1"));
  mkdirSync(join(tmp.path, "r2"));
  registry = await startRegistry(join(tmp.path, "r1"));
  secured = await startRegistry(join(tmp.path, "r2"), "htpasswd");
  await pushToRegistry(registry, `oci:${join(fixture, "oci")}:v1`, "banger/fixture:v1");
  await pushToRegistry(registry, `oci:${join(fixture, "oci")}:zstd`, "banger/fixture:zstd");
  await pushToRegistry(secured, `oci:${join(fixture, "oci")}:v1`, "banger/private:v1");
  env = createE2eEnv({ name: "image-cli" });
});

after(async () => {
  await env?.dispose();
  await registry?.stop();
  await secured?.stop();
  tmp.cleanup();
});

test("pull, ls, show: the image's tree, source, digest and run defaults", { skip }, async () => {
  const reference = `${registry.address}/banger/fixture:v1`;
  const pulled = await json<ImageJson>(["image", "pull", reference]);
  assert.equal(pulled.name, reference);
  assert.equal(pulled.kind, "oci");
  assert.match(pulled.digest, /^sha256:[0-9a-f]{64}$/);
  assert.equal(debugfs(pulled.rootfs, "cat /etc/deleteme.txt"), "back-again\n");
  assert.match(debugfs(pulled.rootfs, "stat /usr/bin/suid"), /Mode:\s+04755/);
  assert.match(debugfs(pulled.rootfs, "stat /home/user/notes.txt"), /User:\s+1000\s+Group:\s+1000/);
  assert.doesNotMatch(debugfs(pulled.rootfs, "ls /opt/app"), /a\.txt/);
  execFileSync("e2fsck", ["-fn", pulled.rootfs], { stdio: "ignore" });
  const listed = await json<ImageJson[]>(["image", "ls"]);
  const row = listed.find((image) => image.name === reference);
  assert.equal(row?.source, `${registry.address}/banger/fixture:v1`);
  assert.deepEqual(row?.usedBy, []);
  const shown = await json<ImageJson>(["image", "show", reference]);
  assert.deepEqual(shown.runDefaults, {
    entrypoint: ["/bin/hi"],
    cmd: ["world"],
    env: ["PATH=/usr/bin:/bin", "GREETING=hello"],
    workdir: "/opt/app",
    user: "1000",
  });
  const again = await json<ImageJson>(["image", "pull", reference]);
  assert.equal(again.digest, pulled.digest);
  assert.deepEqual(readdirSync(join(env.home, "state", "images", ".staging")), []);
});

test("bad references and unknown tags fail with their codes", { skip }, async () => {
  const bad = await env.banger(["image", "pull", "Not/Valid"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /invalid image reference/);
  const missing = await env.banger(["image", "pull", `${registry.address}/banger/fixture:nope`]);
  assert.equal(missing.code, 4);
  assert.match(missing.stderr, /banger\/fixture:nope/);
});

test("import: docker save (both formats), an OCI layout, and a tar of a multi-platform layout", {
  skip,
}, async () => {
  const legacy = await json<ImageJson>([
    "image",
    "import",
    join(fixture, "docker-archive.tar"),
    "--name",
    "legacy",
  ]);
  const modern = await json<ImageJson>(["image", "import", join(fixture, "docker25-save.tar")]);
  const layout = await json<ImageJson>([
    "image",
    "import",
    join(fixture, "oci"),
    "--tag",
    "v1",
    "--name",
    "layout",
  ]);
  assert.equal(modern.name, "banger/fixture:v1");
  for (const image of [legacy, modern, layout]) {
    assert.equal(debugfs(image.rootfs, "cat /etc/deleteme.txt"), "back-again\n", image.name);
    assert.equal(image.runDefaults?.workdir, "/opt/app");
  }
  const several = await env.banger(["image", "import", join(fixture, "oci")]);
  assert.equal(several.code, 2);
  assert.match(several.stderr, /--tag/);
  // A tar of an OCI layout holding a multi-platform index: the platform picks the image.
  const archive = join(tmp.path, "oci-archive.tar");
  execFileSync("skopeo", [
    "copy",
    "-q",
    "--all",
    `oci:${join(fixture, "oci")}:multi`,
    `oci-archive:${archive}:multi`,
  ]);
  const arm = await json<ImageJson>([
    "image",
    "import",
    archive,
    "--platform",
    "linux/arm64",
    "--name",
    "layout-tar",
  ]);
  assert.equal(debugfs(arm.rootfs, "cat /etc/arch"), "arm64\n");
  assert.equal((await env.banger(["image", "rm", "layout-tar"])).code, 0);
});

test("login stores credentials in a 0600 file; pulls from the htpasswd registry use them", {
  skip,
}, async () => {
  const reference = `${secured.address}/banger/private:v1`;
  const refused = await env.banger(["image", "pull", reference]);
  assert.equal(refused.code, 9);
  assert.match(refused.stderr, /image login/);
  const login = await env.banger(
    ["image", "login", secured.address, "-u", TEST_USER.username, "--password-stdin"],
    {
      input: `${TEST_USER.password}\n`,
    },
  );
  assert.equal(login.code, 0, login.stderr);
  assert.equal(statSync(join(env.home, "config", "registry-auth.json")).mode & 0o777, 0o600);
  const pulled = await json<ImageJson>(["image", "pull", reference]);
  assert.equal(pulled.name, reference);
  assert.doesNotMatch(await readLog(), new RegExp(TEST_USER.password));
});

test("register copies files into the store; delete --force takes its stopped VMs along; ls --catalog", {
  skip,
}, async () => {
  const source = join(tmp.path, "register");
  mkdirSync(source);
  for (const file of ["rootfs.ext4", "vmlinuz"]) writeFileSync(join(source, file), file);
  const registered = await json<ImageJson>([
    "image",
    "register",
    "mine",
    "--rootfs",
    join(source, "rootfs.ext4"),
    "--kernel",
    join(source, "vmlinuz"),
  ]);
  assert.equal(registered.kind, "registered");
  assert.equal(readFileSync(registered.rootfs, "utf8"), "rootfs.ext4");
  const catalog = await json<{ name: string; present: boolean; default: boolean }[]>([
    "image",
    "ls",
    "--catalog",
  ]);
  assert.deepEqual(catalog.find((entry) => entry.name === "debian-bookworm")?.present, false);
  // The test helpers start daemons with BANGER_DEFAULT_IMAGE=debian-bookworm-minimal: the small image is the default.
  assert.deepEqual(
    catalog.map((entry) => [entry.name, entry.default]),
    [
      ["debian-bookworm", false],
      ["debian-bookworm-minimal", true],
    ],
  );
  const table = await env.banger(["image", "ls", "--catalog"]);
  assert.match(table.stdout, /^NAME\s+KIND\s+DEFAULT\s+PRESENT\s+DESCRIPTION\n/);
  assert.match(table.stdout, /\ndebian-bookworm-minimal\s+debian\s+yes\s+no\s+Debian 12/);
  const created = await env.banger(["vm", "create", "uses-mine", "--image", "mine", "--no-start"]);
  assert.equal(created.code, 0, created.stderr);
  const refused = await env.banger(["image", "rm", "mine"]);
  assert.equal(refused.code, 6);
  assert.match(refused.stderr, /used by uses-mine \((created|stopped)\)/);
  assert.match(refused.stderr, /--force/);
  const forced = await env.banger(["image", "rm", "--force", "mine"]);
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(forced.stderr, /deleted VMs: uses-mine/);
  assert.equal((await env.banger(["vm", "show", "uses-mine"])).code, 4);
  assert.equal(existsSync(registered.rootfs), false);
});

test("build: FROM a registry image, ARG, ENV, COPY, RUN and .dockerignore", { skip }, async () => {
  const busybox = await makeTar([
    { header: { name: "bin", type: "directory", mode: 0o755 } },
    { header: { name: "bin/busybox", mode: 0o755 }, body: readFileSync("/bin/busybox") },
    { header: { name: "bin/sh", type: "symlink", linkname: "busybox" } },
  ]);
  await pushRaw(
    registry,
    "banger/busybox",
    "v1",
    rawImage([{ blob: gzipSync(busybox.tar), diffId: busybox.diffId }]),
  );
  const context = join(tmp.path, "context");
  mkdirSync(context);
  writeFileSync(join(context, "hello.txt"), "hello from the context\n");
  writeFileSync(join(context, "secret.txt"), "never copied\n");
  writeFileSync(join(context, ".dockerignore"), "secret.txt\n");
  writeFileSync(
    join(context, "Dockerfile"),
    [
      `FROM ${registry.address}/banger/busybox:v1`,
      "ARG GREETING=hi",
      "ENV APP_MODE=test",
      "COPY . /ctx/",
      'RUN /bin/busybox mkdir -p /app && echo "$GREETING built" > /app/run.txt',
      "WORKDIR /app",
      'CMD ["/bin/busybox", "cat", "/app/run.txt"]',
      "",
    ].join("\n"),
  );
  const built = await json<ImageJson>([
    "image",
    "build",
    "-t",
    "built",
    "--build-arg",
    "GREETING=hola",
    context,
  ]);
  assert.equal(built.name, "built");
  assert.equal(debugfs(built.rootfs, "cat /app/run.txt"), "hola built\n");
  assert.equal(debugfs(built.rootfs, "cat /ctx/hello.txt"), "hello from the context\n");
  assert.doesNotMatch(debugfs(built.rootfs, "ls /ctx"), /secret\.txt/);
  assert.ok(built.runDefaults?.env.includes("APP_MODE=test"));
  assert.equal(built.runDefaults?.workdir, "/app");
  assert.deepEqual(built.runDefaults?.cmd, ["/bin/busybox", "cat", "/app/run.txt"]);
  assert.deepEqual(readdirSync(join(env.home, "state", "images", ".staging")), []);
  // -f is read from the current directory, as docker reads it; the error names the path it tried.
  const noFile = await env.banger(["image", "build", "-t", "x", "-f", "no-such.Dockerfile", context]);
  assert.equal(noFile.code, 2);
  assert.match(noFile.stderr, new RegExp(`no Dockerfile at ${join(process.cwd(), "no-such.Dockerfile")}\n`));
  const broken = join(tmp.path, "broken");
  mkdirSync(broken);
  writeFileSync(
    join(broken, "Dockerfile"),
    `FROM ${registry.address}/banger/busybox:v1\nRUN /bin/busybox false\n`,
  );
  const failed = await env.banger(["image", "build", "-t", "broken", broken]);
  assert.equal(failed.code, 7, failed.stderr);
  assert.match(failed.stderr, /failed at build/);
  assert.equal((await env.banger(["image", "rm", "built"])).code, 0);
});

test("Ctrl-C during a pull cancels it: exit 130, no staging directory, no worker left", {
  skip,
}, async () => {
  let stalled: (() => void) | undefined;
  const blobAsked = new Promise<void>((resolve) => {
    stalled = resolve;
  });
  const held: ServerResponse[] = [];
  const front = createServer(async (req, res) => {
    if (req.url?.includes("/blobs/") && !req.url.includes(configDigest)) {
      held.push(res);
      stalled?.();
      return;
    }
    const upstream = await fetch(`http://${registry.address}${req.url}`, {
      headers: { accept: req.headers.accept ?? "" },
    });
    res
      .writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" })
      .end(Buffer.from(await upstream.arrayBuffer()));
  });
  // A layer no earlier pull put in the blob cache, so the pull has to ask for it.
  const layer = await makeTar([{ header: { name: "slow.bin" }, body: randomBytes(4096) }]);
  const image = rawImage([{ blob: gzipSync(layer.tar), diffId: layer.diffId }]);
  await pushRaw(registry, "banger/slow", "v1", image);
  const configDigest = [...image.blobs.keys()][0] as string;
  await once(front.listen(0, "127.0.0.1"), "listening");
  try {
    const port = (front.address() as AddressInfo).port;
    const child = spawn(bangerBin, ["image", "pull", `127.0.0.1:${port}/banger/slow:v1`], {
      env: { ...process.env, BANGER_HOME: env.home, BANGER_NETNS: env.netns },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = once(child, "exit");
    await Promise.race([
      blobAsked,
      exited.then(() => assert.fail(`the pull ended before asking for a layer: ${stderr}`)),
    ]);
    assert.equal(workerPids().length, 1, "the pull's worker runs under the daemon");
    child.kill("SIGINT");
    const [code] = (await exited) as [number | null];
    assert.equal(code, 130, stderr);
    const staging = join(env.home, "state", "images", ".staging");
    for (let tries = 0; tries < 100 && readdirSync(staging).length > 0; tries += 1) await sleep(100);
    assert.deepEqual(readdirSync(staging), []);
    assert.deepEqual(workerPids(), []);
    assert.equal((await env.banger(["image", "show", `127.0.0.1:${port}/banger/slow:v1`])).code, 4);
  } finally {
    for (const res of held) res.destroy();
    front.closeAllConnections();
    await new Promise((resolve) => front.close(resolve));
  }
});

/** Image worker processes whose parent is this test's daemon. */
function workerPids(): number[] {
  const daemon = daemonPid(env.home);
  assert.ok(daemon, "the daemon is running");
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
        const parent = Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ")[1]);
        return cmdline.includes("sys/oci/worker.ts") && parent === daemon;
      } catch {
        return false;
      }
    })
    .map(Number);
}

test("vm create --image REF auto-pulls; delete and prune --all clean up", { skip }, async () => {
  const reference = `${registry.address}/banger/fixture:zstd`;
  const created = await env.banger(["vm", "create", "auto", "--image", reference, "--no-start", "--json"]);
  assert.equal(created.code, 0, created.stderr);
  assert.equal((JSON.parse(created.stdout) as { image: string }).image, reference);
  assert.equal((await env.banger(["vm", "delete", "auto"])).code, 0);
  const shown = await json<ImageJson>(["image", "show", reference]);
  assert.equal(debugfs(shown.rootfs, "cat /etc/deleteme.txt"), "back-again\n");
  const removed = await env.banger(["image", "rm", reference]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(existsSync(shown.rootfs), false);
  const pruned = await json<{ images: string[]; blobs: number; bytes: number }>(["image", "prune", "--all"]);
  assert.deepEqual(
    pruned.images.sort(),
    [
      "banger/fixture:v1",
      "layout",
      "legacy",
      `${registry.address}/banger/fixture:v1`,
      `${secured.address}/banger/private:v1`,
    ].sort(),
  );
  assert.ok(pruned.blobs > 0);
  assert.deepEqual(readdirSync(join(env.home, "state", "blobs", "sha256")), []);
});

async function readLog(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  return readFile(join(env.home, "state", "bangerd.log"), "utf8");
}
