/**
 * Every image shape boots: OCI images pushed by the test to Debian's
 * docker-registry on 127.0.0.1 and auto-pulled by `banger vm run --image`
 * boot the default image's kernel with banger's init, agent and busybox
 * under /.banger, and run their ENTRYPOINT/CMD/ENV/WORKDIR/USER with
 * docker's rules. Shapes: busybox only (network, hostname, resolv.conf and
 * the kernel's modules checked from inside), a scratch image holding one
 * static binary (where `vm cp` copies a tree in and out with no shell in
 * the guest), a distroless-like one (no shell, a non-root USER), and a
 * Debian-based one (glibc, dash and os-release taken from this Debian host).
 * A promoted busybox VM boots as an image with its file and run defaults,
 * and an image built by `banger image build` (buildah) from a Dockerfile
 * FROM the registry's busybox image boots with its RUN, COPY and ENV.
 * QEMU driver, and one OCI boot through the Firecracker driver against its
 * double.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { makeTar, pushRaw, rawImage, startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { makeTempDir } from "../helpers/tmp.ts";
import { FIRECRACKER_DOUBLE } from "./vm-suite.ts";

const BUSYBOX = "/bin/busybox";

function toolMissing(): string | undefined {
  for (const tool of ["docker-registry", "musl-gcc", "buildah"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `needs ${tool} (scripts/install-deps)`;
    }
  }
  return existsSync(BUSYBOX) ? undefined : "needs Debian's busybox-static (/bin/busybox)";
}

const skip = e2eSkipReason() ?? toolMissing();

/** A static program that reports what docker's run rules gave it. */
const PROBE_C = `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  char cwd[512];
  printf("args=");
  for (int i = 1; i < argc; i++) printf(i > 1 ? " %s" : "%s", argv[i]);
  const char *greeting = getenv("GREETING");
  printf(" greeting=%s uid=%d cwd=%s\\n", greeting ? greeting : "-", (int)getuid(), getcwd(cwd, sizeof cwd) ? cwd : "?");
  return 0;
}
`;

/** Each node under `root` by relative path: kind, mode, mtime (s), and content or link target. */
function describeTree(root: string, rel = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(root, rel)).sort()) {
    const path = join(root, rel, name);
    const key = rel ? `${rel}/${name}` : name;
    const info = lstatSync(path);
    const meta = `${(info.mode & 0o7777).toString(8)} ${Math.floor(info.mtimeMs / 1000)}`;
    if (info.isSymbolicLink()) out[key] = `link ${readlinkSync(path)}`;
    else if (info.isDirectory()) Object.assign(out, { [key]: `dir ${meta}` }, describeTree(root, key));
    else out[key] = `file ${meta} ${readFileSync(path).toString("base64")}`;
  }
  return out;
}

type Entry = Parameters<typeof makeTar>[0][number];
const dir = (name: string): Entry => ({ header: { name, type: "directory", mode: 0o755 } });
const file = (name: string, body: string | Buffer, mode = 0o644): Entry => ({ header: { name, mode }, body });
const link = (name: string, target: string): Entry => ({
  header: { name, type: "symlink", linkname: target },
});

async function push(registry: TestRegistry, repo: string, entries: Entry[], config: object): Promise<string> {
  const { tar, diffId } = await makeTar(entries);
  await pushRaw(registry, repo, "1", rawImage([{ blob: gzipSync(tar), diffId }], { config }));
  return `${registry.address}/${repo}:1`;
}

