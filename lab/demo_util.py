"""What the demos share: where the project is, the controller's admin token, waiting for its API."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc

from lab.proc import READY_POLL_OPTIONS

ROOT = Path(__file__).resolve().parent.parent


def _admin_token(data: Path) -> str:
    tokens = json.loads((data / "tokens.json").read_text())["tokens"]
    return next(t for t, v in tokens.items() if v["admin"])


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    channel = grpc.insecure_channel(endpoint, options=READY_POLL_OPTIONS)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("the controller exited; see its log above")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                continue
        raise SystemExit("the controller did not start")
    finally:
        channel.close()
