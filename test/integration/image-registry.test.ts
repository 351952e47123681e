/**
 * The registry client and the flattener against a real registry
 * (docker-registry on 127.0.0.1): every fixture tag pulls into the tree
 * `umoci unpack` makes, under no auth, htpasswd and token auth; a
 * cross-origin redirect drops credentials; corrupt, oversized and
 * mislabelled blobs fail clearly and leave nothing in the cache.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { type Credentials, hostPlatform, parsePlatform, parseReference } from "../../src/core/oci/index.ts";
import type { BangerError } from "../../src/protocol/index.ts";
import { BlobCache } from "../../src/sys/oci/blob-cache.ts";
import { type PulledImage, pullIntoTree, registryReader } from "../../src/sys/oci/pull.ts";
import { RegistryClient } from "../../src/sys/oci/registry.ts";
import {
  describeTree,
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

const tmp = makeTempDir("bgt-oci-");
const fixture = join(tmp.path, "fixture");
let expected = "";
let counter = 0;

interface PullArgs {
  reference: string;
  credentials?: Credentials;
  platform?: string;
  cache?: BlobCache;
  fetch?: typeof globalThis.fetch;
}

async function pull(args: PullArgs): Promise<{ tree: string; result: PulledImage; cache: BlobCache }> {
  counter += 1;
  const tree = join(tmp.path, `tree-${counter}`);
  mkdirSync(tree);
  const ref = parseReference(args.reference);
  const client = new RegistryClient({
    registry: ref.registry,
    credentials: args.credentials,
    fetch: args.fetch,
    attempts: 2,
    backoffMs: 10,
  });
  const cache = args.cache ?? new BlobCache(join(tmp.path, `cache-${counter}`));
  const result = await pullIntoTree({
    reader: registryReader(client, ref, args.reference),
    platform: args.platform ? parsePlatform(args.platform) : hostPlatform(process.arch),
    cache,
    tree,
  });
  return { tree, result, cache };
}

before(() => {
  makeFixture(fixture);
  expected = describeTree(join(fixture, "expected", "rootfs"));
});
after(() => tmp.cleanup());

describe("registry without auth", () => {
  let registry: TestRegistry;
  before(async () => {
    const dir = join(tmp.path, "reg-none");
    mkdirSync(dir);
    registry = await startRegistry(dir);
    const layout = join(fixture, "oci");
    await pushToRegistry(registry, `oci:${layout}:v1`, "banger/fixture:v1");
    await pushToRegistry(registry, `oci:${layout}:multi`, "banger/fixture:multi", ["--all"]);
    await pushToRegistry(registry, `oci:${layout}:multi`, "banger/fixture:multi-docker", [
      "--all",
      "--format",
      "v2s2",
    ]);
    await pushToRegistry(registry, `oci:${layout}:zstd`, "banger/fixture:zstd");
  });
  after(() => registry.stop());

  for (const tag of ["v1", "multi", "multi-docker", "zstd"]) {
    test(`${tag} flattens to umoci's tree`, async () => {
      const { tree, result } = await pull({ reference: `${registry.address}/banger/fixture:${tag}` });
      assert.equal(describeTree(tree), expected);
      assert.equal(readFileSync(join(tree, "etc/deleteme.txt"), "utf8"), "back-again\n");
      assert.equal(result.layers.length, 4);
      assert.equal(
        execFileSync("getfattr", ["--only-values", "-n", "user.banger", join(tree, "usr/bin/tagged")], {
          encoding: "utf8",
        }),
        "fixture",
      );
      assert.deepEqual(result.config.config?.Entrypoint, ["/bin/hi"]);
    });
  }

  test("a multi-platform index is resolved by platform, not by position", async () => {
    const { tree } = await pull({
      reference: `${registry.address}/banger/fixture:multi`,
      platform: "linux/arm64",
    });
    assert.equal(readFileSync(join(tree, "etc/arch"), "utf8"), "arm64\n");
    await assert.rejects(
      pull({ reference: `${registry.address}/banger/fixture:multi`, platform: "linux/s390x" }),
      (error: BangerError) => {
        assert.equal(error.code, "IMAGE_NOT_FOUND");
        assert.match(error.hint ?? "", /linux\/arm64\/v8, linux\/amd64/);
        return true;
      },
    );
  });

  test("a pull by digest checks the manifest's digest", async () => {
    const first = await pull({ reference: `${registry.address}/banger/fixture:v1` });
    const { result } = await pull({
      reference: `${registry.address}/banger/fixture@${first.result.manifestDigest}`,
    });
    assert.equal(result.manifestDigest, first.result.manifestDigest);
  });

  test("the blob cache is shared: a second pull fetches nothing", async () => {
    const cache = new BlobCache(join(tmp.path, "shared-cache"));
    const first = await pull({ reference: `${registry.address}/banger/fixture:v1`, cache });
    assert.equal(first.result.fetchedBytes, first.result.layerBytes);
    const second = await pull({ reference: `${registry.address}/banger/fixture:v1`, cache });
    assert.equal(second.result.fetchedBytes, 0);
    assert.equal(describeTree(second.tree), expected);
  });

  test("a blob corrupted in the cache after its pull is refused when a later pull applies it", async () => {
    const first = await makeTar([{ header: { name: "first.txt" }, body: "first layer\n" }]);
    const second = await makeTar([{ header: { name: "second.txt" }, body: "second layer\n" }]);
    const plain = "application/vnd.oci.image.layer.v1.tar";
    const image = rawImage([
      { blob: first.tar, diffId: first.diffId, mediaType: plain },
      { blob: second.tar, diffId: second.diffId, mediaType: plain },
    ]);
    await pushRaw(registry, "banger/rotted", "v1", image);
    const cache = new BlobCache(join(tmp.path, "rotted-cache"));
    // The first pull streams layer 1 and fetches layer 2 into the cache; both are checked on the way in.
    const clean = await pull({ reference: `${registry.address}/banger/rotted:v1`, cache });
    assert.equal(readFileSync(join(clean.tree, "second.txt"), "utf8"), "second layer\n");
    for (const digest of [...image.blobs.keys()].slice(1)) {
      const file = cache.path(digest);
      const bytes = readFileSync(file);
      const at = bytes.indexOf("layer");
      bytes[at] = (bytes[at] as number) ^ 0x20;
      writeFileSync(file, bytes);
    }
    await assert.rejects(
      pull({ reference: `${registry.address}/banger/rotted:v1`, cache }),
      (error: BangerError) => {
        assert.equal(error.code, "IMAGE_INVALID");
        assert.match(error.message, /layer 1 .*the blob's digest is/);
        assert.match(error.hint ?? "", /image prune/);
        return true;
      },
    );
  });

  test("gzip, zstd and plain layers in one manifest", async () => {
    const plain = await makeTar([{ header: { name: "a.txt" }, body: "plain\n" }]);
    const zipped = await makeTar([{ header: { name: "b.txt" }, body: "gzip\n" }]);
    const image = rawImage([
      { blob: gzipSync(zipped.tar), diffId: zipped.diffId },
      { blob: plain.tar, diffId: plain.diffId, mediaType: "application/vnd.oci.image.layer.v1.tar" },
    ]);
    await pushRaw(registry, "banger/mixed", "v1", image);
    const { tree } = await pull({ reference: `${registry.address}/banger/mixed:v1` });
    assert.equal(readFileSync(join(tree, "a.txt"), "utf8"), "plain\n");
    assert.equal(readFileSync(join(tree, "b.txt"), "utf8"), "gzip\n");
  });

  test("an unknown tag is IMAGE_NOT_FOUND naming it", async () => {
    await assert.rejects(
      pull({ reference: `${registry.address}/banger/fixture:nope` }),
      (error: BangerError) => {
        assert.equal(error.code, "IMAGE_NOT_FOUND");
        assert.match(error.message, /banger\/fixture:nope/);
        return true;
      },
    );
  });

  test("a corrupt blob fails with its digest and is not cached", async () => {
    const layer = await makeTar([{ header: { name: "x.txt" }, body: "will be corrupted\n" }]);
    const blob = gzipSync(layer.tar);
    const image = rawImage([{ blob, diffId: layer.diffId }]);
    await pushRaw(registry, "banger/corrupt", "v1", image);
    const digest = [...image.blobs.keys()][1] as string;
    const hex = digest.slice(7);
    const data = join(registry.storage, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
    const bytes = readFileSync(data);
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0xff;
    writeFileSync(data, bytes);
    const cacheDir = join(tmp.path, "corrupt-cache");
    await assert.rejects(
      pull({ reference: `${registry.address}/banger/corrupt:v1`, cache: new BlobCache(cacheDir) }),
      (error: BangerError) => {
        assert.equal(error.code, "IMAGE_INVALID");
        assert.match(error.message, new RegExp(digest));
        return true;
      },
    );
    assert.deepEqual(readdirSync(join(cacheDir, "sha256")), []);
  });

  test("a layer bigger than declared is cut off", async () => {
    const layer = await makeTar([{ header: { name: "big.bin" }, body: "x".repeat(100_000) }]);
    const blob = gzipSync(layer.tar, { level: 0 });
    await pushRaw(
      registry,
      "banger/big",
      "v1",
      rawImage([{ blob, diffId: layer.diffId, declaredSize: 1000 }]),
    );
    await assert.rejects(pull({ reference: `${registry.address}/banger/big:v1` }), (error: BangerError) => {
      assert.equal(error.code, "IMAGE_INVALID");
      assert.match(error.message, /larger than its declared 1000 bytes/);
      return true;
    });
  });

  test("a wrong diff_id fails naming the layer", async () => {
    const layer = await makeTar([{ header: { name: "x.txt" }, body: "x\n" }]);
    const other = await makeTar([{ header: { name: "y.txt" }, body: "y\n" }]);
    await pushRaw(
      registry,
      "banger/diffid",
      "v1",
      rawImage([{ blob: gzipSync(layer.tar), diffId: other.diffId }]),
    );
    await assert.rejects(
      pull({ reference: `${registry.address}/banger/diffid:v1` }),
      (error: BangerError) => {
        assert.equal(error.code, "IMAGE_INVALID");
        assert.match(error.message, /layer 1 .*diff_id/);
        return true;
      },
    );
  });

  test("503s and connection resets are retried with backoff; a server that keeps failing is IMAGE_PULL_FAILED", async () => {
    const seen = new Map<string, number>();
    let alwaysFail = false;
    const flaky = createServer(async (req, res) => {
      const count = (seen.get(req.url ?? "") ?? 0) + 1;
      seen.set(req.url ?? "", count);
      if (alwaysFail || (req.url?.includes("/blobs/") && count === 1)) {
        if (count % 2 === 1) res.writeHead(503, { "retry-after": "0" }).end();
        else req.socket.destroy();
        return;
      }
      const upstream = await fetch(`http://${registry.address}${req.url}`, {
        headers: { accept: req.headers.accept ?? "" },
      });
      res
        .writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" })
        .end(Buffer.from(await upstream.arrayBuffer()));
    });
    await once(flaky.listen(0, "127.0.0.1"), "listening");
    try {
      const port = (flaky.address() as AddressInfo).port;
      const { tree } = await pull({ reference: `127.0.0.1:${port}/banger/fixture:v1` });
      assert.equal(describeTree(tree), expected);
      const blobTries = [...seen].filter(([url]) => url.includes("/blobs/")).map(([, count]) => count);
      assert.ok(blobTries.length >= 5 && blobTries.every((count) => count === 2), JSON.stringify(blobTries));
      alwaysFail = true;
      await assert.rejects(pull({ reference: `127.0.0.1:${port}/banger/other:v1` }), (error: BangerError) => {
        assert.equal(error.code, "IMAGE_PULL_FAILED");
        assert.match(error.message, /127\.0\.0\.1:\d+/);
        return true;
      });
    } finally {
      await closeServer(flaky);
    }
  });

  test("a redirect to another origin drops the Authorization header", async () => {
    const cdnSaw: (string | undefined)[] = [];
    const cdn = createServer(async (req, res) => {
      cdnSaw.push(req.headers.authorization);
      const upstream = await fetch(`http://${registry.address}${req.url}`);
      res.writeHead(upstream.status).end(Buffer.from(await upstream.arrayBuffer()));
    });
    const front = createServer(async (req, res) => {
      if (req.headers.authorization !== `Basic ${Buffer.from("tester:s3cret").toString("base64")}`) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="front"' }).end();
        return;
      }
      if (req.url?.includes("/blobs/")) {
        res
          .writeHead(307, { location: `http://127.0.0.1:${(cdn.address() as AddressInfo).port}${req.url}` })
          .end();
        return;
      }
      const upstream = await fetch(`http://${registry.address}${req.url}`, {
        headers: { accept: req.headers.accept ?? "" },
      });
      res
        .writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" })
        .end(Buffer.from(await upstream.arrayBuffer()));
    });
    await Promise.all([
      once(cdn.listen(0, "127.0.0.1"), "listening"),
      once(front.listen(0, "127.0.0.1"), "listening"),
    ]);
    try {
      const port = (front.address() as AddressInfo).port;
      const { tree } = await pull({
        reference: `127.0.0.1:${port}/banger/fixture:v1`,
        credentials: TEST_USER,
      });
      assert.equal(describeTree(tree), expected);
      assert.ok(cdnSaw.length >= 5);
      assert.deepEqual(new Set(cdnSaw), new Set([undefined]));
    } finally {
      await Promise.all([closeServer(cdn), closeServer(front)]);
    }
  });
});

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

for (const auth of ["htpasswd", "token"] as const) {
  describe(`registry with ${auth} auth`, () => {
    let registry: TestRegistry;
    before(async () => {
      const dir = join(tmp.path, `reg-${auth}`);
      mkdirSync(dir);
      registry = await startRegistry(dir, auth);
      await pushToRegistry(registry, `oci:${join(fixture, "oci")}:v1`, "banger/private:v1");
    });
    after(() => registry.stop());

    test("pulls with the right credentials", async () => {
      const { tree } = await pull({
        reference: `${registry.address}/banger/private:v1`,
        credentials: TEST_USER,
      });
      assert.equal(describeTree(tree), expected);
      if (auth === "token")
        assert.ok(
          registry.tokenRequests.some(
            (line) => line.includes("scope=repository%3Abanger%2Fprivate%3Apull") && line.endsWith("Basic"),
          ),
        );
    });

    test("wrong credentials are REGISTRY_UNAUTHORIZED", async () => {
      await assert.rejects(
        pull({
          reference: `${registry.address}/banger/private:v1`,
          credentials: { username: "tester", password: "nope" },
        }),
        (error: BangerError) => {
          assert.equal(error.code, "REGISTRY_UNAUTHORIZED");
          assert.match(error.message, /banger\/private/);
          assert.match(error.hint ?? "", /image login/);
          return true;
        },
      );
    });

    test(
      auth === "token" ? "anonymous pulls get an anonymous token" : "no credentials is REGISTRY_UNAUTHORIZED",
      async () => {
        const pulling = pull({ reference: `${registry.address}/banger/private:v1` });
        if (auth === "token") {
          await pulling;
          assert.ok(registry.tokenRequests.some((line) => line.endsWith("anonymous")));
        } else {
          await assert.rejects(pulling, { code: "REGISTRY_UNAUTHORIZED" });
        }
      },
    );
  });
}
