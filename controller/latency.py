"""Stage stamps of a write's way to the switches, for bench/bench_latency.py: off unless the environment
variable SDN_LATENCY_TRACE names a file when the controller starts. Each stamp appends one line
"<time.perf_counter_ns()> <stage> <key>" to it (CLOCK_MONOTONIC: comparable with the bench's own stamps in
another process). Off, a stamp site costs one global read (`if latency.ON:`).

SDN_SWITCH_INTERVAL (seconds) sets sys.setswitchinterval for bench_latency.py's --switch-interval: 0.5 ms
instead of CPython's 5 ms made no measurable difference to the stages or the total (BENCHMARKS.md), so the
controller keeps the default."""

from __future__ import annotations

import os
import sys
import time

_PATH = os.environ.get("SDN_LATENCY_TRACE", "")
_FD = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if _PATH else -1

#: stamps are being written (test it before building a stamp's key)
ON = _FD >= 0


def stamp(stage: str, key: object = "") -> None:
    """One line for `stage` (no spaces) of `key` (a revision, "dpid/seq"...) now; nothing when off."""
    if _FD >= 0:
        os.write(_FD, f"{time.perf_counter_ns()} {stage} {key}\n".encode())


if os.environ.get("SDN_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["SDN_SWITCH_INTERVAL"]))
