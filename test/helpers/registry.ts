/**
 * A real OCI registry on 127.0.0.1 for tests: Debian's `docker-registry`
 * (CNCF distribution 2.8) with its own config and storage in a temp dir,
 * no auth, htpasswd (tester / s3cret) or token auth (a small RS256 token
 * server in this process), stopped by pid. Also the fixture image maker
 * (test/fixtures/oci/make-fixture.sh) and skopeo pushes into the registry.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { createHash, createPrivateKey, type KeyObject, sign, X509Certificate } from "node:crypto";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Header, pack as tarPack } from "tar-stream";

const execFileAsync = promisify(execFile);

export const FIXTURE_SCRIPT = new URL("../fixtures/oci/make-fixture.sh", import.meta.url).pathname;
export const TEST_USER = { username: "tester", password: "s3cret" };
const HTPASSWD = "tester:$2y$05$3fqReDaoXiTuz.oa0fGL5O1m98QikyzD/vawJ5lf.wjcYCNe0Mq7q\n";

export type RegistryAuth = "none" | "htpasswd" | "token";

export interface TestRegistry {
  /** host:port */
  address: string;
  auth: RegistryAuth;
  /** Token requests seen by the token server (token auth only). */
  tokenRequests: string[];
  /** The registry's storage root (for corrupting blobs). */
  storage: string;
  stop(): Promise<void>;
}

export async function startRegistry(dir: string, auth: RegistryAuth = "none"): Promise<TestRegistry> {
  const storage = join(dir, "regdata");
  const tokenRequests: string[] = [];
  let tokenServer: Server | undefined;
  let authYaml = "";
  if (auth === "htpasswd") {
    writeFileSync(join(dir, "htpasswd"), HTPASSWD);
    authYaml = `auth:\n  htpasswd:\n    realm: banger-test\n    path: ${join(dir, "htpasswd")}\n`;
  }
  if (auth === "token") {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        join(dir, "token.key"),
        "-out",
        join(dir, "token.crt"),
        "-days",
        "3650",
        "-subj",
        "/CN=banger-test-token-issuer",
      ],
      { stdio: "ignore" },
    );
    tokenServer = startTokenServer(
      createPrivateKey(readFileSync(join(dir, "token.key"))),
      readFileSync(join(dir, "token.crt")),
      tokenRequests,
    );
    await once(tokenServer.listen(0, "127.0.0.1"), "listening");
    const port = (tokenServer.address() as AddressInfo).port;
    authYaml = `auth:\n  token:\n    realm: http://127.0.0.1:${port}/token\n    service: banger-test-registry\n    issuer: banger-test-issuer\n    rootcertbundle: ${join(dir, "token.crt")}\n`;
  }
  const config = join(dir, "registry.yml");
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: info\n  accesslog: {disabled: true}\nstorage:\n  filesystem: {rootdirectory: ${storage}}\n  delete: {enabled: true}\nhttp:\n  addr: "127.0.0.1:0"\n  secret: test-only-secret\n${authYaml}`,
  );
  const child = spawn("docker-registry", ["serve", config], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`docker-registry did not start: ${log}`)), 15_000);
    child.once("exit", (code) => reject(new Error(`docker-registry exited with ${code}: ${log}`)));
    child.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      const match = /listening on "?([0-9.:]+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] as string);
      }
    });
  });
  child.stderr.resume();
  return {
    address,
    auth,
    tokenRequests,
    storage,
    async stop() {
      if (child.exitCode === null) {
        const exited = once(child, "exit");
        process.kill(child.pid as number, "SIGTERM");
        await exited;
      }
      if (tokenServer) await new Promise((resolve) => tokenServer?.close(resolve));
    },
  };
}

function startTokenServer(key: KeyObject, certPem: Buffer, seen: string[]): Server {
  const certDer = new X509Certificate(certPem).raw;
  const b64u = (value: string | Buffer): string => Buffer.from(value).toString("base64url");
  const issue = (claims: object): string => {
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer.toString("base64")] };
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
    return `${input}.${b64u(sign("sha256", Buffer.from(input), key))}`;
  };
  return createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const auth = req.headers.authorization ?? "";
    seen.push(`${url.search} ${auth ? auth.split(" ")[0] : "anonymous"}`);
    const user = auth.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString() : "";
    if (user && user !== `${TEST_USER.username}:${TEST_USER.password}`) {
      res.writeHead(401).end('{"details":"bad creds"}');
      return;
    }
    const access = url.searchParams.getAll("scope").map((scope) => {
      const [type, ...rest] = scope.split(":");
      const actions = (rest.pop() ?? "").split(",").filter((action) => user !== "" || action === "pull");
      return { type, name: rest.join(":"), actions };
    });
    const now = Math.floor(Date.now() / 1000);
    const token = issue({
      iss: "banger-test-issuer",
      sub: user.split(":")[0] ?? "",
      aud: url.searchParams.get("service"),
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: `${now}-${Math.random()}`,
      access,
    });
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
}

/** Builds the fixture images (make-fixture.sh) into `out`. */
export function makeFixture(out: string): void {
  execFileSync(FIXTURE_SCRIPT, [out], { stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * skopeo copy SRC docker://ADDRESS/REPO with the test credentials when the
 * registry needs them. Asynchronous: the token server runs in this process.
 */
export async function pushToRegistry(
  registry: TestRegistry,
  source: string,
  target: string,
  extra: string[] = [],
): Promise<void> {
  const creds =
    registry.auth === "none" ? [] : ["--dest-creds", `${TEST_USER.username}:${TEST_USER.password}`];
  await execFileAsync("skopeo", [
    "copy",
    "-q",
    "--dest-tls-verify=false",
    ...creds,
    ...extra,
    source,
    `docker://${registry.address}/${target}`,
  ]);
}

