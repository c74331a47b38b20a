#!/usr/bin/env bash
# Create .venv (if needed) and install harivo with its test tools into it.
# Where no torch is installed, the pinned CPU build is installed first, so that pip does not pull the
# multi-GB CUDA wheels; on a GPU machine, install the torch build you want into .venv before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install --quiet "torch==2.13.0" || $PIP install --quiet torch
fi
$PIP install --quiet -e ".[dev]"
.venv/bin/python -c "import harivo, torch; print(f'harivo {harivo.__version__} ready (torch {torch.__version__})')"
