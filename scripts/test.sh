#!/usr/bin/env bash
# Set up (Debian packages, .venv) and run the whole test suite, then a smoke run of the benchmarks.
# Needs root: the lab tests start real ovs-vswitchd daemons in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m lab cleanup >/dev/null 2>&1 || true   # leftovers of a crashed earlier run
if [ $# -eq 0 ]; then  # the whole run: lint and format first (a finding fails it)
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy .
fi
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
if [ $# -eq 0 ]; then
  echo "--- benchmark smoke runs (ratios; not pass/fail) ---"
  .venv/bin/python bench/bench_api.py --quick
fi
