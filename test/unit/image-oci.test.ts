import assert from "node:assert/strict";
import { test } from "node:test";
import {
  applyRunDefaults,
  classifyEntry,
  commandFor,
  credentialsFromConfig,
  envFor,
  familiarReference,
  formatReference,
  fromReferences,
  isLoopbackRegistry,
  LayerEscapeError,
  parseChallenge,
  parseManifestDocument,
  parsePlatform,
  parseReference,
  parseUserSpec,
  planDockerfileBuild,
  planRootfsMkfs,
  resolveParents,
  rootfsSizeBytes,
  runDefaultsOf,
  selectManifest,
  withCredentials,
} from "../../src/core/oci/index.ts";
import { type BangerError, ErrorCode } from "../../src/protocol/index.ts";

const D = (c: string): string => `sha256:${c.repeat(64)}`;

test("references take docker's defaults", () => {
  const cases: [string, string][] = [
    ["alpine", "docker.io/library/alpine:latest"],
    ["python:3.12-slim", "docker.io/library/python:3.12-slim"],
    ["team/app", "docker.io/team/app:latest"],
    ["127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1"],
    ["localhost/app", "localhost/app:latest"],
    ["ghcr.io/o/r/x:1.0", "ghcr.io/o/r/x:1.0"],
    [`alpine@${D("a")}`, `docker.io/library/alpine@${D("a")}`],
    [`reg.example:443/a:b@${D("b")}`, `reg.example:443/a:b@${D("b")}`],
    ["index.docker.io/library/debian:12", "docker.io/library/debian:12"],
  ];
  for (const [input, want] of cases) assert.equal(formatReference(parseReference(input)), want, input);
  assert.equal(familiarReference(parseReference("alpine")), "alpine:latest");
  assert.equal(familiarReference(parseReference("127.0.0.1:5000/x")), "127.0.0.1:5000/x:latest");
});

test("bad references are INVALID_PARAMS naming the part", () => {
  for (const [input, part] of [
    ["", "empty"],
    ["Alpine", "Alpine"],
    ["alpine:bad tag", "bad tag"],
    ["alpine@sha256:zz", "sha256:zz"],
    ["a//b", '""'],
  ]) {
    assert.throws(
      () => parseReference(input as string),
      (error: Error & { code?: string }) =>
        error.code === "INVALID_PARAMS" && error.message.includes(part as string),
      input,
    );
  }
});

test("loopback registries are plain HTTP by default", () => {
  assert.ok(isLoopbackRegistry("127.0.0.1:5000"));
  assert.ok(isLoopbackRegistry("localhost:5000"));
  assert.ok(isLoopbackRegistry("[::1]:5000"));
  assert.ok(!isLoopbackRegistry("docker.io"));
  assert.ok(!isLoopbackRegistry("10.0.0.1:5000"));
});

test("an index entry is chosen by platform, never by position", () => {
  const index = {
    schemaVersion: 2 as const,
    manifests: [
      { digest: D("1"), size: 1, platform: { os: "unknown", architecture: "unknown" } },
      { digest: D("2"), size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      { digest: D("3"), size: 1, platform: { os: "linux", architecture: "amd64" } },
      { digest: D("4"), size: 1, platform: { os: "linux", architecture: "arm", variant: "v7" } },
    ],
  };
  assert.equal(selectManifest(index, parsePlatform("linux/amd64"), "x").digest, D("3"));
  assert.equal(selectManifest(index, parsePlatform("linux/arm64"), "x").digest, D("2"));
  assert.equal(selectManifest(index, parsePlatform("linux/arm/v7"), "x").digest, D("4"));
  assert.throws(
    () => selectManifest(index, parsePlatform("linux/arm/v6"), "x"),
    /no image for linux\/arm\/v6/,
  );
  assert.throws(() => parsePlatform("linux/"), /invalid platform/);
});

test("documents are told apart by content type, mediaType, then shape", () => {
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, config: { digest: D("c"), size: 2 }, layers: [] }),
  );
  assert.equal(parseManifestDocument(manifest, undefined, "m").kind, "manifest");
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }));
  assert.equal(parseManifestDocument(index, "application/vnd.oci.image.index.v1+json", "i").kind, "index");
  assert.equal(parseManifestDocument(index, undefined, "i").kind, "index");
  assert.throws(() => parseManifestDocument(Buffer.from("{"), undefined, "broken"), {
    code: "IMAGE_INVALID",
  });
  assert.throws(
    () => parseManifestDocument(Buffer.from(JSON.stringify({ schemaVersion: 1 })), undefined, "old"),
    /schema 1/,
  );
  assert.throws(
    () =>
      parseManifestDocument(
        Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: "md5:x", size: 1 }, layers: [] })),
        undefined,
        "bad",
      ),
    /config.digest/,
  );
});

