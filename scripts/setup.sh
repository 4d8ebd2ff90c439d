#!/usr/bin/env bash
# Create .venv and install sigmaloop with the trainer's and the test tools' dependencies.
# torch is pinned to 2.13.0 first: on our machines that is a CPU wheel on disk, and installing it
# before the package stops pip from resolving the open range to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[trainer,dev]"
echo "sigmaloop installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
