"""Errors of the model, in the vocabulary of gRPC canonical codes (the northbound maps them 1:1)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ApiError(Exception):
    """A refused request: canonical code name, machine-readable reason, human message, field violations.
    The model names fields relative to the resource ("cidr"); the API layer names them from the request
    (controller/api/resources.py `prefixed`)."""

    code: str
    reason: str
    message: str
    violations: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"


def invalid(field_path: str, description: str, reason: str = "INVALID_FIELD") -> ApiError:
    return ApiError("INVALID_ARGUMENT", reason, f"{field_path}: {description}", [(field_path, description)])


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(
        "NOT_FOUND",
        f"{kind.upper()}_NOT_FOUND",
        f"{kind} {ident!r} not found",
        metadata={"kind": kind, "id": ident},
    )


def already_exists(kind: str, ident: str, reason: str | None = None, message: str | None = None) -> ApiError:
    return ApiError(
        "ALREADY_EXISTS",
        reason or f"{kind.upper()}_EXISTS",
        message or f"{kind} {ident!r} already exists",
        metadata={"kind": kind, "id": ident},
    )


def in_use(reason: str, message: str, **metadata: str) -> ApiError:
    """ALREADY_EXISTS for a value that must be unique across tenants (a MAC, an IP address): says what is
    taken, never by whom, since the holder may be another tenant's object."""
    return ApiError("ALREADY_EXISTS", reason, message, metadata=dict(metadata))


def failed_precondition(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError("FAILED_PRECONDITION", reason, message, metadata=dict(metadata))


def exhausted(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError("RESOURCE_EXHAUSTED", reason, message, metadata=dict(metadata))


def permission_denied(field_path: str, message: str) -> ApiError:
    return ApiError("PERMISSION_DENIED", "ADMIN_ONLY", message, [(field_path, message)] if field_path else [])
