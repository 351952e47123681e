/**
 * `banger vm ...`: create, list, show, start, stop, restart, kill, delete,
 * stats, health, logs, run, ssh (and the hidden proxy used as ssh's ProxyCommand);
 * the network commands (ports, port-forward) are in vm-network.ts.
 */
import { spawn } from "node:child_process";
import { type Command, Option } from "commander";
import { cancelled as cancelledError } from "../../core/async/index.ts";
import { shellQuoteArgv } from "../../core/ssh/index.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  exitStatusFor,
  type OperationInfo,
  type VmInfo,
} from "../../protocol/index.ts";
import { type CliContext, printJson, reportError } from "../context.ts";
import { createProgressRenderer } from "../render/progress.ts";
import { formatVmHealth, formatVmStats } from "../render/stats.ts";
import { formatAge, formatTable } from "../render/table.ts";
import type { RpcClient } from "../rpc/client.ts";
import { registerAuthCommands, syncAuthAfterStart } from "./auth.ts";
import { registerCpCommand } from "./cp.ts";
import { registerVmNetworkCommands } from "./vm-network.ts";
import { registerWorkspaceCommands } from "./workspace.ts";

interface SizingOptions {
  image?: string;
  cpus?: string;
  memory?: string;
  disk?: string;
  vmm?: string;
  publish?: string[];
  egress?: string;
}

