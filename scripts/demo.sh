#!/usr/bin/env bash
# Set up, then run the demo: the loop on the embedded default (CPU, offline corpus, built-in tuner).
# It ends with what it learned, kept or not (the reference ± σ, the tally, the smallest keepable
# effect, what to try next): `sigmaloop report`'s block.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if .venv/bin/python -c "import sigmaloop.cli" >/dev/null 2>&1; then
  exec .venv/bin/sigmaloop demo "$@"
fi
# Until the loop exists the demo is the trainer's own run on the default corpus.
cd trainer
../.venv/bin/python prepare.py
SIGMALOOP_TIME_BUDGET=${SIGMALOOP_TIME_BUDGET:-30} exec ../.venv/bin/python train.py