test("challenges: Basic and Bearer with quoted params", () => {
  assert.deepEqual(parseChallenge('Basic realm="banger-test"'), { scheme: "basic", realm: "banger-test" });
  assert.deepEqual(
    parseChallenge(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    ),
    {
      scheme: "bearer",
      realm: "https://auth.docker.io/token",
      service: "registry.docker.io",
      scope: "repository:library/alpine:pull",
    },
  );
  assert.equal(parseChallenge("Bearer service=x"), undefined);
  assert.equal(parseChallenge(null), undefined);
});

test("credentials come from docker's auths, by any of docker's keys", () => {
  const auth = Buffer.from("u:p:with:colons").toString("base64");
  assert.deepEqual(
    credentialsFromConfig({ auths: { "https://index.docker.io/v1/": { auth } } }, "docker.io"),
    {
      username: "u",
      password: "p:with:colons",
    },
  );
  assert.deepEqual(
    credentialsFromConfig({ auths: { "reg:5000": { username: "a", password: "b" } } }, "reg:5000"),
    {
      username: "a",
      password: "b",
    },
  );
  assert.equal(credentialsFromConfig({ auths: {} }, "reg:5000"), undefined);
  assert.equal(credentialsFromConfig("junk", "reg:5000"), undefined);
  const written = withCredentials(
    { auths: { "https://reg:5000": { auth: "old" }, other: { auth: "x" } } },
    "reg:5000",
    {
      username: "n",
      password: "m",
    },
  );
  assert.deepEqual(credentialsFromConfig(written, "reg:5000"), { username: "n", password: "m" });
  assert.deepEqual(Object.keys((written as { auths: object }).auths).sort(), ["other", "reg:5000"]);
  assert.equal(credentialsFromConfig(withCredentials(written, "reg:5000", undefined), "reg:5000"), undefined);
});

test("layer entries: whiteouts, opaque markers, the root, and refused names", () => {
  assert.deepEqual(classifyEntry("./"), { kind: "root" });
  assert.deepEqual(classifyEntry("./etc/.wh.passwd"), { kind: "whiteout", parent: ["etc"], name: "passwd" });
  assert.deepEqual(classifyEntry("opt/app/.wh..wh..opq"), { kind: "opaque", dir: ["opt", "app"] });
  assert.deepEqual(classifyEntry("etc//hosts"), { kind: "node", path: ["etc", "hosts"] });
  assert.throws(() => classifyEntry("/etc/passwd"), LayerEscapeError);
  assert.throws(() => classifyEntry("a/../../b"), /".." component/);
  assert.throws(() => classifyEntry("a/.wh.."), /whiteout of no valid name/);
});

test("parents resolve through symlinks like a chroot; climbing out is an escape", () => {
  const links: Record<string, string> = {
    lib: "usr/lib",
    abs: "/opt",
    up: "..",
    loop: "loop",
    deep: "a/../../x",
  };
  const read = (path: string): string | undefined => links[path];
  assert.deepEqual(resolveParents(["lib", "x.so"], read, "e"), ["usr", "lib", "x.so"]);
  assert.deepEqual(resolveParents(["abs", "f"], read, "e"), ["opt", "f"]);
  assert.deepEqual(resolveParents(["lib"], read, "e"), ["lib"]);
  assert.throws(() => resolveParents(["up", "f"], read, "e"), /leads outside the tree/);
  assert.throws(() => resolveParents(["deep", "f"], read, "e"), /leads outside the tree/);
  assert.throws(() => resolveParents(["loop", "f"], read, "e"), /symlink loop/);
});

