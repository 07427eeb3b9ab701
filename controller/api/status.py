"""Turn model errors into gRPC statuses with google.rpc details (BadRequest, ErrorInfo).

The one place every northbound error goes through, so the limits on what an error may echo live here:
a request's value (a name, an id) is cut to ECHO_LIMIT characters with an ellipsis, so an 8 KB name yields
a short INVALID_ARGUMENT and never overflows the trailer (RESOURCE_EXHAUSTED on the client). Storage
failures (OSError, SQLite errors) become UNAVAILABLE or FAILED_PRECONDITION, never UNKNOWN.
"""

from __future__ import annotations

import errno
import re
import sqlite3

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from topology.errors import ApiError

DOMAIN = "sdn.v1"
#: characters of one echoed word (a name, an id, a quoted value) kept in messages and details
ECHO_LIMIT = 128
#: characters of a whole message or description (several echoed values)
MESSAGE_LIMIT = 1024
_LONG_WORD = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")


def cap(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` with every word over ECHO_LIMIT characters cut (an ellipsis marks the cut), then at most
    `limit` characters in all."""
    text = _LONG_WORD.sub(lambda m: m.group()[:ECHO_LIMIT] + "…", text)
    return text if len(text) <= limit else text[:limit] + "…"


def to_status(err: ApiError, extra: tuple[object, ...] = ()) -> grpc.Status:
    """The status of `err`: BadRequest (if it names fields), ErrorInfo, then `extra` detail messages."""
    details = []
    if err.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=cap(f, ECHO_LIMIT), description=cap(d))
                for f, d in err.violations
            ]
        )
        details.append(_pack(bad))
    metadata = {cap(k, ECHO_LIMIT): cap(v, ECHO_LIMIT) for k, v in err.metadata.items()}
    details.append(
        _pack(
            error_details_pb2.ErrorInfo(reason=cap(err.reason, ECHO_LIMIT), domain=DOMAIN, metadata=metadata)
        )
    )
    details.extend(_pack(m) for m in extra)
    st = status_pb2.Status(code=getattr(code_pb2, err.code), message=cap(err.message), details=details)
    return rpc_status.to_status(st)


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def abort(context: grpc.ServicerContext, err: ApiError) -> None:
    context.abort_with_status(to_status(err))


def unauthenticated(message: str) -> ApiError:
    return ApiError("UNAUTHENTICATED", "INVALID_TOKEN", message)


#: errno -> (code, reason, what the operator must do); anything else is UNAVAILABLE STORAGE_ERROR
_OS_ERRORS = {
    errno.ENOSPC: ("UNAVAILABLE", "STORAGE_FULL", "the controller's disk is full; retry once space is freed"),
    errno.EDQUOT: ("UNAVAILABLE", "STORAGE_FULL", "the controller's disk quota is exhausted; retry later"),
    errno.EROFS: ("FAILED_PRECONDITION", "STORAGE_READ_ONLY", "the controller's data directory is read-only"),
    errno.EACCES: (
        "FAILED_PRECONDITION",
        "STORAGE_PERMISSION_DENIED",
        "the controller may not write its data directory",
    ),
    errno.EPERM: (
        "FAILED_PRECONDITION",
        "STORAGE_PERMISSION_DENIED",
        "the controller may not write its data directory",
    ),
}


def storage_error(err: OSError | sqlite3.Error) -> ApiError:
    """A storage failure as a status: the change was not made (nothing was acknowledged). The path stays in
    the server's log, not in the answer."""
    if isinstance(err, OSError):
        code, reason, what = _OS_ERRORS.get(
            err.errno or 0, ("UNAVAILABLE", "STORAGE_ERROR", "the controller could not write its data")
        )
        name = errno.errorcode.get(err.errno or 0, "")
    else:
        full = "full" in str(err).lower()
        code, reason, what = (
            ("UNAVAILABLE", "STORAGE_FULL", "the controller's disk is full; retry later")
            if full
            else ("UNAVAILABLE", "STORAGE_ERROR", "the controller's store failed")
        )
        name = type(err).__name__
    return ApiError(code, reason, f"{what}; nothing was changed", metadata={"errno": name} if name else {})
