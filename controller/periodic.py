"""A daemon thread that runs a job every `interval_s` seconds until stopped (drift checks, self-checks)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """`job` every `interval_s` (0 or less: never started); an exception is logged and the next round runs."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
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
        while not self._stop.wait(self.interval_s):
            try:
                self.job()
            except Exception:
                log.exception("%s failed", self.name)