describe("OCI images of every shape boot and run their defaults (QEMU)", { skip }, () => {
  let env: E2eEnv;
  let registry: TestRegistry;
  const work = makeTempDir("bgo-");
  const refs = { busybox: "", scratch: "", distroless: "", debian: "" };

  before(async () => {
    env = createE2eEnv({
      name: "oci",
      // QEMU unless a case asks for the Firecracker double (`--vmm firecracker`).
      config: `[vmm]\ndefault = "qemu"\nfirecracker_binary = ${JSON.stringify(FIRECRACKER_DOUBLE)}\n`,
      env: (home) => ({ FC_DOUBLE_STRICT_LOG: join(home, "firecracker-exchanges.jsonl") }),
    });
    registry = await startRegistry(work.path);
    writeFileSync(join(work.path, "probe.c"), PROBE_C);
    execFileSync("musl-gcc", ["-static", "-Os", "-o", join(work.path, "probe"), join(work.path, "probe.c")]);
    const probe = readFileSync(join(work.path, "probe"));
    const applets = ["sh", "cat", "hostname", "id", "grep", "test", "uname", "echo"];
    refs.busybox = await push(
      registry,
      "banger/busybox",
      [
        dir("bin/"),
        file("bin/busybox", readFileSync(BUSYBOX), 0o755),
        ...applets.map((applet) => link(`bin/${applet}`, "busybox")),
        dir("etc/"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n"),
        file("etc/group", "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"),
        // A file where banger's own would go in its default image: never overwritten.
        dir("usr/"),
        dir("usr/local/"),
        dir("usr/local/sbin/"),
        file("usr/local/sbin/banger-setup", "the image's own\n"),
        dir("srv/"),
      ],
      {
        Env: ["PATH=/bin", "GREETING=hello"],
        WorkingDir: "/srv",
        Cmd: ["sh", "-c", 'echo "$GREETING from $(pwd) as $(id -u)"'],
      },
    );
    refs.scratch = await push(registry, "banger/scratch", [file("probe", probe, 0o755)], {
      Entrypoint: ["/probe"],
      Cmd: ["default"],
      Env: ["GREETING=scratch"],
    });
    refs.distroless = await push(
      registry,
      "banger/distroless",
      [
        dir("etc/"),
        file(
          "etc/passwd",
          "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        file("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        dir("home/"),
        { header: { name: "home/nonroot/", type: "directory", mode: 0o700, uid: 65532, gid: 65532 } },
        dir("app/"),
        file("app/probe", probe, 0o755),
      ],
      { Entrypoint: ["/app/probe"], User: "nonroot", WorkingDir: "/home/nonroot" },
    );
    const libc = realpathSync("/lib/x86_64-linux-gnu/libc.so.6");
    const loader = realpathSync("/lib64/ld-linux-x86-64.so.2");
    refs.debian = await push(
      registry,
      "banger/debian",
      [
        link("bin", "usr/bin"),
        link("lib", "usr/lib"),
        link("lib64", "usr/lib64"),
        dir("usr/"),
        dir("usr/bin/"),
        file("usr/bin/sh", readFileSync("/usr/bin/dash"), 0o755),
        dir("usr/lib/"),
        dir("usr/lib/x86_64-linux-gnu/"),
        file("usr/lib/x86_64-linux-gnu/libc.so.6", readFileSync(libc), 0o755),
        dir("usr/lib64/"),
        file("usr/lib64/ld-linux-x86-64.so.2", readFileSync(loader), 0o755),
        file("usr/lib/os-release", readFileSync("/usr/lib/os-release")),
        dir("etc/"),
        link("etc/os-release", "../usr/lib/os-release"),
        file("etc/debian_version", readFileSync("/etc/debian_version")),
      ],
      { Cmd: ["/bin/sh", "-c", '. /etc/os-release; echo "$ID $VERSION_ID"'] },
    );
  });

  after(async () => {
    await env?.dispose();
    await registry?.stop();
    work.cleanup();
  });

  it("a busybox-only image runs its CMD, with the network, hostname, resolv.conf and modules set up", async () => {
    const run = await env.banger(["vm", "run", "--name", "bb", "--image", refs.busybox]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "hello from /srv as 0\n");
    const inside = await env.banger([
      "vm",
      "exec",
      "bb",
      "--",
      "sh",
      "-c",
      'hostname; grep -c nameserver /etc/resolv.conf; cat /sys/class/net/eth0/operstate; test -e "/lib/modules/$(uname -r)/modules.dep" && echo modules; cat /usr/local/sbin/banger-setup',
    ]);
    assert.equal(inside.code, 0, inside.stderr);
    assert.equal(inside.stdout, "bb\n1\nup\nmodules\nthe image's own\n");
    // -u user[:group]: names from the image's /etc/passwd and /etc/group, or numbers; a group given is the only one.
    const ids = async (user: string) => {
      const r = await env.banger([
        "vm",
        "exec",
        "-u",
        user,
        "bb",
        "--",
        "sh",
        "-c",
        'echo "$(id -u) $(id -g) $(id -G)"',
      ]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    const own = (await ids("app")).trim().split(" ");
    assert.deepEqual(
      [own.slice(0, 2), [...new Set(own.slice(2))].sort()],
      [
        ["1000", "1000"],
        ["1000", "50"],
      ],
    );
    assert.equal(await ids("app:staff"), "1000 50 50\n");
    assert.equal(await ids("4242:4343"), "4242 4343 4343\n");
    const unknown = await env.banger(["vm", "exec", "-u", "app:nosuch", "bb", "--", "true"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown group 'nosuch': the guest's \/etc\/group has no such group/);
    assert.match(unknown.stderr, /-u 1000:1000/);
    // Promoted, the VM's disk boots as an image of its own, with the file it wrote and the run defaults.
    const wrote = await env.banger(["vm", "exec", "bb", "--", "sh", "-c", "echo kept > /srv/note"]);
    assert.equal(wrote.code, 0, wrote.stderr);
    assert.equal((await env.banger(["vm", "stop", "bb"])).code, 0);
    const promoted = await env.banger(["image", "promote", "bb", "bb-golden"]);
    assert.equal(promoted.code, 0, promoted.stderr);
    const deleted = await env.banger(["vm", "delete", "bb"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const golden = await env.banger([
      "vm",
      "run",
      "--rm",
      "--image",
      "bb-golden",
      "--",
      "sh",
      "-c",
      'cat note; echo "$GREETING"',
    ]);
    assert.equal(golden.code, 0, golden.stderr);
    assert.equal(golden.stdout, "kept\nhello\n");
  });

  it("a scratch image with one static binary runs ENTRYPOINT+CMD, given args replace CMD, and vm cp works both ways", async () => {
    const defaults = await env.banger(["vm", "run", "--name", "sc", "--image", refs.scratch]);
    assert.equal(defaults.code, 0, defaults.stderr);
    assert.equal(defaults.stdout, "args=default greeting=scratch uid=0 cwd=/\n");
    // vm run always makes a new VM; the args replace CMD after ENTRYPOINT (docker run).
    const given = await env.banger(["vm", "run", "--rm", "--image", refs.scratch, "--", "one", "two"]);
    assert.equal(given.code, 0, given.stderr);
    assert.equal(given.stdout, "args=one two greeting=scratch uid=0 cwd=/\n");
    // No shell on the image's PATH, yet vm cp copies a tree in and out through the agent alone.
    const noShell = await env.banger(["vm", "exec", "sc", "--", "sh", "-c", "true"]);
    assert.equal(noShell.code, 127, "the scratch image has no sh");
    const tree = join(work.path, "tree");
    mkdirSync(join(tree, "nested"), { recursive: true });
    writeFileSync(join(tree, "nested", "tool"), "#!/probe\n", { mode: 0o750 });
    writeFileSync(join(tree, "data.bin"), randomBytes(3 * 1024 * 1024 + 5));
    symlinkSync("nested/tool", join(tree, "link"));
    utimesSync(join(tree, "data.bin"), 1_600_000_000, 1_600_000_000);
    const copyIn = await env.banger(["vm", "cp", tree, "sc:/copied"]);
    assert.equal(copyIn.code, 0, copyIn.stderr);
    const back = join(work.path, "back");
    const copyOut = await env.banger(["vm", "cp", "sc:/copied", back]);
    assert.equal(copyOut.code, 0, copyOut.stderr);
    assert.deepEqual(describeTree(back), describeTree(tree));
    const probeOut = await env.banger(["vm", "cp", "sc:/probe", join(work.path, "probe-back")]);
    assert.equal(probeOut.code, 0, probeOut.stderr);
    assert.ok(readFileSync(join(work.path, "probe-back")).equals(readFileSync(join(work.path, "probe"))));
    const deleted = await env.banger(["vm", "delete", "--force", "sc"]);
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it("a distroless-like image (no shell) runs as its USER in its WORKDIR", async () => {
    const run = await env.banger(["vm", "run", "--rm", "--image", refs.distroless, "--", "x"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "args=x greeting=- uid=65532 cwd=/home/nonroot\n");
  });

  it("an image built from a Dockerfile (FROM the registry, RUN, COPY, ENV) boots and shows its changes", async () => {
    const context = join(work.path, "context");
    mkdirSync(context);
    writeFileSync(join(context, "hello.txt"), "copied from the context\n");
    writeFileSync(
      join(context, "Dockerfile.app"),
      [
        `FROM ${refs.busybox}`,
        "ENV VAR=set-by-env",
        "COPY hello.txt /copied-file",
        'RUN echo "written by RUN as $(id -u)" > /srv/run.txt',
        "",
      ].join("\n"),
    );
    const built = await env.banger([
      "image",
      "build",
      "-t",
      "built-app",
      "-f",
      join(context, "Dockerfile.app"),
      context,
    ]);
    assert.equal(built.code, 0, built.stderr);
    const run = await env.banger([
      "vm",
      "run",
      "--name",
      "bld",
      "--image",
      "built-app",
      "--",
      "cat",
      "/copied-file",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "copied from the context\n");
    const shown = await env.banger([
      "vm",
      "exec",
      "bld",
      "--",
      "sh",
      "-c",
      'echo "$VAR $GREETING"; cat /srv/run.txt',
    ]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(
      shown.stdout,
      "set-by-env hello\nwritten by RUN as 0\n",
      "its ENV, the base image's ENV, RUN's file",
    );
    assert.equal((await env.banger(["vm", "delete", "--force", "bld"])).code, 0);
  });

  it("an OCI image boots under the Firecracker driver (the double) with spec-valid API calls", async () => {
    const run = await env.banger([
      "vm",
      "run",
      "--rm",
      "--vmm",
      "firecracker",
      "--image",
      refs.scratch,
      "--",
      "fc",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "args=fc greeting=scratch uid=0 cwd=/\n");
    const exchanges = readFileSync(join(env.home, "firecracker-exchanges.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map(
        (line) =>
          JSON.parse(line) as { method: string; path: string; requestValid: boolean; responseValid: boolean },
      );
    assert.ok(
      exchanges.some((line) => /^\/drives\//.test(line.path)),
      "the drives were configured through the API",
    );
    assert.deepEqual(
      exchanges.filter((line) => !line.requestValid || !line.responseValid),
      [],
    );
  });

  it("a Debian-based image (glibc, dash) runs its CMD", async () => {
    const version = readFileSync("/usr/lib/os-release", "utf8").match(/^VERSION_ID="?([^"\n]*)/m)?.[1];
    const run = await env.banger(["vm", "run", "--rm", "--image", refs.debian]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `debian ${version}\n`);
    assert.deepEqual(env.vmDirs(), [], "--rm left no VM directory");
    assert.deepEqual(env.taps(), [], "no tap is left");
  });
});
