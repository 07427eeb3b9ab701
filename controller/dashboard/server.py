"""The dashboard's HTTP server: static files (the page) and a read-only JSON API behind bearer tokens.

    GET /                      the page (login, then topology / flows / trace)
    GET /static/<file>         its script and style (no data, no token needed)
    GET /api/whoami            the principal of the token, the model revision
    GET /api/topology          nodes and edges the token may see, laid out
    GET /api/chassis           chassis with switch status                      (admin)
    GET /api/flows?chassis=ID  the chassis's flow tables by stage, with counters  (admin)
    GET /api/trace?src=&dst=&proto=&dport=   the API's Trace of that packet    (admin)
    GET /api/events?from=REV   server-sent events: the API's topology Watch from REV (under the API's stream
                               caps: 503 over; a revoked token's stream gets `event: revoked` and ends)

The dashboard is a client of the gRPC API (client.py): every /api call needs ``Authorization: Bearer
<token>`` and is answered with the API's answers to that token (401 without a known token, 403 for admin
views with a tenant token), so a tenant sees exactly what the API shows it. The page keeps the token in
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

import grpc

from controller import config as config_mod
from controller.dashboard import views
from controller.dashboard.client import Api, Caller, HttpError, error_info, http_error
from proto.sdn.v1 import topology_pb2 as pb

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
CHECK_S = 0.5  # how often an event stream looks whether its client is still there
_EVENT_TYPES = {
    pb.WatchEvent.CREATED: "CREATED",
    pb.WatchEvent.UPDATED: "UPDATED",
    pb.WatchEvent.DELETED: "DELETED",
    pb.WatchEvent.EXISTING: "EXISTING",
}
ADMIN_PATHS = ("/api/chassis", "/api/flows", "/api/trace", "/api/trace/ports")


class DashboardServer:
    """Serves the dashboard on `address` (HOST:PORT; port 0 picks one) from its own threads, asking the API
    over `channel` (client.connect: the controller's own gRPC server) with each caller's token."""

    def __init__(self, channel: grpc.Channel, address: str) -> None:
        self.api = Api(channel)
        self._stopping = threading.Event()
        self._streams_lock = threading.Lock()
        self._streams: set[Any] = set()  # open Watch calls, cancelled on stop
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

    @property
    def open_streams(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._streams_lock:
            streams = list(self._streams)
        for call in streams:  # event streams end
            call.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    # --------------------------------------------------------------------------------------------- api

    def caller(self, header: str | None) -> Caller:
        """The API as the holder of the request's bearer token (the API checks the token on each call)."""
        if not header:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "missing 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(HTTPStatus.UNAUTHORIZED, "authorization must be 'Bearer <token>'")
        return self.api.as_caller(token.strip())

    def answer(self, path: str, query: dict[str, str], c: Caller) -> Any:
        if path == "/api/whoami":
            return views.whoami(c)
        admin = c.topology("GetServerInfo", pb.GetServerInfoRequest()).admin
        if path == "/api/topology":
            return views.topology(c, admin)
        if path in ADMIN_PATHS:
            if not admin:
                raise HttpError(HTTPStatus.FORBIDDEN, "chassis, flows and traces are admin only")
            if path == "/api/chassis":
                return {"chassis": views.chassis_list(c)}
            if path == "/api/flows":
                return views.flow_tables(c, query.get("chassis", ""))
            if path == "/api/trace/ports":
                return {"ports": views.trace_choices(c)}
            return views.trace(c, query)
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {path}")

    def watching(self, call: Any, on: bool) -> None:
        with self._streams_lock:
            if on:
                self._streams.add(call)
            else:
                self._streams.discard(call)


class _StreamWriter:
    """Writes an event stream to its client, one writer at a time; a watcher thread sends a heartbeat
    comment when the stream has been quiet (which is how a vanished client is noticed) and cancels the
    Watch call once the client has gone."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler
        self.lock = threading.Lock()
        self.last_write = time.monotonic()
        self.closed = False

    def write(self, text: str) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                self.handler.wfile.write(text.encode())
                self.handler.wfile.flush()
                self.last_write = time.monotonic()
            except OSError:
                self.closed = True

    def client_gone(self) -> bool:
        if time.monotonic() - self.last_write > HEARTBEAT_S:
            self.write(": keepalive\n\n")
        sock = self.handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not sock.recv(1, socket.MSG_PEEK):
                self.closed = True  # the client closed its side
        except OSError:
            self.closed = True
        return self.closed

    def guard(self, call: Any, done: threading.Event) -> Callable[[], None]:
        def run() -> None:
            while not done.wait(CHECK_S):
                if self.client_gone():
                    call.cancel()
                    return

        return run


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
            c = self.app.caller(self.headers.get("Authorization"))
            if path == "/api/events":
                return self._events(c, query)
            body = self.app.answer(path, query, c)
        except grpc.RpcError as err:
            err2 = http_error(err)
            return self._json(err2.status, {"error": str(err2)})
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

    def _events(self, c: Caller, query: dict[str, str]) -> None:
        """text/event-stream of topology changes after revision `from` (the one /api/topology answered), from
        the API's Watch; an unusable `from` (ahead, compacted) restarts at the head with a `reset` event:
        refetch."""
        try:
            start = int(query.get("from", "0") or 0)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "from must be a revision number") from None
        info = c.topology("GetServerInfo", pb.GetServerInfoRequest())
        reset = start <= 0 or start > info.revision or start < info.compacted_revision
        if reset:
            start = info.revision
        call: Any = c.watch(start)
        self.app.watching(call, True)
        try:
            try:  # the first event (SYNCED at the latest) says whether the API admitted the stream
                first: pb.WatchEvent | None = next(call)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    info_ = error_info(err)
                    md = dict(info_.metadata) if info_ is not None else {}
                    mine = (
                        "yours"
                        if info_ is not None and info_.reason == "TENANT_STREAM_LIMIT"
                        else "the API's"
                    )
                    limit = f": {md['limit']} per tenant" if mine == "yours" and "limit" in md else ""
                    raise HttpError(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        f"too many event streams ({mine} are full{limit}); close another dashboard tab or "
                        "retry later",
                    ) from None
                raise
            except StopIteration:
                first = None
            self._relay(c, call, first, start, reset)
        finally:
            self.app.watching(call, False)
            call.cancel()

    def _relay(self, c: Caller, call: Any, first: pb.WatchEvent | None, start: int, reset: bool) -> None:
        out = _StreamWriter(self)
        self._headers(HTTPStatus.OK, "text/event-stream")
        if reset:
            out.write(f"event: reset\ndata: {json.dumps({'revision': start})}\n\n")
        out.write(f"event: hello\ndata: {json.dumps({'revision': start})}\n\n")
        done = threading.Event()
        threading.Thread(target=out.guard(call, done), name="dashboard-events", daemon=True).start()
        try:
            events = [first] if first is not None else []
            for ev in _chain(events, call):
                kind = ev.WhichOneof("resource")
                if kind is None:  # SYNCED: caught up
                    out.write(f"event: synced\ndata: {json.dumps({'revision': ev.revision})}\n\n")
                    continue
                body = {
                    "type": _EVENT_TYPES.get(ev.type, str(ev.type)),
                    "revision": ev.revision,
                    "kind": kind,
                    "name": getattr(ev, kind).name,
                }
                out.write(f"event: change\ndata: {json.dumps(body)}\n\n")
                if out.closed:
                    break
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:  # revoked: tell the page why, then end the response
                out.write(f"event: revoked\ndata: {json.dumps({'error': 'the token was revoked'})}\n\n")
            elif code == grpc.StatusCode.OUT_OF_RANGE:  # fell behind a compaction: refetch, as for `from`
                try:
                    head = c.topology("GetServerInfo", pb.GetServerInfoRequest()).revision
                except grpc.RpcError:
                    head = 0
                out.write(f"event: reset\ndata: {json.dumps({'revision': head})}\n\n")
            elif code != grpc.StatusCode.CANCELLED:
                log.warning("dashboard event stream: %s %s", code.name, err.details())
        finally:
            done.set()


def _chain(first: list[pb.WatchEvent], rest: Any) -> Any:
    yield from first
    yield from rest
