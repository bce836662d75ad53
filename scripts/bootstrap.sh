#!/usr/bin/env bash
# Set up poke-tune on a fresh machine: .venv with the package and its dev tools, and the
# pokemon-showdown simulator (npm) in the project cache (~/.cache/poke-tune/showdown).
#
# torch: an already-installed torch in .venv is kept (GPU users: install your CUDA build
# into .venv first). Otherwise $POKE_TUNE_TORCH (default torch==2.13.0) is installed
# before the package, so pip never resolves a bare `torch` to a multi-GB CUDA build;
# on a CPU machine point pip at a CPU wheel (find-links or the PyTorch CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${POKE_TUNE_TORCH:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing $TORCH_SPEC"
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
echo "bootstrap: installing poke-tune and its dependencies"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import poke_tune, torch; print('bootstrap: torch', torch.__version__)"
echo "bootstrap: installing the simulator"
.venv/bin/poke-tune setup
