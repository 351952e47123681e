/**
 * `banger completion bash|zsh|fish`: a shell completion script generated
 * from the command specs (nouns, verbs, flags), completing VM names from
 * `banger vm ls -q` (never starting the daemon for it).
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { AnyCommandSpec, CommandSpec, GroupSpec } from "../spec.ts";
import { success } from "../spec.ts";

export interface CommandTree {
  groups: readonly GroupSpec[];
  topLevel: readonly AnyCommandSpec[];
}

interface Entry {
  /** "vm start", or "ping" for a top-level command. */
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
  const commands = entries(tree);
  if (shell === "fish") return fishScript(tree, commands);
  const bash = bashScript(tree, commands);
  return shell === "bash" ? bash : `#compdef banger\nautoload -U +X bashcompinit && bashcompinit\n${bash}`;
}

function words(spec: AnyCommandSpec): string[] {
  return [spec.name.split(" ")[0]!, ...(spec.aliases ?? [])];
}

function entries(tree: CommandTree): Entry[] {
  const entry = (group: string | undefined, spec: AnyCommandSpec): Entry => ({
    path: group ? `${group} ${words(spec)[0]}` : words(spec)[0]!,
    words: words(spec),
    flags: [
      ...(spec.options ?? []).flatMap((option) =>
        option.flags.split(/[ ,|]+/).filter((word) => word.startsWith("-")),
      ),
      "--help",
    ],
    takesVmName: group === "vm" && /<names?\b/.test(spec.name),
  });
  return [
    ...tree.groups.flatMap((group) =>
      group.commands.filter((spec) => !spec.hidden).map((spec) => entry(group.name, spec)),
    ),
    ...tree.topLevel.map((spec) => entry(undefined, spec)),
  ];
}

function topWords(tree: CommandTree): string[] {
  return [...tree.groups.map((group) => group.name), ...tree.topLevel.flatMap(words), "help"];
}

function bashScript(tree: CommandTree, commands: Entry[]): string {
  const groupCases = tree.groups.map((group) => {
    const verbs = commands.filter((c) => c.path.startsWith(`${group.name} `)).flatMap((c) => c.words);
    return `    ${group.name}) verbs="${verbs.join(" ")}" ;;`;
  });
  const flagCases = commands.map((c) => {
    const patterns = c.path.includes(" ")
      ? c.words.map((word) => `"${c.path.split(" ")[0]} ${word}"`).join("|")
      : c.words.map((word) => `"${word}"`).join("|");
    return `    ${patterns}) flags="${c.flags.join(" ")}"; names=${c.takesVmName ? 1 : 0} ;;`;
  });
  return `# banger completion for bash: source <(banger completion bash)
_banger() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" words=() word i
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    [[ $word == -* ]] || words+=("$word")
  done
  if ((\${#words[@]} == 0)); then
    COMPREPLY=($(compgen -W "${topWords(tree).join(" ")} --help --version --no-autostart" -- "$cur"))
    return
  fi
  local verbs=""
  case "\${words[0]}" in
${groupCases.join("\n")}
  esac
  if [[ -n $verbs ]] && ((\${#words[@]} == 1)); then
    COMPREPLY=($(compgen -W "$verbs --help" -- "$cur"))
    return
  fi
  local path="\${words[0]}" flags="" names=0
  [[ -n $verbs ]] && path="\${words[0]} \${words[1]}"
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

function fishScript(tree: CommandTree, commands: Entry[]): string {
  const lines = [
    "# banger completion for fish: banger completion fish > ~/.config/fish/completions/banger.fish",
    "complete -c banger -f",
    `complete -c banger -n __fish_use_subcommand -a "${topWords(tree).join(" ")}"`,
  ];
  for (const group of tree.groups) {
    const verbs = commands.filter((c) => c.path.startsWith(`${group.name} `));
    const verbWords = verbs.flatMap((c) => c.words).join(" ");
    lines.push(
      `complete -c banger -n "__fish_seen_subcommand_from ${group.name}; and not __fish_seen_subcommand_from ${verbWords}" -a "${verbWords}"`,
    );
    for (const verb of verbs) {
      const seen = `__fish_seen_subcommand_from ${group.name}; and __fish_seen_subcommand_from ${verb.words.join(" ")}`;
      for (const flag of verb.flags) {
        const option = flag.startsWith("--") ? `-l ${flag.slice(2)}` : `-s ${flag.slice(1)}`;
        lines.push(`complete -c banger -n "${seen}" ${option}`);
      }
      if (verb.takesVmName) lines.push(`complete -c banger -n "${seen}" -a "(${VM_NAMES})"`);
    }
  }
  lines.push(`complete -c banger -n "__fish_seen_subcommand_from completion" -a "${SHELLS.join(" ")}"`);
  return `${lines.join("\n")}\n`;
}
