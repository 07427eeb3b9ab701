"""The dashboard's way to the API: a gRPC channel to the controller's own server and the stubs the CLI uses,
each call made with the token of the dashboard's caller. The API authenticates and scopes every answer, so
the dashboard shows a tenant exactly what the API shows that tenant, and never more."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller import config as config_mod
from controller.pki import TlsFiles
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

TIMEOUT_S = 15.0
PAGE_SIZE = 1000

#: how an API status reads over HTTP
HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.SERVICE_UNAVAILABLE,  # no dataplane: no DataplaneService
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def http_error(err: grpc.RpcError) -> HttpError:
    """An API refusal as the dashboard answers it: the same meaning, the API's own words."""
    code = err.code()
    return HttpError(HTTP_STATUS.get(code, HTTPStatus.BAD_GATEWAY), err.details() or code.name)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc ErrorInfo of a refusal (reason, metadata), if it has one."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def connect(grpc_address: str, tls: TlsFiles | None = None) -> grpc.Channel:
    """A channel to the controller's gRPC server at HOST:PORT (a wildcard host: loopback); over TLS with the
    controller's own certificate (a client certificate of our CA) when the server speaks TLS."""
    host, port = config_mod.split_hostport(grpc_address)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        return grpc.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes())
    return grpc.secure_channel(target, creds)


class Api:
    """The stubs over one channel; `as_caller(token)` makes calls as the holder of `token`."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.topology = pb_grpc.TopologyServiceStub(channel)
        self.dataplane = dpb_grpc.DataplaneServiceStub(channel)
        self.debug = dbg_grpc.DebugServiceStub(channel)

    def as_caller(self, token: str) -> Caller:
        return Caller(self, token)


class Caller:
    """API calls with one caller's bearer token; a refusal raises grpc.RpcError (see http_error)."""

    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        self.metadata = (("authorization", f"Bearer {token}"),)

    def call(self, rpc: Callable[..., Any], request: Any) -> Any:
        return rpc(request, metadata=self.metadata, timeout=TIMEOUT_S)

    def topology(self, method: str, request: Any) -> Any:
        return self.call(getattr(self.api.topology, method), request)

    def dataplane(self, method: str, request: Any) -> Any:
        return self.call(getattr(self.api.dataplane, method), request)

    def debug(self, method: str, request: Any) -> Any:
        return self.call(getattr(self.api.debug, method), request)

    def list(self, method: str, field: str, **filters: str) -> list[Any]:
        """Every page of a TopologyService List call (e.g. "ListPorts", "ports", network="networks/x")."""
        request_cls = getattr(pb, f"{method}Request")
        items: list[Any] = []
        token = ""
        while True:
            resp = self.topology(method, request_cls(page_size=PAGE_SIZE, page_token=token, **filters))
            items.extend(getattr(resp, field))
            token = resp.next_page_token
            if not token:
                return items

    def watch(self, start_revision: int) -> Iterator[pb.WatchEvent]:
        """The Watch stream (no deadline: it lasts as long as the caller keeps it; cancel() ends it)."""
        stream: Iterator[pb.WatchEvent] = self.api.topology.Watch(
            pb.WatchRequest(start_revision=start_revision), metadata=self.metadata
        )
        return stream


__all__ = ["Api", "Caller", "HttpError", "connect", "error_info", "http_error"]
