/**
 * The networking commands against a fake daemon client: `vm ports` as a
 * table and as JSON, `vm port-forward` refusing a bad spec before it asks
 * the daemon, `vm create --publish/--egress` and `vm set --egress` sending
 * what the daemon expects, and the daemon's errors reaching the user.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BangerError, ErrorCode, exitStatusFor } from "../../src/protocol/index.ts";
import { FakeDaemonClient, fakeCli, fakeVmInfo as vmInfo } from "../fakes/cli.ts";

const sockets = [
  { protocol: "tcp" as const, address: "0.0.0.0", port: 22, process: "sshd", pid: 310 },
  { protocol: "udp" as const, address: "0.0.0.0", port: 5353, process: null, pid: null },
];

describe("vm ports", () => {
  it("lists the guest's sockets as a table, and as the daemon's JSON with --json", async () => {
    const client = new FakeDaemonClient({ "vm.ports": (params) => ({ name: params.name, sockets }) });
    const table = fakeCli({ client });
    assert.equal(await table.run(["vm", "ports", "web"]), 0);
    const lines = table.stdout().trimEnd().split("\n");
    assert.match(lines[0]!, /^PROTO\s+ADDRESS\s+PORT\s+PROCESS$/i);
    assert.match(lines[1]!, /^tcp\s+0\.0\.0\.0\s+22\s+sshd \(310\)$/);
    assert.match(lines[2]!, /^udp\s+0\.0\.0\.0\s+5353\s+-$/);
    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["vm", "ports", "web", "--json"]), 0);
    assert.deepEqual(JSON.parse(asJson.stdout()), { name: "web", sockets });
    assert.deepEqual(client.callsOf("vm.ports")[0]!.params, { name: "web" });
  });

  it("a guest that does not answer exits with GUEST_UNREACHABLE's status, the message and its hint", async () => {
    const client = new FakeDaemonClient({
      "vm.ports": () => {
        throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "web did not list its sockets within 15 s", {
          hint: "check that the guest is responsive: `banger vm exec web -- true`",
        });
      },
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "ports", "web"]), exitStatusFor[ErrorCode.GUEST_UNREACHABLE]);
    assert.match(
      cli.stderr(),
      /^banger: web did not list its sockets within 15 s\nhint: check that the guest/,
    );
  });
});

describe("vm port-forward", () => {
  it("refuses a spec it cannot read, naming it, before asking the daemon", async () => {
    const client = new FakeDaemonClient({});
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "port-forward", "web", "80:http"]),
      exitStatusFor[ErrorCode.INVALID_PARAMS],
    );
    assert.match(
      cli.stderr(),
      /port-forward '80:http': the guest port 'http' is not a number\nhint: use \[LOCAL_PORT:\]GUEST_PORT/,
    );
    assert.equal(client.calls.length, 0);
  });
});

describe("published ports and egress", () => {
  it("vm create sends --publish (repeated) and --egress as given, for the daemon to check", async () => {
    const client = new FakeDaemonClient({
      "vm.create.begin": () => {
        throw new BangerError(ErrorCode.INVALID_PARAMS, "--publish '8080': expected HOST_PORT:GUEST_PORT", {
          hint: "use [HOST_IP:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80 or 0.0.0.0:5353:53/udp",
        });
      },
    });
    const cli = fakeCli({ client });
    const status = await cli.run([
      "vm",
      "create",
      "web",
      "-p",
      "8080:80",
      "--publish",
      "0.0.0.0:5353:53/udp",
      "--egress",
      "*.debian.org,registry.npmjs.org",
    ]);
    assert.equal(status, exitStatusFor[ErrorCode.INVALID_PARAMS]);
    const params = client.callsOf("vm.create.begin")[0]!.params as { publish?: string[]; egress?: string };
    assert.deepEqual(params.publish, ["8080:80", "0.0.0.0:5353:53/udp"]);
    assert.equal(params.egress, "*.debian.org,registry.npmjs.org");
    assert.match(cli.stderr(), /hint: use \[HOST_IP:\]HOST_PORT:GUEST_PORT/);
  });

  it("vm set --egress changes only the policy, through vm.egress", async () => {
    const client = new FakeDaemonClient({ "vm.egress": () => vmInfo() });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "set", "web", "--egress", "deny"]), 0);
    assert.deepEqual(client.callsOf("vm.egress")[0]!.params, { name: "web", egress: "deny" });
    assert.equal(client.callsOf("vm.set").length, 0);
  });
});
