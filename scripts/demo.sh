#!/usr/bin/env bash
# Set up (Debian packages, .venv) and run the controller with a demo topology on the default store (./data).
# Extra arguments go to the controller, e.g. --grpc-listen 127.0.0.1:50052.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python run_controller.py --demo "$@"
