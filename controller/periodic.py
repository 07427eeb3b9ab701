"""A daemon thread that runs a job every `interval_s` seconds until stopped (drift checks, self-checks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


#: the share of wall time a periodic job may take: after a round of d seconds the next waits at least
#: d * (1 - MAX_DUTY) / MAX_DUTY (a full flow dump of 4 chassis of 230k flows each takes longer than a
#: 10 s interval on a busy machine: run back to back, the checks would starve the API and the compile)
MAX_DUTY = 0.1


def pause_after(interval_s: float, took_s: float, max_duty: float = MAX_DUTY) -> float:
    """How long to wait before the next round: the interval, or longer after a long round."""
    return max(interval_s, took_s * (1 - max_duty) / max_duty)


class Periodic:
    """`job` every `interval_s` (0 or less: never started), and at most MAX_DUTY of the time (a long round
    pushes the next one back); an exception is logged and the next round runs."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self.last_round_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        wait = self.interval_s
        while not self._stop.wait(wait):
            t0 = time.monotonic()
            try:
                self.job()
            except Exception:
                log.exception("%s failed", self.name)
            self.last_round_s = time.monotonic() - t0
            wait = pause_after(self.interval_s, self.last_round_s)