test("run defaults follow docker's ENTRYPOINT/CMD and ENV rules", () => {
  const defaults = runDefaultsOf({
    rootfs: { type: "layers", diff_ids: [] },
    config: {
      Entrypoint: ["/bin/hi"],
      Cmd: ["world"],
      Env: ["PATH=/bin", "A=1"],
      WorkingDir: "/app",
      User: "",
    },
  });
  assert.deepEqual(defaults, {
    entrypoint: ["/bin/hi"],
    cmd: ["world"],
    env: ["PATH=/bin", "A=1"],
    workdir: "/app",
    user: undefined,
  });
  assert.deepEqual(commandFor(defaults, []), ["/bin/hi", "world"]);
  assert.deepEqual(commandFor(defaults, ["there"]), ["/bin/hi", "there"]);
  assert.deepEqual(commandFor({ ...defaults, entrypoint: [] }, ["ls", "-l"]), ["ls", "-l"]);
  assert.deepEqual(commandFor(runDefaultsOf({ rootfs: { type: "layers", diff_ids: [] } }), []), []);
  assert.deepEqual(envFor(defaults, ["A=2", "B=3"]), ["PATH=/bin", "A=2", "B=3"]);
});

test("vm.exec applies an image's run defaults as docker run and docker exec do", () => {
  const defaults = {
    entrypoint: ["/bin/hi"],
    cmd: ["world"],
    env: ["PATH=/bin", "A=1"],
    workdir: "/app",
    user: "app:staff",
  };
  // No argv: ENTRYPOINT then CMD, with ENV, WORKDIR and USER (user and group, resolved by the guest agent).
  assert.deepEqual(applyRunDefaults(defaults, { argv: [] }), {
    argv: ["/bin/hi", "world"],
    env: ["PATH=/bin", "A=1"],
    cwd: "/app",
    user: "app:staff",
  });
  // docker run: the args replace CMD after ENTRYPOINT; the caller's env, cwd and user win.
  assert.deepEqual(
    applyRunDefaults(defaults, { argv: ["there"], entrypoint: true, env: ["A=2"], cwd: "/", user: "root" }),
    { argv: ["/bin/hi", "there"], env: ["PATH=/bin", "A=2"], cwd: "/", user: "root" },
  );
  // docker exec: the argv is the whole command; with no WORKDIR the directory is /.
  assert.deepEqual(applyRunDefaults({ ...defaults, workdir: undefined }, { argv: ["ls"] }), {
    argv: ["ls"],
    env: ["PATH=/bin", "A=1"],
    cwd: "/",
    user: "app:staff",
  });
  // An image without defaults (banger's own): what the caller gave, unchanged.
  assert.deepEqual(applyRunDefaults(undefined, { argv: ["ls"], entrypoint: true }), {
    argv: ["ls"],
    env: undefined,
    cwd: undefined,
    user: undefined,
  });
  for (const [given, message] of [
    [undefined, /^no command given$/],
    [{ ...defaults, entrypoint: [] as string[], cmd: [] as string[] }, /the image has no ENTRYPOINT or CMD/],
  ] as const) {
    assert.throws(
      () => applyRunDefaults(given, { argv: [] }),
      (error: BangerError) => {
        assert.equal(error.code, ErrorCode.INVALID_PARAMS);
        assert.match(error.message, message);
        assert.ok(error.hint);
        return true;
      },
    );
  }
});

