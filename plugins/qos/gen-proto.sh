#!/usr/bin/env bash
# Regenerate the QoS plug-in's stubs from sdn_qos/v1/qos.proto (the pinned grpcio-tools of the main venv).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../../.venv/bin/python}
"$PY" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. sdn_qos/v1/qos.proto
