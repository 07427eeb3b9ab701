"""The API's cross-cutting concerns as a gRPC server interceptor: the request id (echoed back, and in
controller.api.context.REQUEST for provenance), authentication (the caller in the CALLER contextvar), and the
mapping of refusals (ApiError) and storage failures to gRPC statuses. Handlers only read `principal()`.

grpcio's sync server picks the handler on its polling thread and runs it on a pool thread, so the contextvars
are set by the wrapped behaviour, on the thread that runs the call (for a stream: around each step of it).
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from controller import latency
from controller.api.auth import Principal, Tokens
from controller.api.context import REQUEST
from controller.api.status import storage_error, to_status, unauthenticated
from controller.logs import access
from topology.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who makes the call being served: the token's principal, and the token (its revocation ends streams)."""

    principal: Principal
    token: str


#: the trailing metadata of the unary call running in this thread (the request id first); see add_trailing
TRAILING: ContextVar[list[tuple[str, str | bytes]] | None] = ContextVar("sdn_trailing", default=None)


def add_trailing(context: grpc.ServicerContext, key: str, value: str | bytes) -> None:
    """Add one trailing metadata entry to the call's answer, keeping those set before (grpc's
    set_trailing_metadata replaces them all)."""
    entries = TRAILING.get()
    if entries is None:
        entries = []
        TRAILING.set(entries)
    entries.append((key, value))
    context.set_trailing_metadata(tuple(entries))


#: the authenticated caller while an API call runs in this thread; None otherwise
CALLER: ContextVar[Caller | None] = ContextVar("sdn_caller", default=None)


def caller() -> Caller:
    current = CALLER.get()
    if current is None:
        raise RuntimeError("no authenticated caller: the call did not pass the AuthInterceptor")
    return current


def principal() -> Principal:
    return caller().principal


def authenticate(tokens: Tokens, context: grpc.ServicerContext) -> Caller:
    """The caller named by the `authorization: Bearer <token>` metadata; UNAUTHENTICATED otherwise."""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise unauthenticated("authorization must be 'Bearer <token>'")
            found = tokens.lookup(token.strip())
            if found is None:
                raise unauthenticated("unknown or revoked token")
            return Caller(found, token.strip())
    raise unauthenticated("missing 'authorization: Bearer <token>' metadata")


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id (echoed back), or a fresh one: flows remember the request that made them."""
    for key, value in context.invocation_metadata():
        if key == "x-request-id" and value:
            rid = str(value)[:64]
            break
    else:
        rid = uuid.uuid4().hex[:12]
    try:
        context.send_initial_metadata((("x-request-id", rid),))
    except ValueError:
        pass  # already sent (not on unary calls)
    return rid


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def refuse(context: grpc.ServicerContext, err: ApiError, rid: str) -> None:
    """End the call with `err`'s status; its trailing metadata also carries the request id."""
    st = to_status(err)
    context.abort_with_status(_Status(st.code, st.details, (*st.trailing_metadata, ("x-request-id", rid))))


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    """The status code a finished call ends with, by name, for the access log."""
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        code = None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(code.name) if isinstance(code, grpc.StatusCode) else str(code)


def _tenant(who: Caller | None) -> str:
    if who is None:
        return "-"
    return f"{who.principal.tenant}(admin)" if who.principal.admin else who.principal.tenant


Unary = Callable[[Any, grpc.ServicerContext], Any]
Streaming = Callable[[Any, grpc.ServicerContext], Generator[Any, None, None]]


def guard(method: str, who: Callable[[grpc.ServicerContext], Caller], inner: Unary) -> Unary:
    """`inner` as the API runs a unary call: a request id (REQUEST), the caller `who` names (CALLER), and a
    refusal or storage failure answered as a status."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        if latency.ON:
            latency.stamp("api.in", method)
        started = time.monotonic()
        rid = request_id(context)
        request_token = REQUEST.set(f"{method} {rid}")
        trailing_token = TRAILING.set(None)
        current: Caller | None = None
        failed = True
        try:
            add_trailing(context, "x-request-id", rid)
            current = who(context)
            if latency.ON:
                latency.stamp("api.authed", method)
            caller_token = CALLER.set(current)
            try:
                answer = inner(request, context)
                if latency.ON:
                    latency.stamp("api.handled", method)
                failed = False
                return answer
            finally:
                CALLER.reset(caller_token)
        except ApiError as err:
            refuse(context, err, rid)
        except (OSError, sqlite3.Error) as err:
            log.error("%s: storage failure: %s", method, err)
            refuse(context, storage_error(err), rid)
        finally:
            access(method, _tenant(current), _code(context, failed), started, rid)
            TRAILING.reset(trailing_token)
            REQUEST.reset(request_token)
            if latency.ON:
                latency.stamp("api.out", method)

    return call


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call to `services` (full names), sets CALLER (and REQUEST for unary calls) while
    the handler runs, and turns the ApiError or storage failure it raises into the call's status. A stream
    (Watch) handles its own later errors; this only authenticates it."""

    def __init__(self, tokens: Tokens, services: frozenset[str]) -> None:
        self.tokens = tokens
        self.services = services

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler is None or service not in self.services:
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        return handler

    def _unary(self, method: str, inner: Unary) -> Unary:
        tokens = self.tokens
        return guard(method, lambda context: authenticate(tokens, context), inner)

    def _stream(self, method: str, inner: Streaming) -> Streaming:
        tokens = self.tokens

        def call(request: Any, context: grpc.ServicerContext) -> Generator[Any, None, None]:
            started = time.monotonic()
            rid = request_id(context)
            try:
                who = authenticate(tokens, context)
            except ApiError as err:
                try:
                    refuse(context, err, rid)
                finally:
                    access(method, "-", err.code, started, rid)
                return
            steps = inner(request, context)
            failed = True
            try:
                while True:  # CALLER is set around each step: the generator runs only inside next()
                    token = CALLER.set(who)
                    try:
                        item = next(steps)
                    except StopIteration:
                        failed = False
                        return
                    finally:
                        CALLER.reset(token)
                    yield item
            except GeneratorExit:
                failed = False  # the client went away (or cancelled): the server's side ended fine
                raise
            finally:
                steps.close()  # (the client went away: the stream's own cleanup runs now)
                access(method, _tenant(who), _code(context, failed), started, rid)

        return call
