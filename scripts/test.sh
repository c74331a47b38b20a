#!/usr/bin/env bash
# The README's test command: set up everything on a fresh machine, then lint and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web UI's tests drive a real headless Chromium: Debian's package, where this machine has none and can install it
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser tests will be skipped"
fi
.venv/bin/python -m ruff format --check harivo tests benchmarks scripts
.venv/bin/python -m ruff check harivo tests benchmarks scripts
# Both cores (or all of a bigger machine): the tests run in parallel worker processes
.venv/bin/python -m pytest -q -n auto
