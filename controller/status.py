"""Turn model errors into gRPC statuses with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from topology.errors import ApiError

DOMAIN = "sdn.v1"


def to_status(err: ApiError, extra: tuple[object, ...] = ()) -> grpc.Status:
    """The status of `err`: BadRequest (if it names fields), ErrorInfo, then `extra` detail messages."""
    details = []
    if err.violations:
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in err.violations])
        details.append(_pack(bad))
    details.append(_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)))
    details.extend(_pack(m) for m in extra)
    st = status_pb2.Status(code=getattr(code_pb2, err.code), message=err.message, details=details)
    return rpc_status.to_status(st)


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def abort(context: grpc.ServicerContext, err: ApiError) -> None:
    context.abort_with_status(to_status(err))


def unauthenticated(message: str) -> ApiError:
    return ApiError("UNAUTHENTICATED", "INVALID_TOKEN", message)
