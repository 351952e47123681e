/** ensureClientKey with the real ssh-keygen in a temp dir. */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { ensureClientKey } from "../../src/sys/ssh/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

describe("ensureClientKey", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-sshkey-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("generates an ed25519 key once with private modes", async () => {
    const sshDir = join(dir, "ssh");
    const key = await ensureClientKey(sshDir, createProcessRunner());
    assert.equal(key.privateKey, join(sshDir, "id_ed25519"));
    assert.match(key.publicKey, /^ssh-ed25519 [A-Za-z0-9+/=]+ banger$/);
    assert.equal((await stat(sshDir)).mode & 0o777, 0o700);
    assert.equal((await stat(key.privateKey)).mode & 0o777, 0o600);
    assert.deepEqual((await readdir(sshDir)).sort(), ["id_ed25519", "id_ed25519.pub"]);

    // A second call must not run ssh-keygen: the fake throws on any command.
    assert.deepEqual(await ensureClientKey(sshDir, new FakeRunner()), key);
  });

  it("re-derives a lost public key and tightens loose modes", async () => {
    const sshDir = join(dir, "ssh");
    const original = (await readFile(join(sshDir, "id_ed25519.pub"), "utf8")).trim();
    await rm(join(sshDir, "id_ed25519.pub"));
    await chmod(join(sshDir, "id_ed25519"), 0o644);
    await chmod(sshDir, 0o755);
    const key = await ensureClientKey(sshDir, createProcessRunner());
    assert.equal(key.publicKey.split(" ").slice(0, 2).join(" "), original.split(" ").slice(0, 2).join(" "));
    assert.equal((await stat(key.privateKey)).mode & 0o777, 0o600);
    assert.equal((await stat(sshDir)).mode & 0o777, 0o700);
  });
});