test("the ext4 for a tree has room for its data and inodes", () => {
  const argv = planRootfsMkfs({
    tree: "/t",
    out: "/o.ext4",
    usage: { bytes: 100 * 1024 * 1024, inodes: 10_000 },
  });
  assert.deepEqual(argv.slice(0, 5), ["mkfs.ext4", "-q", "-F", "-L", "rootfs"]);
  assert.equal(argv[argv.indexOf("-N") + 1], String(Math.ceil(10_000 * 1.25) + 4096));
  assert.ok(argv.includes("-d") && argv.at(-2) === "/o.ext4");
  const size = rootfsSizeBytes({ bytes: 100 * 1024 * 1024, inodes: 10_000 });
  assert.equal(argv.at(-1), `${size / 1024 / 1024}M`);
  assert.ok(size > 100 * 1024 * 1024 && size < 200 * 1024 * 1024);
});

test("a Dockerfile build is planned as a buildah build and a push to an OCI layout", () => {
  const steps = planDockerfileBuild({
    storage: "/s/storage",
    runroot: "/s/run",
    context: "/ctx",
    dockerfile: "/ctx/Dockerfile.dev",
    buildArgs: ["A=1", "B=two words"],
    layout: "/s/layout",
    insecure: true,
    registriesConf: "/s/registries.conf",
  });
  assert.deepEqual(
    steps.map((step) => step.id),
    ["build", "export"],
  );
  const build = steps[0]?.argv ?? [];
  assert.deepEqual(build.slice(0, 9), [
    "buildah",
    "--root",
    "/s/storage",
    "--runroot",
    "/s/run",
    "--storage-driver",
    "vfs",
    "--registries-conf",
    "/s/registries.conf",
  ]);
  for (const flag of [
    "--isolation",
    "chroot",
    "--tls-verify=false",
    "--file",
    "/ctx/Dockerfile.dev",
    "B=two words",
  ])
    assert.ok(build.includes(flag), flag);
  assert.equal(build.at(-1), "/ctx");
  assert.equal(steps[1]?.argv.at(-1), "oci:/s/layout:latest");
  assert.deepEqual(
    fromReferences(
      "FROM --platform=linux/amd64 127.0.0.1:5000/base:v1 AS build\nRUN x\nFROM build\nFROM scratch\nfrom \\\n  alpine\n",
    ),
    ["127.0.0.1:5000/base:v1", "alpine"],
  );
});

test("a user spec is docker's user[:group], each a name or a number", () => {
  assert.deepEqual(parseUserSpec("www-data"), { user: "www-data", group: undefined });
  assert.deepEqual(parseUserSpec("app:staff"), { user: "app", group: "staff" });
  assert.deepEqual(parseUserSpec("1000:1000"), { user: "1000", group: "1000" });
  assert.deepEqual(parseUserSpec("0:adm"), { user: "0", group: "adm" });
  assert.deepEqual(parseUserSpec("nobody:65534"), { user: "nobody", group: "65534" });
  for (const [spec, why] of [
    ["", /the user is empty/],
    [":staff", /the user is empty/],
    ["app:", /the group is empty/],
    ["a:b:c", /more than one ':'/],
    ["has space", /'has space' is not a valid user name/],
    ["-rf", /not a valid user name/],
    ["app:bad/group", /'bad\/group' is not a valid group name/],
    ["99999999999", /user id 99999999999 is out of range/],
  ] as const) {
    assert.throws(
      () => parseUserSpec(spec, "the image's USER"),
      (error: BangerError) => {
        assert.equal(error.code, ErrorCode.INVALID_PARAMS);
        assert.match(error.message, /^the image's USER '.*' is not a user: /);
        assert.match(error.message, why);
        assert.match(error.hint ?? "", /uid:gid/);
        return true;
      },
      spec,
    );
  }
});

test("a malformed USER or --user fails the exec before it reaches the guest, naming its source", () => {
  const defaults = { entrypoint: [], cmd: ["sh"], env: [], workdir: undefined, user: "a:b:c" };
  assert.throws(() => applyRunDefaults(defaults, { argv: [] }), /^BangerError: the image's USER 'a:b:c'/);
  assert.deepEqual(applyRunDefaults(defaults, { argv: [], user: "root:root" }).user, "root:root");
  assert.throws(() => applyRunDefaults(undefined, { argv: ["id"], user: "x:" }), /--user 'x:' is not a user/);
});
