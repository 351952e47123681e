/**
 * `banger completion bash|zsh|fish`: a shell completion script generated
 * from the command specs (nouns, verbs, flags), completing VM names from
 * `banger vm ls -q` (never starting the daemon for it).
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { type AnyCommandSpec, type CommandSpec, type GroupSpec, isGroup, success } from "../spec.ts";

export interface CommandTree {
  groups: readonly GroupSpec[];
  topLevel: readonly AnyCommandSpec[];
}

interface Entry {
  /** "vm start", "vm workspace show", or "ping" for a top-level command. */
  path: string;
  words: string[];
  flags: string[];
  takesVmName: boolean;
}

const SHELLS = ["bash", "zsh", "fish"] as const;
type Shell = (typeof SHELLS)[number];

const VM_NAMES = "banger --no-autostart vm ls -q 2>/dev/null";

export function completionSpec(tree: () => CommandTree): CommandSpec<{ shell: string }> {
  return {
    name: "completion <shell>",
    describe: `print a shell completion script (${SHELLS.join(", ")})`,
    examples: [
      "source <(banger completion bash)          # in ~/.bashrc",
      "banger completion zsh > ~/.zfunc/_banger   # with fpath+=(~/.zfunc) before compinit",
      "banger completion fish > ~/.config/fish/completions/banger.fish",
    ],
    async handler(_ctx, args) {
      if (!SHELLS.includes(args.shell as Shell)) {
        throw new BangerError(ErrorCode.INVALID_PARAMS, `no completion for shell '${args.shell}'`, {
          hint: `one of: ${SHELLS.join(", ")}`,
        });
      }
      return success(completionScript(args.shell as Shell, tree()));
    },
  };
}

function completionScript(shell: Shell, tree: CommandTree): string {
  const { groups, commands } = walk(tree);
  if (shell === "fish") return fishScript(groups, commands);
  const bash = bashScript(groups, commands);
  return shell === "bash" ? bash : `#compdef banger\nautoload -U +X bashcompinit && bashcompinit\n${bash}`;
}

/** A group's path ("" for the top, "vm", "vm workspace") and the words that may follow it. */
interface GroupEntry {
  path: string;
  children: string[];
}

function words(spec: AnyCommandSpec): string[] {
  return [spec.name.split(" ")[0]!, ...(spec.aliases ?? [])];
}

function walk(tree: CommandTree): { groups: GroupEntry[]; commands: Entry[] } {
  const groups: GroupEntry[] = [];
  const commands: Entry[] = [];
  const join = (path: string, word: string) => (path === "" ? word : `${path} ${word}`);
  const command = (path: string, spec: AnyCommandSpec): Entry => ({
    path: join(path, words(spec)[0]!),
    words: words(spec),
    flags: [
      ...(spec.options ?? []).flatMap((option) =>
        option.flags.split(/[ ,|]+/).filter((word) => word.startsWith("-")),
      ),
      "--help",
    ],
    takesVmName: path.split(" ")[0] === "vm" && /<names?\b/.test(spec.name),
  });
  const visit = (path: string, entries: readonly (AnyCommandSpec | GroupSpec)[], extra: string[]) => {
    const children: string[] = [];
    for (const entry of entries) {
      if (isGroup(entry)) {
        children.push(entry.name);
        visit(join(path, entry.name), entry.commands, []);
      } else if (!entry.hidden) {
        const made = command(path, entry);
        children.push(...made.words);
        commands.push(made);
      }
    }
    groups.push({ path, children: [...children, ...extra] });
  };
  visit("", [...tree.groups, ...tree.topLevel], ["help"]);
  return { groups, commands };
}

/** Every path a command line can name: groups and commands, each under each of its words. */
function knownPaths(groups: GroupEntry[], commands: Entry[]): string[] {
  const parent = (path: string) => path.split(" ").slice(0, -1).join(" ");
  const commandPaths = commands.flatMap((c) =>
    c.words.map((word) => (parent(c.path) === "" ? word : `${parent(c.path)} ${word}`)),
  );
  return [...groups.map((g) => g.path).filter((path) => path !== ""), ...commandPaths];
}

function bashScript(groups: GroupEntry[], commands: Entry[]): string {
  const quote = (path: string) => `"${path}"`;
  const groupCases = groups.map((g) => `    ${quote(g.path)}) children="${g.children.join(" ")}" ;;`);
  const flagCases = commands.map((c) => {
    const parent = c.path.split(" ").slice(0, -1).join(" ");
    const patterns = c.words.map((word) => quote(parent === "" ? word : `${parent} ${word}`)).join("|");
    return `    ${patterns}) flags="${c.flags.join(" ")}"; names=${c.takesVmName ? 1 : 0} ;;`;
  });
  return `# banger completion for bash: source <(banger completion bash)
_banger() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" next word i
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    [[ $word == -* ]] && continue
    next="\${path:+$path }$word"
    case "$next" in
      ${knownPaths(groups, commands).map(quote).join("|")}) path="$next" ;;
      *) break ;;
    esac
  done
  local children="" flags="" names=0
  case "$path" in
${groupCases.join("\n")}
  esac
  if [[ -n $children ]]; then
    [[ -z $path ]] && children="$children --version --no-autostart"
    COMPREPLY=($(compgen -W "$children --help" -- "$cur"))
    return
  fi
  case "$path" in
${flagCases.join("\n")}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif ((names)); then
    COMPREPLY=($(compgen -W "$(${VM_NAMES})" -- "$cur"))
  elif [[ $path == completion ]]; then
    COMPREPLY=($(compgen -W "${SHELLS.join(" ")}" -- "$cur"))
  fi
}
complete -o default -F _banger banger
`;
}

function fishScript(groups: GroupEntry[], commands: Entry[]): string {
  const lines = [
    "# banger completion for fish: banger completion fish > ~/.config/fish/completions/banger.fish",
    "complete -c banger -f",
  ];
  const seen = (path: string) =>
    path === "" ? [] : path.split(" ").map((word) => `__fish_seen_subcommand_from ${word}`);
  for (const group of groups) {
    const condition =
      group.path === ""
        ? ["__fish_use_subcommand"]
        : [...seen(group.path), `not __fish_seen_subcommand_from ${group.children.join(" ")}`];
    lines.push(`complete -c banger -n "${condition.join("; and ")}" -a "${group.children.join(" ")}"`);
  }
  for (const command of commands) {
    const parent = command.path.split(" ").slice(0, -1).join(" ");
    const condition = [...seen(parent), `__fish_seen_subcommand_from ${command.words.join(" ")}`].join(
      "; and ",
    );
    for (const flag of command.flags) {
      const option = flag.startsWith("--") ? `-l ${flag.slice(2)}` : `-s ${flag.slice(1)}`;
      lines.push(`complete -c banger -n "${condition}" ${option}`);
    }
    if (command.takesVmName) lines.push(`complete -c banger -n "${condition}" -a "(${VM_NAMES})"`);
  }
  lines.push(`complete -c banger -n "__fish_seen_subcommand_from completion" -a "${SHELLS.join(" ")}"`);
  return `${lines.join("\n")}\n`;
}
