#!/usr/bin/env bash
# The README's test command: set up everything on a fresh machine, then lint and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff format --check harivo tests benchmarks scripts
.venv/bin/python -m ruff check harivo tests benchmarks scripts
.venv/bin/python -m pytest -q
