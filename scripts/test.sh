#!/usr/bin/env bash
# Set up and run every test: Python lint, the extension's lint and unit tests, the browser
# end-to-end test (a real VS Code (code-server) in Debian's Chromium), then pytest (unit,
# trainer, engine, LLM proposer, language server end-to-end).
# Set SIGMALOOP_SKIP_E2E=1 to skip the browser test on a machine without root/apt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The trial sandbox (bubblewrap) is part of the product's tests: install it where we can (root + apt).
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }
fi
.venv/bin/ruff check .
# The product as a stranger gets it: the wheel in a clean venv, init → prepare → a 3 s baseline.
.venv/bin/python bench/wheel.py --budget 3
if [ "${SIGMALOOP_SKIP_E2E:-0}" != "1" ]; then
  bash scripts/install-e2e-deps.sh   # Node 24, code-server, Chromium (apt, root), npm ci; idempotent
  npm run lint
  npm test
  bash scripts/e2e.sh
fi
.venv/bin/python -m pytest "$@"
