"""Refusals as Neutron answers them: the HTTP status of each gRPC canonical code, and the NeutronError body
(type, message, detail) with the model's field paths named by the Neutron attribute they came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from topology.errors import ApiError

STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 409,  # Neutron: IpAddressGenerationFailure, OverQuota are 409
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}

#: our kinds as Neutron's exception names spell them
NEUTRON_NAMES = {
    "floating_ip": "FloatingIP",
    "security_group_rule": "SecurityGroupRule",
    "qos_policy": "QosPolicy",
    "qos_rule": "QosRule",
    "ike_policy": "IKEPolicy",
    "ipsec_policy": "IPsecPolicy",
    "vpn_service": "VPNService",
    "ipsec_site_connection": "IPsecSiteConnection",
}
#: our reasons whose Neutron exception has another name
NEUTRON_TYPES = {
    "IP_ADDRESS_IN_USE": "IpAddressAlreadyAllocated",
    "MAC_ADDRESS_IN_USE": "MacAddressInUse",
    "IP_POOL_EXHAUSTED": "IpAddressGenerationFailure",
    "ADMIN_ONLY": "PolicyNotAuthorized",
}


def camel(words: str) -> str:
    return "".join(w.capitalize() for w in words.replace("-", "_").split("_") if w)


def body(kind: str, message: str, octavia: bool = False, status: int = 400) -> dict[str, Any]:
    if octavia:  # Octavia (wsme) answers faultstring
        return {
            "faultcode": "Client" if status < 500 else "Server",
            "faultstring": message,
            "debuginfo": None,
        }
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


def from_api_error(err: ApiError, attr_of: Mapping[str, str], spec_kind: str) -> tuple[int, str, str]:
    """(HTTP status, Neutron's error type, message) for a refusal. `attr_of`: the kind's message field ->
    Neutron attribute, to name the attribute a field violation is about."""
    status = STATUS.get(err.code, 500)
    if err.code == "NOT_FOUND":
        kind = err.metadata.get("kind", spec_kind)
        name = NEUTRON_NAMES.get(kind, camel(kind))
        ident = err.metadata.get("id", "")
        return status, f"{name}NotFound", f"{name} {ident} could not be found."
    if err.reason == "IP_ADDRESS_IN_USE":
        ip, subnet = err.metadata.get("ip_address", ""), err.metadata.get("subnet", "")
        return status, "IpAddressAlreadyAllocated", f"IP address {ip} already allocated in subnet {subnet}"
    if err.code == "INVALID_ARGUMENT" and err.violations:
        reasons = []
        for path, description in err.violations:
            field = path.partition(".")[2] if path.startswith(spec_kind + ".") else path
            top = field.split(".")[0].split("[")[0]
            reasons.append(
                f"Invalid input for {attr_of.get(top, field or 'request')}. Reason: {description}."
            )
        return status, "HTTPBadRequest", " ".join(reasons)
    kind = NEUTRON_TYPES.get(err.reason) or camel(err.reason.lower())
    return status, kind, err.message
