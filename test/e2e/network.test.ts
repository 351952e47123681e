/**
 * Host networking on real guests, against an "upstream" namespace that
 * plays the internet (test/helpers/upstream.ts): NAT egress with the
 * uplink as the source, names both ways, isolation (no daemon-namespace
 * service but DNS, no spoofed source), 10 MB both ways through a published
 * port and through `vm port-forward`, `vm ports`, an egress list and its
 * live switch, exactly one copy of every rule and the published port back
 * after a kill -9 and restart, nothing left after delete and
 * `daemon stop --stop-vms`, and all of it back with the next daemon's VM. QEMU runs all of it; the Firecracker double the
 * NAT and DNS cases.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { daemonPid, TEST_IMAGE_ENV } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { createUpstream, UPLINK, UPSTREAM, UPSTREAM_OTHER, type Upstream } from "../helpers/upstream.ts";
import { vmmConfig } from "./vm-suite.ts";

const ZONE = { "www.example.test": UPSTREAM, "other.example.test": UPSTREAM_OTHER };
const DNS_QUERY = join(import.meta.dirname, "..", "helpers", "dns-query.ts");
const ECHO_CHECK = join(import.meta.dirname, "..", "helpers", "echo-check.ts");
const TEN_MB = 10 * 1024 * 1024;
/** A busybox echo server on port 8080 in the guest, detached from the exec session. */
const ECHO_SERVER = "setsid busybox nc -ll -p 8080 -e /bin/cat </dev/null >/dev/null 2>&1 & sleep 0.5";

function echoCheck(netns: string | undefined, port: number): string {
  const argv = [process.execPath, ECHO_CHECK, "127.0.0.1", String(port), String(TEN_MB)];
  const [command, ...args] = netns === undefined ? argv : ["ip", "netns", "exec", netns, ...argv];
  return execFileSync(command as string, args, { encoding: "utf8", timeout: 180_000 }).trim();
}

function nftRules(netns: string): string[] {
  const json = JSON.parse(
    execFileSync("ip", ["netns", "exec", netns, "nft", "-j", "list", "ruleset"], { encoding: "utf8" }),
  ) as {
    nftables: Array<{ rule?: { family: string; table: string; chain: string; expr: unknown } }>;
  };
  return json.nftables.flatMap((entry) =>
    entry.rule
      ? [`${entry.rule.family} ${entry.rule.table} ${entry.rule.chain} ${JSON.stringify(entry.rule.expr)}`]
      : [],
  );
}

function dnsQuery(netns: string, server: string, name: string, type = "A", transport = "udp") {
  const out = execFileSync(
    "ip",
    ["netns", "exec", netns, process.execPath, DNS_QUERY, server, name, type, transport],
    {
      encoding: "utf8",
    },
  );
  return JSON.parse(out) as { rcode: string; answers: string[] };
}

