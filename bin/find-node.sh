# Sourced by bin/banger and bin/bangerd: sets BANGER_NODE to a Node.js that
# is at least 24.15, or exits 11 with a one-line hint.
BANGER_NODE="$root/node_modules/node/bin/node"
if [ ! -x "$BANGER_NODE" ]; then
  BANGER_NODE=$(command -v node 2>/dev/null || true)
  if [ -z "$BANGER_NODE" ] || ! "$BANGER_NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>24||(a===24&&b>=15)?0:1)' 2>/dev/null; then
    echo "banger: needs Node.js >= 24.15 (found ${BANGER_NODE:-none}); run 'npm ci' in $root to install it locally" >&2
    exit 11
  fi
fi
