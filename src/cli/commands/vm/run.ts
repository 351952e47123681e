/**
 * `banger vm run [create flags] [exec flags] [--rm] -- CMD...`: create a new
 * VM every time, run a command in it as `vm exec` does, and with --rm
 * delete it afterwards (also on Ctrl-C, SIGTERM or SIGHUP). It never runs in
 * or deletes a VM it did not create: an existing --name is refused, and so
 * is a VM name before `--`, each with the `vm exec` line to use instead.
 */
import { BangerError, ErrorCode, exitStatusFor } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { reportError } from "../../context.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import type { CommandSpec, DashDash } from "../../spec.ts";
import { createWithProgress } from "./create-flow.ts";
import { type ExecFlags, execOptions, execParams, runExec } from "./exec-flow.ts";
import { type SizingFlags, sizingOptions, sizingParams } from "./sizing.ts";

interface RunArgs extends SizingFlags, ExecFlags, DashDash {
  command?: string[];
  name?: string;
  rm?: boolean;
}

export const runSpec: CommandSpec<RunArgs> = {
  name: "run [command...]",
  describe:
    "create a new VM, run a command in it, stream its output and exit with its status; with an OCI image the command follows docker run (it replaces CMD after ENTRYPOINT; none runs both)",
  examples: [
    "banger vm run -- uname -a",
    "banger vm run --rm -- make test",
    "banger vm run --rm --from warm -- make test",
    "banger vm run --rm -it -- bash",
    "echo hi | banger vm run --rm -i -- cat",
    "banger vm run --rm --image python:3.12-slim -- python3 -V",
    "banger vm run --name box --cpus 2 --memory 2g -- nproc",
  ],
  notes:
    "vm run always creates a VM; to run in one that exists, use `banger vm exec NAME -- CMD`.\nSignals and exit statuses are those of vm exec; with --rm the VM is deleted on the way out.",
  options: [
    ...sizingOptions,
    { flags: "--name <name>", description: "name the new VM (refused if a VM has it)" },
    { flags: "--rm", description: "delete the VM afterwards, also on Ctrl-C, SIGTERM or SIGHUP" },
    ...execOptions,
  ],
  handler: (ctx, args) => runInNewVm(ctx, args),
};

async function runInNewVm(ctx: CliContext, args: RunArgs): Promise<{ exitCode: number }> {
  if (args.rm && args.detach) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, "--rm and -d cannot be combined", {
      hint: "a detached command would lose its VM at once; delete it later with `banger vm delete --force NAME`",
    });
  }
  const { before, argv } = splitAtDashDash(args);
  const client = await ctx.client();
  await refuseExistingVms(client, args, before, argv);
  if (before.length > 0) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `unexpected '${before.join(" ")}' before --`, {
      hint: "vm run takes only flags before --; the command goes after it",
    });
  }
  // Checked before anything is created, so a bad flag leaves nothing behind.
  const draft = await execParams(ctx, args.name ?? "new", argv, args, "run");
  const interrupted = ctx.interrupted();
  let created: string | undefined;
  try {
    const vm = await createWithProgress(ctx, client, {
      ...sizingParams(args),
      ...(args.name ? { name: args.name } : {}),
    }).catch((error: unknown) => {
      throw nameTakenHint(error, args.name, argv);
    });
    created = vm.name;
    if (interrupted.aborted) return { exitCode: exitStatusFor[ErrorCode.CANCELLED] };
    const exitCode = await runExec(ctx, client, { ...draft, name: vm.name });
    if (args.detach) ctx.stdout.write(`${vm.name}\n`);
    return { exitCode };
  } finally {
    if (args.rm && created !== undefined) {
      await client
        .call("vm.delete", { name: created, force: true })
        .catch((error: unknown) => reportError(ctx, error));
    }
  }
}

/** The command is what follows `--`; without `--`, every operand (as docker run reads it). */
function splitAtDashDash(args: RunArgs): { before: string[]; argv: string[] } {
  const after = args.afterDashDash;
  if (after === undefined) return { before: [], argv: args.command ?? [] };
  const operands = args.command ?? [];
  return { before: operands.slice(0, operands.length - after.length), argv: [...after] };
}

/** Refuses a --name, or a word before `--`, that names an existing VM: vm run never reuses one. */
async function refuseExistingVms(
  client: DaemonClient,
  args: RunArgs,
  before: readonly string[],
  argv: readonly string[],
): Promise<void> {
  if (args.name === undefined && before.length === 0) return;
  const { vms } = await client.call("vm.list", {});
  const names = new Set(vms.map((vm) => vm.name));
  if (args.name !== undefined && names.has(args.name)) throw nameTaken(args.name, argv);
  const existing = before.find((word) => names.has(word));
  if (existing !== undefined) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `'${existing}' is an existing VM; vm run always creates a new one`,
      {
        hint: `to run in it: banger vm exec ${existing} -- ${argv.join(" ")}`,
      },
    );
  }
}

function nameTaken(name: string, argv: readonly string[]): BangerError {
  return new BangerError(
    ErrorCode.NAME_TAKEN,
    `a VM named '${name}' exists; vm run always creates a new VM`,
    {
      hint: `to run in it: banger vm exec ${name} -- ${argv.join(" ")}`,
    },
  );
}

/** The daemon's NAME_TAKEN (a VM made meanwhile) gets the same hint. */
function nameTakenHint(error: unknown, name: string | undefined, argv: readonly string[]): unknown {
  return error instanceof BangerError && error.code === ErrorCode.NAME_TAKEN && name !== undefined
    ? nameTaken(name, argv)
    : error;
}
