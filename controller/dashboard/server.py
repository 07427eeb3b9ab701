"""The dashboard's HTTP server: static files (the page) and a read-only JSON API behind bearer tokens.

    GET /                      the page (login, then topology / flows / trace)
    GET /static/<file>         its script and style (no data, no token needed)
    GET /api/whoami            the principal of the token, the model revision
    GET /api/topology          nodes and edges the token may see, laid out
    GET /api/chassis           chassis with switch status                      (admin)
    GET /api/flows?chassis=ID  the chassis's flow tables by stage, with counters  (admin)
    GET /api/trace?src=&dst=&proto=&dport=   controller.debug.trace of that packet    (admin)
    GET /api/events?from=REV   server-sent events: the topology Watch from REV (at most MAX_STREAMS at once,
                               max_streams_per_tenant of one tenant: 503 over; a revoked token's stream
                               gets `event: revoked` and ends within a second)

Every /api call needs ``Authorization: Bearer <token>``, checked against the controller's TokenFile
(401 without a known token, 403 for admin views with a tenant token). The page keeps the token in
sessionStorage and sends it on each call (fetch, also for the event stream), so no cookie is involved.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from controller import config as config_mod
from controller.api.auth import Principal, TokenFile
from controller.api.northbound import TopologyService
from controller.api.streams import StreamLimiter
from controller.dashboard import views
from proto.sdn.v1 import topology_pb2 as pb
from topology.errors import ApiError
from topology.state import State
from topology.store import HistoryCompacted

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
HEARTBEAT_S = 15.0
MAX_STREAMS = 32  # event streams at once (each holds a thread)
MAX_STREAMS_PER_TENANT = 8  # of them, one tenant's
_EVENT_TYPES = {
    pb.WatchEvent.CREATED: "CREATED",
    pb.WatchEvent.UPDATED: "UPDATED",
    pb.WatchEvent.DELETED: "DELETED",
    pb.WatchEvent.EXISTING: "EXISTING",
}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class DashboardServer:
    """Serves the dashboard on `address` (HOST:PORT; port 0 picks one) from its own threads."""

    def __init__(
        self,
        state: State,
        tokens: TokenFile,
        address: str,
        dataplane: Any = None,
        max_streams_per_tenant: int = MAX_STREAMS_PER_TENANT,
    ) -> None:
        self.state = state
        self.tokens = tokens
        self.dataplane = dataplane
        self._stopping = threading.Event()
        # event streams, capped in total and per tenant; a revoked token's streams are woken and end
        self.streams = StreamLimiter(MAX_STREAMS, min(max_streams_per_tenant, MAX_STREAMS), wake=self._wake)
        tokens.on_revoke(self.streams.revoke)
        # the northbound's own Watch logic (snapshot-free resume from a revision, visibility per principal)
        self.watch = TopologyService(state, tokens, stopping=self._stopping.is_set)
        host, port = config_mod.split_hostport(address)
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def _wake(self) -> None:
        self.watch.wake_streams()

    def stop(self) -> None:
        self._stopping.set()
        self.tokens.remove_revoke_listener(self.streams.revoke)
        self._wake()  # wake event streams so they end
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    # --------------------------------------------------------------------------------------------- api

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "missing 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(HTTPStatus.UNAUTHORIZED, "authorization must be 'Bearer <token>'")
        principal = self.tokens.lookup(token.strip())
        if principal is None:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "unknown or revoked token")
        return principal

    def api(self, path: str, query: dict[str, str], p: Principal) -> Any:
        if path == "/api/whoami":
            return {
                "tenant": p.tenant,
                "admin": p.admin,
                "revision": self.state.revision,
                "features": {
                    "flows": p.admin and self.dataplane is not None,
                    "trace": p.admin and self.dataplane is not None,
                },
            }
        if path == "/api/topology":
            return views.topology(self.state, p, self.dataplane)
        if path in ("/api/chassis", "/api/flows", "/api/trace", "/api/trace/ports"):
            if not p.admin:
                raise HttpError(HTTPStatus.FORBIDDEN, "chassis, flows and traces are admin only")
            if self.dataplane is None:
                raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "this controller runs without a dataplane")
            if path == "/api/chassis":
                return {"chassis": views.chassis_list(self.state, self.dataplane)}
            if path == "/api/flows":
                return views.flow_tables(self.state, self.dataplane, query.get("chassis", ""))
            if path == "/api/trace/ports":
                return {"ports": views.trace_choices(self.state, p)}
            return views.trace(self.state, self.dataplane, p, query)
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {path}")


class _StreamContext:
    """What TopologyService._watch asks of a gRPC context: is the client still there (and its token still
    valid)? Also sends a heartbeat comment when the stream has been quiet, which is how a vanished client is
    noticed."""

    def __init__(self, handler: _Handler, still_authorized: Callable[[], bool]) -> None:
        self.handler = handler
        self.still_authorized = still_authorized
        self.last_write = time.monotonic()
        self.closed = False
        self.revoked = False

    def write(self, text: str) -> None:
        try:
            self.handler.wfile.write(text.encode())
            self.handler.wfile.flush()
            self.last_write = time.monotonic()
        except OSError:
            self.closed = True

    def is_active(self) -> bool:
        if self.closed:
            return False
        if not self.still_authorized():  # a revoked token's stream ends (a dict lookup: checked every time)
            self.revoked = True
            return False
        if time.monotonic() - self.last_write > HEARTBEAT_S:
            self.write(": keepalive\n\n")
        sock = self.handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not sock.recv(1, socket.MSG_PEEK):
                self.closed = True  # the client closed its side
        except OSError:
            self.closed = True
        return not self.closed


class _Handler(BaseHTTPRequestHandler):
    app: DashboardServer
    server_version = "sdn-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _headers(
        self, status: HTTPStatus, ctype: str, length: int | None = None, cache: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="sdn-controller"')
        self.end_headers()

    def _json(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self._headers(status, "application/json", len(data))
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._headers(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", 0)

    def do_POST(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "the dashboard is read-only"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/favicon.ico":
            return self._static("favicon.svg")
        if not path.startswith("/api/"):
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {path}"})
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            principal = self.app.authenticate(self.headers.get("Authorization"))
            if path == "/api/events":
                return self._events(principal, query)
            body = self.app.api(path, query, principal)
        except HttpError as err:
            return self._json(err.status, {"error": str(err)})
        except views.NotFound as err:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"not found: {err}"})
        except views.BadRequest as err:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except Exception as err:
            log.exception("dashboard %s", path)
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(err).__name__}: {err}"})
        return self._json(HTTPStatus.OK, body)

    def _static(self, name: str) -> None:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}  # only files that are there, by name
        f = files.get(name)
        if f is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file {name}"})
        data = f.read_bytes()
        self._headers(
            HTTPStatus.OK,
            CONTENT_TYPES.get(f.suffix, "application/octet-stream"),
            len(data),
            cache=f.suffix != ".html",
        )
        self.wfile.write(data)

    def _events(self, p: Principal, query: dict[str, str]) -> None:
        """text/event-stream of topology changes after revision `from` (the one /api/topology answered);
        an unusable `from` (ahead, compacted) restarts at the head with a `reset` event: refetch."""
        state = self.app.state
        try:
            start = int(query.get("from", "0") or 0)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "from must be a revision number") from None
        token = (self.headers.get("Authorization") or "").partition(" ")[2].strip()
        try:
            ticket = self.app.streams.admit(p.tenant, token, "events")
        except ApiError as err:
            limits = self.app.streams
            mine = "yours" if err.reason == "TENANT_STREAM_LIMIT" else "this server's"
            raise HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many event streams ({mine} are full: {limits.max_per_tenant} per tenant, "
                f"{limits.max_total} in all); close another dashboard tab or retry later",
            ) from None
        try:
            self._headers(HTTPStatus.OK, "text/event-stream")
            ctx = _StreamContext(self, lambda: not ticket.revoked and self.app.tokens.lookup(token) == p)
            head = state.revision
            if start <= 0 or start > head or start < state.store.oldest_retained_revision():
                start = head
                ctx.write(f"event: reset\ndata: {json.dumps({'revision': head})}\n\n")
            ctx.write(f"event: hello\ndata: {json.dumps({'revision': start})}\n\n")
            try:
                for ev in self.app.watch._watch(p, start, ctx):  # type: ignore[arg-type]
                    kind = ev.WhichOneof("resource")
                    if kind is None:  # SYNCED: caught up
                        ctx.write(f"event: synced\ndata: {json.dumps({'revision': ev.revision})}\n\n")
                        continue
                    obj = getattr(ev, kind)
                    body = {
                        "type": _EVENT_TYPES.get(ev.type, str(ev.type)),
                        "revision": ev.revision,
                        "kind": kind,
                        "name": obj.name,
                    }
                    ctx.write(f"event: change\ndata: {json.dumps(body)}\n\n")
                    if ctx.closed:
                        break
            except HistoryCompacted:  # fell behind a compaction while replaying: refetch, as for `from`
                ctx.write(f"event: reset\ndata: {json.dumps({'revision': state.revision})}\n\n")
            if ctx.revoked:  # tell the page why, then end the response (HTTP/1.0: the connection closes)
                ctx.write(f"event: revoked\ndata: {json.dumps({'error': 'the token was revoked'})}\n\n")
        finally:
            self.app.streams.release(ticket)
