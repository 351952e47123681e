/**
 * The POSIX shell programs banger runs inside a guest (or, for a stopped
 * VM, on the host against a copy read from its disk). Each is a constant:
 * inputs arrive as positional arguments (`sh -c SCRIPT NAME ARG...`), never
 * spliced into the text, so no input is ever parsed by a shell.
 */

/** argv that runs `script` with `args` as $1..$n. */
export function shellProgram(name: string, script: string, args: readonly string[]): string[] {
  return ["sh", "-c", script, name, ...args];
}

/**
 * Makes the staging directory an import is built in, beside $1 (which must
 * not exist; its parent is made), with an empty `in/` for the payload, and
 * prints its path. The daemon writes the payload into `in/` through the
 * agent (no tar runs in the guest), then runs PREPARE_SCRIPT. Staging
 * directories already there are an import's that never finished (the VM's
 * workspace lock lets one prepare run at a time; a daemon that died
 * mid-import could not clean up) and are removed.
 */
export const STAGE_SCRIPT = `set -eu
dest=$1
if [ -e "$dest" ] || [ -L "$dest" ]; then
  echo "banger: $dest already exists in the guest; pick another --path or remove it" >&2; exit 17
fi
parent=$(dirname -- "$dest")
mkdir -p -- "$parent"
for stale in "$parent"/.banger-prepare.*; do
  if [ -d "$stale" ]; then chmod -R u+w -- "$stale"; rm -rf -- "$stale"; fi
done
stage=$(mktemp -d "$parent/.banger-prepare.XXXXXX")
mkdir -- "$stage/in"
printf '%s\\n' "$stage"
`;

/**
 * Undoes an import that failed or was cancelled part way (its program may
 * have been killed before its own cleanup ran): removes the staging
 * directory $1 and, where the import had already renamed its repository to
 * $2, that repository (only if its `.git/banger-import` names $1).
 */
export const UNSTAGE_SCRIPT = `set -u
stage=$1 dest=$2
if [ -d "$stage" ]; then chmod -R u+w -- "$stage"; rm -rf -- "$stage"; fi
if [ -f "$dest/.git/banger-import" ] && read -r made <"$dest/.git/banger-import" && [ "$made" = "$stage" ]; then
  chmod -R u+w -- "$dest"; rm -rf -- "$dest"
fi
exit 0
`;

/**
 * Imports the prepare payload in $5/in (STAGE_SCRIPT's directory) as a git
 * repository at $1. $2 = 1 for read-only, $3 = branch ('' for a detached
 * HEAD), $4 = HEAD commit. The payload holds `pack/` (a pack of the history
 * with its index, made on the host: moved into place, never re-indexed
 * here) and maybe `shallow`, or `repo.git/` (a shallow bare clone);
 * `staged.patch`, `unstaged.patch`, `untracked.tar` and `sub-N.bundle` with
 * `submodules` (NUL-separated `path` then `commit`). The repository is
 * built in the staging directory and renamed into place last, so a reader
 * never sees half an import; the staging directory is removed either way.
 * `.git/banger-import` names the staging directory, so UNSTAGE_SCRIPT can
 * tell this import's repository from anything else at $1.
 */
export const PREPARE_SCRIPT = `set -eu
dest=$1 readonly=$2 branch=$3 head=$4 stage=$5
trap 'chmod -R u+w -- "$stage" 2>/dev/null; rm -rf -- "$stage"' EXIT
if [ -e "$dest" ] || [ -L "$dest" ]; then
  echo "banger: $dest already exists in the guest; pick another --path or remove it" >&2; exit 17
fi
tree=$stage/tree
if [ -d "$stage/in/repo.git" ]; then
  mkdir -- "$tree"; mv -- "$stage/in/repo.git" "$tree/.git"
  git -C "$tree" config core.bare false
  git -C "$tree" remote remove origin 2>/dev/null || true
else
  git -c init.defaultBranch=banger-import init -q -- "$tree"
  mv -- "$stage/in/pack/"* "$tree/.git/objects/pack/"
  if [ -f "$stage/in/shallow" ]; then mv -- "$stage/in/shallow" "$tree/.git/shallow"; fi
fi
cd -- "$tree"
if [ -n "$branch" ]; then git checkout -q -B "$branch" "$head"; else git checkout -q --detach "$head"; fi
if [ -s "$stage/in/submodules" ]; then
  i=0
  tr '\\0' '\\n' <"$stage/in/submodules" | while IFS= read -r path && IFS= read -r commit; do
    rmdir -- "$path" 2>/dev/null || true
    git clone -q --no-checkout -- "$stage/in/sub-$i.bundle" "$path"
    git -C "$path" checkout -q --detach "$commit"
    git -C "$path" remote remove origin
    i=$((i + 1))
  done
  git submodule init -q >/dev/null 2>&1 || true
fi
if [ -s "$stage/in/staged.patch" ]; then git apply --index --whitespace=nowarn "$stage/in/staged.patch"; fi
if [ -s "$stage/in/unstaged.patch" ]; then git apply --whitespace=nowarn "$stage/in/unstaged.patch"; fi
if [ -s "$stage/in/untracked.tar" ]; then tar -x -f "$stage/in/untracked.tar"; fi
git config banger.base "$head"
printf '%s\\n' "$stage" >.git/banger-import
if [ "$readonly" = 1 ]; then
  find . -path ./.git -prune -o ! -type l -exec chmod a-w {} +
fi
cd /
mv -- "$tree" "$dest"
`;