/** `find` listing of a tree for comparison: type and mode, owner, links, size (not for dirs), path, link target. */
export function describeTree(root: string): string {
  return execFileSync("find", [".", "-mindepth", "1", "-printf", "%M %U:%G %n %s %p %l\\n"], {
    cwd: root,
    encoding: "utf8",
  })
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => line.replace(/^(d\S+ \S+ )\d+ \d+ /, "$1- - "))
    .sort((a, b) => (a.split(" ")[4] ?? "").localeCompare(b.split(" ")[4] ?? ""))
    .join("\n");
}

export interface RawImage {
  manifest: Buffer;
  manifestDigest: string;
  blobs: Map<string, Buffer>;
}

const sha = (bytes: Buffer): string => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/**
 * An OCI image made directly from layer blobs: `layers[i].blob` as stored,
 * `diffId` of its plain tar. Options override sizes or diff_ids to make
 * hostile images.
 */
export function rawImage(
  layers: { blob: Buffer; diffId: string; mediaType?: string; declaredSize?: number }[],
  config: object = {},
): RawImage {
  const configBytes = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {},
      ...config,
      rootfs: { type: "layers", diff_ids: layers.map((layer) => layer.diffId) },
    }),
  );
  const blobs = new Map<string, Buffer>([[sha(configBytes), configBytes]]);
  for (const layer of layers) blobs.set(sha(layer.blob), layer.blob);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: sha(configBytes),
        size: configBytes.length,
      },
      layers: layers.map((layer) => ({
        mediaType: layer.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: sha(layer.blob),
        size: layer.declaredSize ?? layer.blob.length,
      })),
    }),
  );
  return { manifest, manifestDigest: sha(manifest), blobs };
}

/** Pushes blobs and a manifest verbatim (monolithic uploads), as `push-raw.sh` does with curl. */
export async function pushRaw(
  registry: TestRegistry,
  repo: string,
  tag: string,
  image: RawImage,
): Promise<void> {
  const base = `http://${registry.address}`;
  const headers: Record<string, string> =
    registry.auth === "htpasswd"
      ? {
          authorization: `Basic ${Buffer.from(`${TEST_USER.username}:${TEST_USER.password}`).toString("base64")}`,
        }
      : {};
  for (const [digest, bytes] of image.blobs) {
    const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST", headers });
    if (start.status !== 202) throw new Error(`upload start: ${start.status} ${await start.text()}`);
    const location = new URL(start.headers.get("location") ?? "", base);
    location.searchParams.set("digest", digest);
    const put = await fetch(location, {
      method: "PUT",
      headers: { ...headers, "content-type": "application/octet-stream" },
      body: bytes,
    });
    if (put.status !== 201) throw new Error(`upload ${digest}: ${put.status} ${await put.text()}`);
  }
  const put = await fetch(`${base}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    headers: { ...headers, "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: image.manifest,
  });
  if (put.status !== 201) throw new Error(`manifest ${tag}: ${put.status} ${await put.text()}`);
}

/** A plain tar made with tar-stream from entries; returns the tar and its diff_id. */
export async function makeTar(
  entries: { header: Partial<Header> & { name: string }; body?: string | Buffer }[],
): Promise<{ tar: Buffer; diffId: string }> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on("data", (chunk) => chunks.push(chunk as Buffer));
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ mode: 0o644, mtime: new Date(0), ...entry.header }, entry.body ?? "", (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  }
  pack.finalize();
  await done;
  const tar = Buffer.concat(chunks);
  return { tar, diffId: sha(tar) };
}
