#!/usr/bin/env bash
# Regenerate the Python stubs from proto/ (the only way they should change). Uses the pinned grpcio-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/sdn/v1/*.proto
