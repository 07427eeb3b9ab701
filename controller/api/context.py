"""The request being served, for provenance: which API call (and request id) last changed a flow."""

from __future__ import annotations

from contextvars import ContextVar

#: "CreatePort 5f2c0e1d9a3b" while a gRPC call runs in this thread; "" otherwise
REQUEST: ContextVar[str] = ContextVar("sdn_request", default="")