/**
 * Writes what a workspace at $1 holds since commit $2 as a tar on stdout.
 * $3 = patch | bundle | branch | state. Uncommitted work (tracked changes,
 * deletions and untracked files that .gitignore does not exclude) is read
 * through a temporary index, never touching the repository's own.
 * - patch: `patches/NNNN-*.patch` (format-patch of $2..HEAD) and
 *   `uncommitted.patch` when there is uncommitted work;
 * - bundle and branch: `export.bundle` holding `refs/banger/export`, HEAD
 *   plus one commit of the uncommitted work, with $2 as prerequisite;
 * - state: no tar, only the `meta` text on stdout.
 * Always `meta`: lines `head`, `tree` (of the work tree), `tip`, `commits`,
 * `dirty`.
 */
export const EXPORT_SCRIPT = `set -eu
repo=$1 base=$2 format=$3
out=$(mktemp -d)
trap 'rm -rf -- "$out"' EXIT
cd -- "$repo"
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="*"
head=$(git rev-parse HEAD)
index=$(git rev-parse --git-path index)
if [ -f "$index" ]; then cp -- "$index" "$out/index"; else GIT_INDEX_FILE=$out/index git read-tree HEAD; fi
GIT_INDEX_FILE=$out/index git add -A
tree=$(GIT_INDEX_FILE=$out/index git write-tree)
rm -f -- "$out/index"
dirty=0
[ "$tree" = "$(git rev-parse 'HEAD^{tree}')" ] || dirty=1
tip=$head
if [ "$dirty" = 1 ] && [ "$format" != patch ] && [ "$format" != state ]; then
  export GIT_AUTHOR_NAME="\${GIT_AUTHOR_NAME:-$(git config user.name || echo banger)}"
  export GIT_AUTHOR_EMAIL="\${GIT_AUTHOR_EMAIL:-$(git config user.email || echo banger@localhost)}"
  export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
  tip=$(echo "banger: uncommitted changes" | git commit-tree "$tree" -p "$head")
fi
commits=$(git rev-list --count "$base..$head")
case $format in
  patch)
    mkdir -- "$out/patches"
    if [ "$commits" -gt 0 ]; then git format-patch -q --binary --full-index -o "$out/patches" "$base..$head"; fi
    if [ "$dirty" = 1 ]; then git diff --binary --full-index --no-ext-diff --no-color "$head" "$tree" >"$out/uncommitted.patch"; fi
    ;;
  bundle|branch)
    if [ "$tip" != "$base" ]; then
      git update-ref refs/banger/export "$tip"
      git bundle create -q "$out/export.bundle" refs/banger/export "^$base" || { git update-ref -d refs/banger/export; exit 1; }
      git update-ref -d refs/banger/export
    fi
    ;;
  state) printf 'head %s\ntree %s\ntip %s\ncommits %s\ndirty %s\n' "$head" "$tree" "$tip" "$commits" "$dirty"; exit 0 ;;
  *) echo "banger: unknown export format $format" >&2; exit 2 ;;
esac
printf 'head %s\\ntree %s\\ntip %s\\ncommits %s\\ndirty %s\\n' "$head" "$tree" "$tip" "$commits" "$dirty" >"$out/meta"
tar -c -C "$out" .
`;

/**
 * Installs auth material read from a tar on stdin (made by the daemon from
 * what the CLI sent): `authorized_keys` becomes ~/.ssh/authorized_keys2
 * (sshd reads it beside the daemon's own authorized_keys); `identity`
 * (name, then email, then both quoted for a git config file, one per
 * line) sets the global git identity, written with builtins where the user
 * has no global git config yet (git itself is the slowest program here),
 * with `git config` otherwise; `files/N`
 * goes to the N-th line of `paths` with mode 0600. The program runs as the
 * guest user, so what it writes is that user's. Files are unpacked under
 * umask 077 into a staging directory in $HOME (the targets' file system,
 * usually) and renamed into place, so a reader never sees half a secret.
 * It spends few processes (each costs ~100 ms under TCG while a restored
 * clone's translation cache is cold): path edits and checks are builtins.
 */
export const AUTH_SCRIPT = `set -eu
umask 077
base=$HOME
if [ ! -d "$base" ] || [ ! -w "$base" ]; then base=\${TMPDIR:-/tmp}; fi
stage=$(mktemp -d "$base/.banger-auth.XXXXXX")
trap 'rm -rf -- "$stage"' EXIT
tar -x -o -C "$stage" -f -
put() {
  case $2 in */*) [ -d "\${2%/*}" ] || mkdir -p -- "\${2%/*}" ;; esac
  mv -f -- "$1" "$2"
}
if [ -f "$stage/authorized_keys" ]; then
  [ -d "$HOME/.ssh" ] || mkdir -m 700 -p -- "$HOME/.ssh"
  put "$stage/authorized_keys" "$HOME/.ssh/authorized_keys2"
fi
if [ -f "$stage/identity" ]; then
  { IFS= read -r name; IFS= read -r email; IFS= read -r quoted_name; IFS= read -r quoted_email; } <"$stage/identity"
  if [ ! -e "$HOME/.gitconfig" ] && [ ! -e "\${XDG_CONFIG_HOME:-$HOME/.config}/git/config" ]; then
    printf '[user]\\n\\tname = %s\\n\\temail = %s\\n' "$quoted_name" "$quoted_email" >"$HOME/.gitconfig"
  else
    git config --global user.name "$name"
    git config --global user.email "$email"
  fi
fi
if [ -f "$stage/paths" ]; then
  i=0
  while IFS= read -r path; do
    case $path in "~/"*) path=$HOME/\${path#"~/"} ;; esac
    put "$stage/files/$i" "$path"
    i=$((i + 1))
  done <"$stage/paths"
fi
`;

/**
 * A value for a git config file, always double-quoted (so `#`, `;` and
 * edge spaces are kept), with git's escapes for `\\` and `"`. Callers
 * strip line breaks first.
 */
export function gitConfigValue(value: string): string {
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}