export function registerVmCommands(program: Command, ctx: CliContext): void {
  const vm = program.command("vm").description("create, run and manage microVMs");
  registerWorkspaceCommands(vm, ctx);
  registerCpCommand(vm, ctx);
  registerAuthCommands(vm, ctx);

  withSizing(vm.command("create <name>"))
    .description("create a VM from an image and boot it")
    .option("--no-start", "create it stopped")
    .option("--json", "print the VM as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm create web\n  banger vm create build --cpus 2 --memory 2048 --disk 10\n  banger vm create idle --no-start\n  banger vm create web --publish 8080:80 --publish 0.0.0.0:5353:53/udp\n  banger vm create builder --egress '*.debian.org,registry.npmjs.org'",
    )
    .action(async (name: string, options: SizingOptions & { start: boolean; json?: boolean }) => {
      const client = await ctx.client();
      const created = await createWithProgress(ctx, client, {
        ...sizingParams(options),
        name,
        start: options.start,
      });
      if (options.json) printJson(ctx, created);
      else ctx.stdout.write(`${created.name}\n`);
    });

  vm.command("list")
    .alias("ls")
    .description("list VMs")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger vm ls\n  banger vm list --json | jq -r '.[].name'")
    .action(async (options: { json?: boolean }) => {
      const { vms } = await (await ctx.client()).call("vm.list", {});
      if (options.json) {
        printJson(ctx, vms);
        return;
      }
      const rows = vms.map((v) => [
        v.name,
        v.state,
        v.image,
        v.vmm,
        String(v.cpus),
        `${v.memoryMib}M`,
        `${v.diskGib}G`,
        v.guestIp,
        formatAge(v.createdAt),
        (v.ports ?? []).join(",") || "-",
      ]);
      ctx.stdout.write(
        `${formatTable(["name", "state", "image", "vmm", "cpus", "memory", "disk", "ip", "created", "ports"], rows)}\n`,
      );
    });

  vm.command("show <name>")
    .alias("inspect")
    .description("show one VM")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger vm show web\n  banger vm show web --json")
    .action(async (name: string, options: { json?: boolean }) => {
      const info = await (await ctx.client()).call("vm.show", { name });
      if (options.json) printJson(ctx, info);
      else ctx.stdout.write(`${describeVm(info)}\n`);
    });

  const multi = (
    verb: "start" | "stop" | "restart" | "kill" | "pause" | "resume" | "delete",
    description: string,
    example: string,
  ) =>
    vm
      .command(`${verb} <names...>`)
      .description(description)
      .addHelpText("after", `\nExamples:\n  ${example}`)
      .action(async (names: string[], options: { force?: boolean }) => {
        const client = await ctx.client();
        const progress = createProgressRenderer(ctx.stderr, false);
        const failures: string[] = [];
        for (const name of names) {
          try {
            if (verb === "delete") await deleteVm(ctx, client, name, options.force === true);
            else
              await client.call(
                `vm.${verb}`,
                { name },
                { onProgress: (event) => progress.onProgress(event) },
              );
            progress.finish();
            if (verb === "start" || verb === "restart") await syncAuthAfterStart(ctx, client, name);
            ctx.stdout.write(`${name}\n`);
          } catch (error) {
            progress.finish();
            failures.push(name);
            process.exitCode = reportError(ctx, error);
          }
        }
        if (failures.length > 0 && names.length > 1)
          ctx.stderr.write(`banger: ${verb} failed for: ${failures.join(", ")}\n`);
      });
  multi("start", "boot stopped VMs", "banger vm start web db");
  multi("stop", "shut VMs down gracefully (power button, then quit, then kill)", "banger vm stop web");
  multi("restart", "stop, then start VMs", "banger vm restart web");
  multi("kill", "stop VMs at once, without a graceful shutdown", "banger vm kill web");
  multi("pause", "freeze VMs' vCPUs; memory, disk and network stay as they are", "banger vm pause web");
  multi("resume", "let paused VMs run again", "banger vm resume web");
  multi(
    "delete",
    "delete VMs and everything they own (disk, tap, files); asks first when a workspace holds unexported work",
    "banger vm delete web db\n  banger vm delete --force box      # even with unexported workspace commits",
  )
    .alias("rm")
    .option("-f, --force", "delete even when the VM's workspace holds work no export has taken");

  vm.command("set <name>")
    .description(
      "change a stopped VM's vCPUs, memory or disk size (the disk only grows), or any VM's egress policy",
    )
    .option("--cpus <n>", "vCPUs")
    .option("--memory <mib>", "memory in MiB")
    .option("--disk <gib>", "root disk size in GiB; the guest's filesystem grows at its next boot")
    .option("--egress <policy>", "allow | deny | NAME,*.SUFFIX,...; a running VM changes at once")
    .option("--json", "print the VM as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm stop web && banger vm set web --cpus 4 --memory 4096 --disk 20 && banger vm start web\n  banger vm set web --egress 'pypi.org,*.pythonhosted.org'\n  banger vm set web --egress allow",
    )
    .action(
      async (
        name: string,
        options: { cpus?: string; memory?: string; disk?: string; egress?: string; json?: boolean },
      ) => {
        const changes = {
          ...(options.cpus === undefined ? {} : { cpus: integer("--cpus", options.cpus) }),
          ...(options.memory === undefined ? {} : { memoryMib: integer("--memory", options.memory) }),
          ...(options.disk === undefined ? {} : { diskGib: integer("--disk", options.disk) }),
        };
        if (Object.keys(changes).length === 0 && options.egress === undefined) {
          throw new BangerError(
            ErrorCode.INVALID_PARAMS,
            "vm set needs at least one of --cpus, --memory, --disk, --egress",
            {
              hint: `e.g. banger vm set ${name} --disk 20`,
            },
          );
        }
        const client = await ctx.client();
        let info =
          options.egress === undefined
            ? undefined
            : await client.call("vm.egress", { name, egress: options.egress });
        if (Object.keys(changes).length > 0) info = await client.call("vm.set", { name, ...changes });
        if (info === undefined) return;
        if (options.json) printJson(ctx, info);
        else ctx.stdout.write(`${describeVm(info)}\n`);
      },
    );

  registerVmNetworkCommands(vm, ctx);

  vm.command("stats <name>")
    .description(
      "show a VM's resource use: VMM CPU and memory, root disk on the host, and the guest's own view",
    )
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm stats web\n  banger vm stats web --json | jq '.vmm.rssBytes'\n\nCPU is sampled over 250 ms; 100% is one core. Guest numbers need the guest to answer SSH\nwithin a few seconds; otherwise they are null and guestUnavailable says why.",
    )
    .action(async (name: string, options: { json?: boolean }) => {
      const stats = await (await ctx.client()).call("vm.stats", { name });
      if (options.json) printJson(ctx, stats);
      else ctx.stdout.write(`${formatVmStats(stats)}\n`);
    });

  vm.command("health <name>")
    .description("check that a VM answers: VMM process alive, sshd banner, and `true` over SSH")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `\nExamples:\n  banger vm health web\n  banger vm health web --json | jq '.checks[] | select(.ok | not)'\n  until banger vm health web >/dev/null 2>&1; do sleep 1; done\n\nExits 0 when every check passes, ${exitStatusFor[ErrorCode.GUEST_UNREACHABLE]} when one fails.`,
    )
    .action(async (name: string, options: { json?: boolean }) => {
      const health = await (await ctx.client()).call("vm.health", { name });
      if (options.json) printJson(ctx, health);
      else ctx.stdout.write(`${formatVmHealth(health)}\n`);
      if (health.healthy) return;
      const failed = health.checks.filter((check) => !check.ok).map((check) => check.name);
      const first = health.checks.find((check) => !check.ok);
      ctx.stderr.write(
        `banger: VM '${health.name}' is not healthy: ${failed.join(", ")} failed${first ? ` (${first.name}: ${first.detail})` : ""}\n`,
      );
      process.exitCode = exitStatusFor[ErrorCode.GUEST_UNREACHABLE];
    });

  vm.command("logs <name>")
    .description("print a VM's serial console")
    .option("-f, --follow", "keep printing new output")
    .addHelpText("after", "\nExamples:\n  banger vm logs web\n  banger vm logs -f web")
    .action(async (name: string, options: { follow?: boolean }) => {
      const client = await ctx.client();
      const controller = new AbortController();
      process.once("SIGINT", () => controller.abort());
      await client
        .call(
          "vm.logs",
          { name, follow: options.follow === true },
          {
            signal: controller.signal,
            onStream: (_ch, data) => {
              if (data) ctx.stdout.write(data);
            },
          },
        )
        .catch((error: unknown) => {
          if (!controller.signal.aborted) throw error;
        });
    });

  withSizing(vm.command("run"))
    .description(
      "run a command in a VM: create it if needed, wait for it, stream its output, exit with its status; with an OCI image the command follows docker run (it replaces CMD after ENTRYPOINT; none runs both)",
    )
    .option("--name <name>", "use (or create) the VM with this name")
    .option("--rm", "delete the VM afterwards, also on Ctrl-C")
    .argument(
      "[command...]",
      "the command and its arguments (after --); an OCI image's ENTRYPOINT and CMD by default",
    )
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm run -- uname -a\n  banger vm run --rm -- make test\n  banger vm run --rm --image python:3.12-slim -- python3 -V\n  echo hi | banger vm run --name box -- cat\n  banger vm run --cpus 2 --memory 2048 -- nproc",
    )
    .action(async (command: string[], options: SizingOptions & { name?: string; rm?: boolean }) => {
      process.exitCode = await runInVm(ctx, command, options);
    });

  vm.command("ssh <name>")
    .description("open an interactive shell (or run a command) over SSH, through the daemon")
    .argument("[command...]", "a command to run instead of a shell")
    .addHelpText("after", "\nExamples:\n  banger vm ssh web\n  banger vm ssh web -- journalctl -n 20")
    .action(async (name: string, command: string[]) => {
      const client = await ctx.client();
      const config = await client.call("vm.ssh-config", { name });
      const proxy = shellQuoteArgv([`${ctx.root}/bin/banger`, "vm", "proxy", name, "22"]);
      const args = [
        "-F",
        "/dev/null",
        "-i",
        config.identityFile,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        `UserKnownHostsFile=${config.knownHostsFile}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        `HostKeyAlias=${config.host}`,
        "-o",
        `ProxyCommand=${proxy}`,
        "-o",
        "LogLevel=ERROR",
        `${config.user}@${name}`,
        ...(command.length > 0 ? ["--", ...command] : []),
      ];
      ctx.close();
      process.exitCode = await new Promise<number>((resolve) => {
        const child = spawn("ssh", args, { stdio: "inherit" });
        child.on("error", () => resolve(8));
        child.on("exit", (code) => resolve(code ?? 1));
      });
    });

  vm.command("proxy <name> <port>", { hidden: true })
    .description("relay stdin/stdout to a TCP port of a VM through the daemon (ssh ProxyCommand)")
    .action(async (name: string, port: string) => {
      const client = await ctx.client();
      const call = client.start(
        "vm.proxy",
        { name, port: Number(port) },
        {
          onStream: (_ch, data) => {
            if (data) process.stdout.write(data);
            else process.stdout.end();
          },
        },
      );
      process.stdin.on("data", (chunk: Buffer) => forwardPaced(call, "tcp", chunk));
      process.stdin.on("end", () => call.end("tcp"));
      await call.result;
    });
}

function withSizing(command: Command): Command {
  return command
    .option(
      "--image <ref>",
      "image name, or a registry reference pulled on first use (default: the configured default image)",
    )
    .option("--cpus <n>", "virtual CPUs")
    .option("--memory <mib>", "memory in MiB")
    .option("--disk <gib>", "root disk size in GiB")
    .addOption(new Option("--vmm <driver>", "VMM driver").choices(["auto", "qemu", "firecracker"]))
    .option(
      "-p, --publish <spec>",
      "publish a guest port on the host: [HOST_IP:]HOST_PORT:GUEST_PORT[/udp], repeatable",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option("--egress <policy>", "allow | deny | NAME,*.SUFFIX,... (default: config network.egress)");
}

function sizingParams(options: SizingOptions): CreateVmParams {
  const params: CreateVmParams = {};
  if (options.image) params.image = options.image;
  if (options.cpus !== undefined) params.cpus = integer("--cpus", options.cpus);
  if (options.memory !== undefined) params.memoryMib = integer("--memory", options.memory);
  if (options.disk !== undefined) params.diskGib = integer("--disk", options.disk);
  if (options.vmm && options.vmm !== "auto") params.vmm = options.vmm as "qemu" | "firecracker";
  if (options.publish !== undefined) params.publish = options.publish;
  if (options.egress !== undefined) params.egress = options.egress;
  return params;
}

function integer(flag: string, value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed))
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${flag} must be a whole number, not '${value}'`);
  return parsed;
}

/** Creates through the async operation API, rendering its steps; Ctrl-C cancels and unwinds. */
async function createWithProgress(
  ctx: CliContext,
  client: RpcClient,
  params: CreateVmParams,
): Promise<VmInfo> {
  const progress = createProgressRenderer(ctx.stderr, false);
  const { operation } = await client.call("vm.create.begin", params);
  let cancelled = false;
  const onSigint = () => {
    cancelled = true;
    progress.onProgress({ id: 0, step: "cancel", message: "cancelling…", status: "running" });
    void client.call("vm.create.cancel", { operationId: operation.id }).catch(() => undefined);
  };
  process.on("SIGINT", onSigint);
  try {
    let last = "";
    for (;;) {
      const status = await client.call("vm.create.status", { operationId: operation.id, waitMs: 500 });
      const op: OperationInfo = status.operation;
      if (op.message !== last && op.state === "running") {
        progress.onProgress({ id: 0, step: op.step, message: op.message, status: "running" });
        last = op.message;
      }
      if (op.state === "succeeded" && status.vm) {
        if (status.vm.state === "running") await syncAuthAfterStart(ctx, client, status.vm.name);
        progress.onProgress({
          id: 0,
          step: "vm.ready",
          message: `${status.vm.name} is running (${status.vm.guestIp})`,
          status: "done",
        });
        return status.vm;
      }
      if (op.state !== "running") {
        progress.finish();
        const error = op.error;
        if (op.state === "cancelled" || cancelled) throw cancelledError(undefined, "VM creation");
        throw new BangerError(
          (error?.code as ErrorCode | undefined) ?? ErrorCode.INTERNAL,
          error?.message ?? "VM creation failed",
          {
            hint: error?.hint,
          },
        );
      }
    }
  } finally {
    process.off("SIGINT", onSigint);
    progress.finish();
  }
}

async function runInVm(
  ctx: CliContext,
  command: string[],
  options: SizingOptions & { name?: string; rm?: boolean },
): Promise<number> {
  const client = await ctx.client();
  let name = options.name;
  let interrupted = false;
  const removeIfAsked = async () => {
    if (options.rm && name)
      await client.call("vm.delete", { name }).catch((error: unknown) => reportError(ctx, error));
  };
  const controller = new AbortController();
  const onSigint = () => {
    interrupted = true;
    controller.abort();
  };
  process.on("SIGINT", onSigint);
  try {
    const existing = name ? await client.call("vm.show", { name }).catch(() => undefined) : undefined;
    if (!existing) {
      const vm = await createWithProgress(ctx, client, {
        ...sizingParams(options),
        ...(name ? { name } : {}),
      });
      name = vm.name;
    } else if (existing.state !== "running") {
      const progress = createProgressRenderer(ctx.stderr, false);
      await client.call(
        "vm.start",
        { name: existing.name },
        { onProgress: (event) => progress.onProgress(event) },
      );
      progress.finish();
      await syncAuthAfterStart(ctx, client, existing.name);
    }
    if (interrupted) return 130;
    const pipeStdin = process.stdin.isTTY !== true;
    const call = client.start(
      "vm.exec",
      { name: name!, argv: command, entrypoint: true, stdin: pipeStdin },
      {
        signal: controller.signal,
        onStream: (ch, data) => {
          if (data === null) return;
          if (ch === "stdout") ctx.stdout.write(data);
          else if (ch === "stderr") ctx.stderr.write(data);
        },
      },
    );
    if (pipeStdin) {
      process.stdin.on("data", (chunk: Buffer) => forwardPaced(call, "stdin", chunk));
      process.stdin.on("end", () => call.end("stdin"));
      process.stdin.on("error", () => call.end("stdin"));
    }
    const result = await call.result;
    if (interrupted) return 130;
    return result.exitCode ?? 255;
  } catch (error) {
    if (interrupted) return 130;
    return reportError(ctx, error);
  } finally {
    process.off("SIGINT", onSigint);
    // Stop reading stdin: an open pipe would keep the process alive.
    process.stdin.destroy();
    await removeIfAsked();
  }
}

/** Sends one chunk of our stdin, reading no more until the daemon's socket takes it (backpressure). */
function forwardPaced(
  call: { write(ch: "stdin" | "tcp", data: Buffer): Promise<void> },
  ch: "stdin" | "tcp",
  chunk: Buffer,
): void {
  process.stdin.pause();
  void call.write(ch, chunk).finally(() => process.stdin.resume());
}

/** Deletes; when the daemon refuses for unexported work, asks on a terminal and retries with force. */
async function deleteVm(ctx: CliContext, client: RpcClient, name: string, force: boolean): Promise<void> {
  try {
    await client.call("vm.delete", { name, force });
  } catch (error) {
    if (!(error instanceof BangerError) || error.code !== ErrorCode.UNEXPORTED_WORK || !process.stdin.isTTY)
      throw error;
    ctx.stderr.write(`banger: ${error.message}\n`);
    if (!(await confirm(ctx, `delete '${name}' and lose that work? [y/N] `))) throw error;
    await client.call("vm.delete", { name, force: true });
  }
}

async function confirm(ctx: CliContext, question: string): Promise<boolean> {
  const readline = await import("node:readline/promises");
  const rl = readline.createInterface({ input: process.stdin, output: ctx.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

function describeVm(vm: VmInfo): string {
  const rows: [string, string][] = [
    ["name", vm.name],
    ["id", vm.id],
    ["state", vm.state],
    ["image", vm.image],
    ["vmm", vm.vmm],
    ["cpus", String(vm.cpus)],
    ["memory", `${vm.memoryMib} MiB`],
    ["disk", `${vm.diskGib} GiB`],
    ["ip", vm.guestIp],
    ["mac", vm.mac],
    ["ports", (vm.ports ?? []).join(", ") || "-"],
    ["egress", vm.egress ?? "allow"],
    ["pid", vm.pid === null ? "-" : String(vm.pid)],
    ["dir", vm.dir],
    ["created", `${vm.createdAt} (${formatAge(vm.createdAt)})`],
  ];
  if (vm.lastError) rows.push(["last error", vm.lastError.split("\n")[0]!]);
  return formatTable(["field", "value"], rows);
}
