#!/usr/bin/env bash
# Set up (Debian packages, .venv) and run the controller on the default store (./data) with a demo:
# two chassis (real ovs-vswitchd in network namespaces), two tenants with the same subnet, four VMs.
# Needs root. Ctrl-C stops everything and removes the namespaces. Extra arguments go to `python -m lab.demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/python -m lab cleanup >/dev/null 2>&1 || true
exec .venv/bin/python -m lab.demo "$@"