function defineNetworkSuite(vmm: "qemu" | "firecracker"): void {
  describe(`host networking on real guests (${vmm})`, { skip: e2eSkipReason() }, () => {
    let env: E2eEnv;
    let upstream: Upstream;
    const ips = new Map<string, string>();
    const inGuest = (name: string, script: string) =>
      env.banger(["vm", "exec", name, "--", "sh", "-c", script], { timeoutMs: 120_000 });

    before(async () => {
      // The Firecracker run also proves network.vm_to_vm = false.
      const network = vmm === "qemu" ? "" : "\n[network]\nvm_to_vm = false\n";
      env = createE2eEnv({ name: `net-${vmm.slice(0, 2)}`, config: vmmConfig(vmm) + network });
      upstream = await createUpstream({ daemonNetns: env.netns, zone: ZONE });
      const names = vmm === "qemu" ? ["web", "cli", "eg"] : ["solo", "peer"];
      const extra: Record<string, string[]> = {
        web: ["--publish", "127.0.0.1:18080:8080"],
        eg: ["--egress", "www.example.test"],
      };
      for (const name of names) {
        const created = await env.banger(["vm", "create", name, ...(extra[name] ?? []), "--json"]);
        assert.equal(created.code, 0, created.stderr);
        ips.set(name, (JSON.parse(created.stdout) as { guestIp: string }).guestIp);
      }
    });

    after(async () => {
      await env?.dispose();
      await upstream?.dispose();
    });

    /** The daemon log's last DNS lines, for failure messages. */
    const dnsLog = () =>
      readFileSync(join(env.home, "state", "bangerd.log"), "utf8")
        .split("\n")
        .filter((line) => /dns|refused|egress/i.test(line))
        .slice(-10)
        .join("\n");
    const client = vmm === "qemu" ? "cli" : "solo";
    const server = vmm === "qemu" ? "web" : "peer";

    it("reaches the uplink through NAT: the upstream sees the uplink address", async () => {
      const whoami = await inGuest(client, `curl -sS -m 20 http://${UPSTREAM}/whoami`);
      assert.equal(whoami.code, 0, whoami.stderr);
      assert.equal(whoami.stdout.trim(), UPLINK);
    });

    it("resolves VM names both ways and upstream names inside the guest, and .vm names in the daemon's namespace", async () => {
      const ip = ips.get(server) as string;
      const forward = await inGuest(client, `getent hosts ${server}.vm && getent hosts ${server}`);
      assert.equal(forward.code, 0, forward.stderr);
      assert.deepEqual(
        forward.stdout
          .trim()
          .split("\n")
          .map((line) => line.split(/\s+/)),
        [
          [ip, `${server}.vm`],
          [ip, `${server}.vm`],
        ],
      );
      const reverse = await inGuest(client, `getent hosts ${ip}`);
      assert.match(reverse.stdout, new RegExp(`^${ip.replaceAll(".", "\\.")}\\s+${server}\\.vm$`, "m"));
      const upstreamName = await inGuest(
        client,
        "getent hosts www.example.test && curl -sS -m 20 http://www.example.test/",
      );
      assert.equal(upstreamName.code, 0, upstreamName.stderr);
      assert.match(
        upstreamName.stdout,
        new RegExp(`^${UPSTREAM.replaceAll(".", "\\.")}\\s+www\\.example\\.test`, "m"),
      );
      assert.match(upstreamName.stdout, /hello from 198\.51\.100\.1/);
      const missing = await inGuest(client, "getent hosts nope.vm; echo exit=$?");
      assert.match(missing.stdout, /exit=2/);

      for (const [target, transport] of [
        ["127.0.0.1", "udp"],
        ["127.0.0.1", "tcp"],
        ["10.77.0.1", "udp"],
        ["10.77.0.1", "tcp"],
      ] as const) {
        assert.deepEqual(
          dnsQuery(env.netns, target, `${server}.vm`, "A", transport),
          { rcode: "NOERROR", answers: [ip] },
          `${target}/${transport}\n${dnsLog()}`,
        );
      }
      assert.deepEqual(dnsQuery(env.netns, "127.0.0.1", "nope.vm"), { rcode: "NXDOMAIN", answers: [] });
    });

    it("is not an open resolver: the uplink side gets no answer from the gateway", () => {
      execFileSync("ip", ["-n", upstream.netns, "route", "add", "10.77.0.0/24", "via", UPLINK]);
      for (const target of ["10.77.0.1", UPLINK]) {
        for (const transport of ["udp", "tcp"]) {
          assert.throws(
            () => dnsQuery(upstream.netns, target, "www.example.test", "A", transport),
            `${target}/${transport}`,
          );
        }
      }
    });

    if (vmm !== "qemu") {
      it("with vm_to_vm = false, a guest resolves another VM's name but cannot reach it", async () => {
        const probe = await inGuest(
          "solo",
          "getent hosts peer.vm >/dev/null && echo resolved; timeout 5 bash -c '</dev/tcp/peer.vm/22' && echo reached; exit 0",
        );
        assert.match(probe.stdout, /resolved/);
        assert.doesNotMatch(probe.stdout, /reached/);
        const direct = await inGuest("peer", "true");
        assert.equal(direct.code, 0, "the daemon still reaches both");
      });
      return;
    }

    it("keeps guests away from daemon-namespace services other than DNS", async () => {
      const listener = spawn(
        "ip",
        [
          "netns",
          "exec",
          env.netns,
          process.execPath,
          "-e",
          "require('node:http').createServer((q,s)=>s.end('secret')).listen(8099)",
        ],
        { stdio: "ignore" },
      );
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        const local = execFileSync(
          "ip",
          ["netns", "exec", env.netns, "curl", "-sS", "-m", "5", "http://127.0.0.1:8099/"],
          {
            encoding: "utf8",
          },
        );
        assert.equal(local, "secret", "the listener is up");
        const probe = await inGuest(
          client,
          `for a in 10.77.0.1 ${UPLINK}; do curl -sS -m 3 http://$a:8099/ && echo reached-$a; done; exit 0`,
        );
        assert.doesNotMatch(probe.stdout, /reached|secret/);
      } finally {
        listener.kill("SIGTERM");
      }
    });

    it("drops a guest's packets sent with a source address that is not its own", async () => {
      const spoof = await inGuest(
        client,
        "ip addr add 10.77.0.200/24 dev eth0 && curl -sS -m 5 --interface 10.77.0.200 http://198.51.100.1/whoami; echo exit=$?; ip addr del 10.77.0.200/24 dev eth0",
      );
      assert.match(spoof.stdout, /exit=(7|28)/, spoof.stdout + spoof.stderr);
      const honest = await inGuest(client, `curl -sS -m 20 http://${UPSTREAM}/whoami`);
      assert.equal(honest.stdout.trim(), UPLINK, "the guest's own address still works");
    });

    it("carries 10 MB both ways through a published port, shows it, and lists the guest's sockets", async () => {
      const server = await inGuest("web", ECHO_SERVER);
      assert.equal(server.code, 0, server.stderr);
      assert.equal(echoCheck(env.netns, 18080), `sent=${TEN_MB} received=${TEN_MB} same=true`);
      const show = await env.banger(["vm", "show", "web", "--json"]);
      assert.equal(show.code, 0, show.stderr);
      const shown = JSON.parse(show.stdout) as { ports: string[] };
      assert.deepEqual(shown.ports, ["127.0.0.1:18080->8080/tcp"]);
      const listed = await env.banger(["vm", "ports", "web", "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      const ports = JSON.parse(listed.stdout) as {
        sockets: { protocol: string; port: number; process: string | null }[];
      };
      assert.ok(ports.sockets.some((socket) => socket.port === 22 && socket.process === "sshd"));
      assert.ok(ports.sockets.some((socket) => socket.port === 8080 && socket.protocol.startsWith("tcp")));
      const busy = await env.banger(["vm", "create", "clash", "--publish", "127.0.0.1:18080:80"]);
      assert.notEqual(busy.code, 0);
      assert.match(busy.stderr, /host port 127\.0\.0\.1:18080\/tcp is in use/);
      assert.notEqual((await env.banger(["vm", "show", "clash"])).code, 0, "the failed create left no VM");
    });

    it("carries 10 MB both ways through vm port-forward, run from the host's namespace", async () => {
      const forward = spawn(
        join(import.meta.dirname, "..", "..", "bin", "banger"),
        ["vm", "port-forward", "web", "0:8080"],
        {
          env: { ...TEST_IMAGE_ENV, ...process.env, BANGER_HOME: env.home, BANGER_NETNS: env.netns },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      try {
        const port = await new Promise<number>((resolve, reject) => {
          let out = "";
          forward.stdout.on("data", (chunk: Buffer) => {
            out += chunk.toString();
            const match = /127\.0\.0\.1:(\d+) ->/.exec(out);
            if (match) resolve(Number(match[1]));
          });
          forward.once("exit", (code) => reject(new Error(`port-forward exited with ${code}`)));
        });
        assert.equal(echoCheck(undefined, port), `sent=${TEN_MB} received=${TEN_MB} same=true`);
      } finally {
        forward.kill("SIGINT");
      }
      const code = await new Promise((resolve) => forward.once("exit", resolve));
      assert.equal(code, 0);
    });

    it("holds an egress list: allowed names load, others do not resolve, their raw address is unreachable", async () => {
      const allowed = await inGuest("eg", "curl -sS -m 20 http://www.example.test/");
      assert.equal(allowed.code, 0, `${allowed.stderr}\n${dnsLog()}`);
      assert.match(allowed.stdout, /hello from 198\.51\.100\.1/);
      const other = await inGuest("eg", "getent hosts other.example.test; echo exit=$?");
      assert.match(other.stdout, /exit=2/);
      const raw = await inGuest("eg", `curl -sS -m 5 http://${UPSTREAM_OTHER}/; echo exit=$?`);
      assert.match(raw.stdout, /exit=28/);
      const stats = JSON.parse((await env.banger(["vm", "stats", "eg", "--json"])).stdout) as {
        egressDropped: number;
      };
      assert.ok(stats.egressDropped > 0, `dropped: ${stats.egressDropped}`);

      const opened = await env.banger(["vm", "set", "eg", "--egress", "allow"]);
      assert.equal(opened.code, 0, opened.stderr);
      const now = await inGuest(
        "eg",
        `getent hosts other.example.test && curl -sS -m 20 http://${UPSTREAM_OTHER}/`,
      );
      assert.equal(now.code, 0, now.stderr);
      assert.match(now.stdout, /hello from 198\.51\.100\.3/);

      assert.equal((await env.banger(["vm", "set", "eg", "--egress", "deny"])).code, 0);
      const denied = await inGuest("eg", `curl -sS -m 5 http://${UPSTREAM}/; echo exit=$?`);
      assert.match(denied.stdout, /exit=28/);
      const names = await inGuest(
        "eg",
        "getent hosts web.vm; echo vm=$?; getent hosts www.example.test; echo up=$?",
      );
      assert.match(names.stdout, /vm=0/, "DNS to the gateway still answers VM names");
      assert.match(names.stdout, /up=2/, "no other name resolves");
      const shown = JSON.parse((await env.banger(["vm", "show", "eg", "--json"])).stdout) as {
        egress: string;
      };
      assert.equal(shown.egress, "deny");
    });

    it("has exactly one copy of every rule after a kill -9 and restart, DNS answers again and the published port is back", async () => {
      const before = nftRules(env.netns).sort();
      assert.ok(before.length >= 10, `rules: ${before.length}`);
      const pid = daemonPid(env.home) as number;
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++)
        await new Promise((resolve) => setTimeout(resolve, 100));
      const list = await env.banger(["vm", "ls"]);
      assert.equal(list.code, 0, list.stderr);
      assert.notEqual(daemonPid(env.home), pid);
      assert.deepEqual(nftRules(env.netns).sort(), before);
      const again = await inGuest(
        client,
        `getent hosts ${server}.vm && curl -sS -m 20 http://${UPSTREAM}/whoami`,
      );
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(UPLINK.replaceAll(".", "\\.")));
      if (vmm === "qemu") {
        assert.equal(
          echoCheck(env.netns, 18080),
          `sent=${TEN_MB} received=${TEN_MB} same=true`,
          "the published port is back",
        );
      }
    });

    it("leaves no table, bridge or tap after every VM is deleted and the daemon stops with --stop-vms; the next daemon makes them again", async () => {
      const warm = execFileSync("ip", ["-n", env.netns, "-o", "link", "show", "type", "tun"], {
        encoding: "utf8",
      });
      assert.match(warm, /bgp-\d+: .*master banger0/, "the TAP pool holds warm taps on the bridge");
      for (const name of ips.keys())
        assert.equal((await env.banger(["vm", "delete", "--force", name])).code, 0);
      const stopped = await env.banger(["daemon", "stop", "--stop-vms"]);
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.deepEqual(nftRules(env.netns), []);
      const links = execFileSync("ip", ["-n", env.netns, "-o", "link", "show"], { encoding: "utf8" });
      assert.doesNotMatch(links, /banger0|bgr-|bgp-/);
      assert.equal(
        execFileSync("ip", ["netns", "exec", env.netns, "cat", "/proc/sys/net/ipv4/ip_forward"], {
          encoding: "utf8",
        }).trim(),
        "0",
        "ip_forward is restored",
      );

      const next = await env.banger(["vm", "create", "again", "--json"]);
      assert.equal(next.code, 0, next.stderr);
      assert.ok(nftRules(env.netns).length >= 10, "the next daemon's first VM brings the tables back");
      assert.match(
        execFileSync("ip", ["-n", env.netns, "-o", "link", "show"], { encoding: "utf8" }),
        /banger0/,
      );
      assert.equal(
        (await inGuest("again", `getent hosts again.vm && curl -sS -m 20 http://${UPSTREAM}/whoami`)).code,
        0,
      );
      assert.equal((await env.banger(["vm", "delete", "--force", "again"])).code, 0);
    });
  });
}

defineNetworkSuite("qemu");
defineNetworkSuite("firecracker");
