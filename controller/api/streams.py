"""Fair API streams: caps on open long-lived streams (in total and per tenant), checked before a stream
starts, so streams can never take the threads unary calls need; and prompt ending of a revoked token's
streams.

The gRPC server keeps its sync thread pool: `grpc_workers` threads for unary calls plus `max_streams`
threads for streams (controller/server.py sizes the pool so). A stream over a cap is refused with
RESOURCE_EXHAUSTED (ErrorInfo TOO_MANY_STREAMS or TENANT_STREAM_LIMIT, and a QuotaFailure naming the
limit), so the threads of unary calls stay free whatever the streams do. Streams without a token (health
Watch, reflection) share the one tenant bucket `UNAUTHENTICATED`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2

from controller.api.status import to_status
from topology.errors import ApiError

DEFAULT_MAX_STREAMS = 256
DEFAULT_MAX_STREAMS_PER_TENANT = 32
UNAUTHENTICATED = "(unauthenticated)"  # the bucket of streams without a token: not a valid tenant id


@dataclass(eq=False)
class Ticket:
    """One admitted stream. `revoked` is set (and the streams woken) when its token is revoked."""

    tenant: str
    token: str
    method: str
    revoked: bool = field(default=False)


class StreamLimiter:
    """Counts open streams per tenant and in total; refuses one over a cap; revokes a token's streams.

    `wake` is called after a revocation marked streams: it must wake every waiting stream (the northbound's
    Watch waits on State.changed), which then sees its ticket revoked and ends."""

    def __init__(
        self,
        max_total: int = DEFAULT_MAX_STREAMS,
        max_per_tenant: int = DEFAULT_MAX_STREAMS_PER_TENANT,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        if max_total < 1 or not 1 <= max_per_tenant <= max_total:
            raise ValueError("need 1 <= max_per_tenant <= max_total")
        self.max_total = max_total
        self.max_per_tenant = max_per_tenant
        self.wake = wake
        self._lock = threading.Lock()
        self._open: dict[str, set[Ticket]] = {}
        self._total = 0
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()  # (method, reason) -> n
        self.revoked_streams = 0  # streams ended by their token's revocation

    @property
    def total(self) -> int:
        return self._total

    def open_by_tenant(self) -> dict[str, int]:
        with self._lock:
            return {t: len(s) for t, s in self._open.items() if s}

    def admit(self, tenant: str, token: str, method: str) -> Ticket:
        """A ticket for a new stream, or ApiError RESOURCE_EXHAUSTED if a cap is reached (nothing counted)."""
        with self._lock:
            mine = self._open.get(tenant, set())
            if len(mine) >= self.max_per_tenant:
                self.refused[(method, "TENANT_STREAM_LIMIT")] += 1
                raise ApiError(
                    "RESOURCE_EXHAUSTED",
                    "TENANT_STREAM_LIMIT",
                    f"tenant {tenant!r} already has {len(mine)} streams open, its limit "
                    "(max_streams_per_tenant): close one (or wait for one to end) and retry",
                    metadata={
                        "tenant": tenant,
                        "limit": str(self.max_per_tenant),
                        "open": str(len(mine)),
                        "method": method,
                    },
                )
            if self._total >= self.max_total:
                self.refused[(method, "TOO_MANY_STREAMS")] += 1
                raise ApiError(
                    "RESOURCE_EXHAUSTED",
                    "TOO_MANY_STREAMS",
                    f"the server already has {self._total} streams open, its limit (max_streams): "
                    "retry later (unary calls are not affected)",
                    metadata={"limit": str(self.max_total), "open": str(self._total), "method": method},
                )
            ticket = Ticket(tenant, token, method)
            self._open.setdefault(tenant, set()).add(ticket)
            self._total += 1
            return ticket

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            mine = self._open.get(ticket.tenant)
            if mine is None or ticket not in mine:
                return
            mine.discard(ticket)
            if not mine:
                del self._open[ticket.tenant]
            self._total -= 1

    def revoke(self, token: str) -> int:
        """Mark the open streams of `token` revoked and wake them; how many there were."""
        with self._lock:
            hit = [t for s in self._open.values() for t in s if t.token == token and not t.revoked]
            for t in hit:
                t.revoked = True
            self.revoked_streams += len(hit)
        if hit:
            self.wake()
        return len(hit)


def refusal_status(err: ApiError, limiter: StreamLimiter) -> grpc.Status:
    """RESOURCE_EXHAUSTED with ErrorInfo (reason, limit, open) and a QuotaFailure naming the exhausted cap."""
    if err.reason == "TENANT_STREAM_LIMIT":
        subject = f"tenant:{err.metadata.get('tenant', '')}"
        what = f"open streams per tenant (max_streams_per_tenant={limiter.max_per_tenant})"
    else:
        subject = "server"
        what = f"open streams on the server (max_streams={limiter.max_total})"
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=what)]
    )
    return to_status(err, extra=(quota,))


def revoked_error() -> ApiError:
    return ApiError("UNAUTHENTICATED", "TOKEN_REVOKED", "the token of this stream was revoked")


class StreamAdmission(grpc.ServerInterceptor):  # type: ignore[misc]
    """Applies the caps to streaming calls that do not admit themselves (health Watch, reflection: no
    token, bucket UNAUTHENTICATED). The northbound's Watch admits itself after authentication, by tenant."""

    def __init__(self, limiter: StreamLimiter, self_admitting: frozenset[str]) -> None:
        self.limiter = limiter
        self.self_admitting = self_admitting

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in self.self_admitting:
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        limiter = self.limiter

        def admit(context: grpc.ServicerContext) -> Ticket:
            try:
                return limiter.admit(UNAUTHENTICATED, "", method)
            except ApiError as err:
                context.abort_with_status(refusal_status(err, limiter))
                raise  # not reached: abort_with_status raises

        def gen(inner: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Iterator[Any]]:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                ticket = admit(context)
                try:
                    yield from inner(request, context)
                finally:
                    limiter.release(ticket)

            return call

        def unary_out(inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def call(request_iterator: Any, context: grpc.ServicerContext) -> Any:
                ticket = admit(context)
                try:
                    return inner(request_iterator, context)
                finally:
                    limiter.release(ticket)

            return call

        if handler.unary_stream is not None:
            return handler._replace(unary_stream=gen(handler.unary_stream))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=gen(handler.stream_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=unary_out(handler.stream_unary))
        return handler
