"""The controller's log: text for people, or JSON lines for a log pipeline (`log_format`), and one access-log
line per API call (logger `sdn.access`: method, tenant, status code, duration, request id).

Every line written while an API call runs names its request id (the caller's `x-request-id`, or the one the
server made and returned), so a write's log lines, its access line and the flows it made (provenance) can
be joined.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from controller.api.context import REQUEST

#: the access log's logger: one INFO line per API call
ACCESS = logging.getLogger("sdn.access")

#: attributes an access-log record carries (besides the message), as JSON keys
ACCESS_FIELDS = ("method", "tenant", "code", "duration_ms", "request_id")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def current_request_id(record: logging.LogRecord) -> str:
    """The request id the record was logged under: its own (`extra`), or the call running in this thread."""
    rid = getattr(record, "request_id", "")
    if rid:
        return str(rid)
    _, _, rid = REQUEST.get().partition(" ")
    return rid


class TextFormatter(logging.Formatter):
    """The usual text line, with `[req ID]` at its end when it was written during an API call."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = current_request_id(record)
        return f"{line} [req {rid}]" if rid and record.name != ACCESS.name else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC, milliseconds), level, logger, message, request_id when
    there is one, the access fields of access lines, and the exception's text if any."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = current_request_id(record)
        if rid:
            obj["request_id"] = rid
        for key in ACCESS_FIELDS:
            if hasattr(record, key):
                obj[key] = getattr(record, key)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def setup(level: str, fmt: str) -> None:
    """The root logger on stderr at `level`, in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def access(method: str, tenant: str, code: str, started: float, rid: str) -> None:
    """The access line of one finished call (`started`: its time.monotonic() at the start)."""
    ms = round((time.monotonic() - started) * 1000, 2)
    ACCESS.info(
        "%s tenant=%s code=%s %.2fms req=%s",
        method,
        tenant,
        code,
        ms,
        rid,
        extra={"method": method, "tenant": tenant, "code": code, "duration_ms": ms, "request_id": rid},
    )
