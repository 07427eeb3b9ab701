"""The request being served, for provenance: which API call (and request id) last changed a flow."""

from __future__ import annotations

from contextvars import ContextVar

from topology.state import CALLER_CONTEXT

#: "CreatePort 5f2c0e1d9a3b" while a gRPC call runs in this thread; "" otherwise
REQUEST: ContextVar[str] = ContextVar("sdn_request", default="")
# a write committed by another thread's group commit still names its request (joined with the others')
CALLER_CONTEXT.append(REQUEST)
