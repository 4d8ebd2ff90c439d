#!/usr/bin/env bash
# Set up and run every test: lint, then pytest (unit, trainer, engine, language server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
