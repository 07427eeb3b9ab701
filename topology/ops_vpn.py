"""Write operations of VPNaaS (Neutron VPNaaS v2 with endpoint groups): validation, references, in-use
refusals, statuses.

Like topology.ops: each function reads the Topology and returns changes without touching it; field paths in
errors are relative to the resource ("peer_address"). The northbound resolves names to ids; references are
checked here (existence, same tenant unless `admin`: another tenant's record is NOT_FOUND, as if absent).

Statuses are the controller's: a connection's is what the IKE daemon reports (set_vpn_status, called by the
realization), PENDING_CREATE until it reports, DOWN while the connection or its service is administratively
down. A service's is derived from its connections' by `settle` (every write here ends with it):
DOWN if administratively down, else ACTIVE if one connection is, else PENDING_CREATE if one is or there is
none, else ERROR if one is, else DOWN.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import netaddr

from topology import errors
from topology.model import Change, Topology
from topology.ops import _check_fields, _check_name, _stamp, gateway_port, named, named_ref, router_interfaces
from topology.records import (
    DPD_ACTIONS,
    ENCAPSULATION_MODES,
    ENDPOINT_TYPES,
    EP_CIDR,
    EP_SUBNET,
    IKE_VERSIONS,
    INITIATORS,
    PHASE1_MODES,
    TRANSFORM_PROTOCOLS,
    VPN_ACTIVE,
    VPN_AEAD,
    VPN_AUTH,
    VPN_DOWN,
    VPN_ENCRYPTION,
    VPN_ERROR,
    VPN_PENDING_CREATE,
    VPN_PFS,
    VPN_STATUSES,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    VpnEndpointGroup,
    VpnService,
)

ADMIN_DOWN_REASON = "administratively down"


def _updated(old: Any, fields: dict[str, Any], rev: int, now: float) -> Change:
    return (old.KIND, old.id, old, _stamp(dataclasses.replace(old, **fields), rev, now, False))


# ------------------------------------------------------------------------------------------------ statuses


def service_status(service: VpnService, connections: Iterable[IpsecSiteConnection]) -> str:
    """A service's status from its connections' (see the module's docstring)."""
    if not service.admin_state_up:
        return VPN_DOWN
    statuses = {c.status for c in connections}
    if VPN_ACTIVE in statuses:
        return VPN_ACTIVE
    if not statuses or VPN_PENDING_CREATE in statuses:
        return VPN_PENDING_CREATE
    if VPN_ERROR in statuses:
        return VPN_ERROR
    return VPN_DOWN


def _admin_down(topo: Topology, conn: IpsecSiteConnection, over: dict[tuple[str, str], Any]) -> bool:
    service = over.get(("vpn_service", conn.vpnservice_id), topo.vpn_services.get(conn.vpnservice_id))
    return not conn.admin_state_up or service is None or not service.admin_state_up


def settle(
    topo: Topology, changes: Sequence[Change], service_ids: Iterable[str], rev: int, now: float
) -> list[Change]:
    """`changes` plus those making the given services' statuses follow their connections' as the model would
    hold them after `changes` (a service deleted by `changes` is skipped)."""
    over: dict[tuple[str, str], Any] = {(k, i): new for k, i, _o, new in changes}
    out = list(changes)
    for sid in sorted(set(service_ids)):
        service = over.get(("vpn_service", sid), topo.vpn_services.get(sid))
        if service is None:
            continue
        ids = set(topo.vpn_users.get(("vpn_service", sid), ()))
        ids |= {i for (k, i), new in over.items() if k == "ipsec_site_connection" and new is not None}
        conns = [
            over.get(("ipsec_site_connection", i), topo.ipsec_site_connections.get(i)) for i in sorted(ids)
        ]
        want = service_status(service, (c for c in conns if c is not None and c.vpnservice_id == sid))
        if want == service.status:
            continue
        if ("vpn_service", sid) in over:  # changed in this write already: restate it with the status
            out = [
                (k, i, o, dataclasses.replace(service, status=want) if (k, i) == ("vpn_service", sid) else n)
                for k, i, o, n in out
            ]
        else:
            out.append(_updated(service, {"status": want}, rev, now))
    return out


def set_vpn_status(
    topo: Topology, conn_id: str, status: str, reason: str, rev: int, now: float
) -> list[Change]:
    """What the IKE daemon reports about a connection (never a client's): its status and a reason (""
    when ACTIVE, else why: "authentication failed", "peer unreachable"...), its service's status following
    in the same changes. No changes if nothing changes or the connection is gone. A connection that is
    administratively down (or whose service is) stays DOWN whatever is reported."""
    if status not in VPN_STATUSES:
        raise ValueError(f"{status!r} is not a VPN status")
    conn = topo.ipsec_site_connections.get(conn_id)
    if conn is None:
        return []
    if _admin_down(topo, conn, {}):
        status, reason = VPN_DOWN, ADMIN_DOWN_REASON
    if (conn.status, conn.status_reason) == (status, reason):
        return []
    changes = [_updated(conn, {"status": status, "status_reason": reason}, rev, now)]
    return settle(topo, changes, [conn.vpnservice_id], rev, now)


# ------------------------------------------------------------------------------------------------ checks

MAX_DESCRIPTION = 255
MIN_LIFETIME, MAX_LIFETIME = 60, 86400  # seconds (Neutron's minimum; a day)
MIN_MTU, MAX_MTU = 68, 65535  # 68: the smallest IPv4 MTU (RFC 791)
MAX_DPD_INTERVAL = 3600
MAX_DPD_TIMEOUT = 86400
MAX_PSK = 255
MAX_ENDPOINTS = 100
#: an IKE identity: an address, a FQDN, user@FQDN, "@name" (charon's keyid form); no spaces or quotes
IKE_ID_RE = re.compile(r"^[A-Za-z0-9@._:+-]{1,255}$")
#: why a value charon could do is still not offered (secure by default)
WEAK = {
    "3des": "3des is refused: a 64-bit block cipher (Sweet32)",
    "des": "des is refused: broken",
    "md5": "md5 is refused: broken",
    "group1": "group1 is refused: a 768-bit MODP group",
    "group2": "group2 is refused: a 1024-bit MODP group",
    "group5": "group5 is refused: a 1536-bit MODP group, below 2048 bits",
    "aggressive": "aggressive mode is refused: it sends the PSK's hash to anyone who asks",
    "ah": "ah is not offered: it cannot cross NAT nor userspace ESP; use esp",
    "transport": "transport mode is not offered: a site-to-site VPN is a tunnel",
}

CONNECTION_FIELDS = {
    "local_ep_group": "local_ep_group_id",
    "peer_ep_group": "peer_ep_group_id",
    "dpd_interval": "dpd_interval_s",
    "dpd_timeout": "dpd_timeout_s",
}
POLICY_FIELDS = {"lifetime": "lifetime_s"}

IKE_POLICY_MUTABLE = {
    "display_name",
    "description",
    "ike_version",
    "encryption_algorithm",
    "auth_algorithm",
    "pfs",
    "phase1_negotiation_mode",
    "lifetime",
}
IPSEC_POLICY_MUTABLE = {
    "display_name",
    "description",
    "transform_protocol",
    "encapsulation_mode",
    "encryption_algorithm",
    "auth_algorithm",
    "pfs",
    "lifetime",
}
VPN_SERVICE_MUTABLE = {"display_name", "description", "admin_state_up"}
ENDPOINT_GROUP_MUTABLE = {"display_name", "description"}
CONNECTION_MUTABLE = {
    "display_name",
    "description",
    "peer_address",
    "peer_id",
    "local_id",
    "psk",
    "mtu",
    "dpd_action",
    "dpd_interval",
    "dpd_timeout",
    "initiator",
    "admin_state_up",
    "local_ep_group",
    "peer_ep_group",
}


def _check_text(display_name: str, description: str) -> None:
    _check_name(display_name)
    if len(description) > MAX_DESCRIPTION:
        raise errors.invalid("description", f"longer than {MAX_DESCRIPTION} characters")


def _ref(topo: Topology, kind: str, ident: str, tenant: str, field_path: str) -> Any:
    """A referenced record of the same tenant: NOT_FOUND (naming the field) if missing or another tenant's,
    which must not learn that it exists."""
    if not ident:
        raise errors.invalid(field_path, "required")
    rec = topo.table(kind).get(ident)
    if rec is None or rec.tenant != tenant:
        err = errors.not_found(kind, ident)
        err.violations = [(field_path, f"{kind.replace('_', ' ')} {ident!r} not found")]
        raise err
    return rec


def _choice(value: str, allowed: Iterable[str], field_path: str, default: str) -> str:
    v = (value or default).strip().lower()
    options = list(allowed)
    if v not in options:
        why = WEAK.get(v, f"{value!r} is not supported")
        raise errors.invalid(field_path, f"{why}: one of {', '.join(options)}", reason="UNSUPPORTED_VALUE")
    return v


def _lifetime(value: int) -> int:
    if not MIN_LIFETIME <= value <= MAX_LIFETIME:
        raise errors.invalid("lifetime", f"{value} seconds: must be {MIN_LIFETIME}-{MAX_LIFETIME}")
    return value


def _in_use(kind: str, rec: Any, topo: Topology) -> None:
    users = sorted(topo.vpn_users.get((kind, rec.id), ()))
    if users:
        raise errors.failed_precondition(
            f"{kind.upper()}_IN_USE",
            f"{kind.replace('_', ' ')} {named(rec)} is used by IPsec site connection(s) "
            f"{', '.join(named_ref(topo.ipsec_site_connections, u, rec.tenant) for u in users)}; "
            "delete them first",
            **{kind: rec.id},
        )


# ------------------------------------------------------------------------------------------------ policies


def _check_ike_policy(p: IkePolicy) -> IkePolicy:
    _check_text(p.display_name, p.description)
    version = _choice(p.ike_version, IKE_VERSIONS, "ike_version", "v2")
    enc = _choice(p.encryption_algorithm, VPN_ENCRYPTION, "encryption_algorithm", "aes-128")
    if enc in VPN_AEAD and version == "v1":
        raise errors.invalid(
            "encryption_algorithm",
            f"{enc} needs IKE v2 (charon has no AEAD in IKE v1)",
            reason="UNSUPPORTED_VALUE",
        )
    return dataclasses.replace(
        p,
        ike_version=version,
        encryption_algorithm=enc,
        auth_algorithm=_choice(p.auth_algorithm, VPN_AUTH, "auth_algorithm", "sha256"),
        pfs=_choice(p.pfs, VPN_PFS, "pfs", "group14"),
        phase1_negotiation_mode=_choice(
            p.phase1_negotiation_mode, PHASE1_MODES, "phase1_negotiation_mode", "main"
        ),
        lifetime_s=_lifetime(p.lifetime_s),
    )


def _check_ipsec_policy(p: IpsecPolicy) -> IpsecPolicy:
    _check_text(p.display_name, p.description)
    return dataclasses.replace(
        p,
        transform_protocol=_choice(p.transform_protocol, TRANSFORM_PROTOCOLS, "transform_protocol", "esp"),
        encapsulation_mode=_choice(p.encapsulation_mode, ENCAPSULATION_MODES, "encapsulation_mode", "tunnel"),
        encryption_algorithm=_choice(
            p.encryption_algorithm, VPN_ENCRYPTION, "encryption_algorithm", "aes-128"
        ),
        auth_algorithm=_choice(p.auth_algorithm, VPN_AUTH, "auth_algorithm", "sha256"),
        pfs=_choice(p.pfs, VPN_PFS, "pfs", "group14"),
        lifetime_s=_lifetime(p.lifetime_s),
    )


def create_ike_policy(topo: Topology, p: IkePolicy, rev: int, now: float) -> list[Change]:
    rec = _check_ike_policy(p)
    return [("ike_policy", rec.id, None, _stamp(rec, rev, now, True))]


def create_ipsec_policy(topo: Topology, p: IpsecPolicy, rev: int, now: float) -> list[Change]:
    rec = _check_ipsec_policy(p)
    return [("ipsec_policy", rec.id, None, _stamp(rec, rev, now, True))]


def update_ike_policy(
    topo: Topology, old: IkePolicy, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """`fields` by API name. Allowed while connections use it: the realization negotiates their next IKE SA
    with the new values (the IKE daemon re-reads the connection)."""
    _check_fields(fields, IKE_POLICY_MUTABLE)
    new = _check_ike_policy(
        dataclasses.replace(old, **{POLICY_FIELDS.get(k, k): v for k, v in fields.items()})
    )
    return [("ike_policy", old.id, old, _stamp(new, rev, now, False))]


def update_ipsec_policy(
    topo: Topology, old: IpsecPolicy, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """As update_ike_policy: allowed while in use, the next CHILD_SAs get the new values."""
    _check_fields(fields, IPSEC_POLICY_MUTABLE)
    new = _check_ipsec_policy(
        dataclasses.replace(old, **{POLICY_FIELDS.get(k, k): v for k, v in fields.items()})
    )
    return [("ipsec_policy", old.id, old, _stamp(new, rev, now, False))]


def delete_ike_policy(topo: Topology, old: IkePolicy) -> list[Change]:
    _in_use("ike_policy", old, topo)
    return [("ike_policy", old.id, old, None)]


def delete_ipsec_policy(topo: Topology, old: IpsecPolicy) -> list[Change]:
    _in_use("ipsec_policy", old, topo)
    return [("ipsec_policy", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ services


def create_vpn_service(topo: Topology, svc: VpnService, rev: int, now: float) -> list[Change]:
    """On a router of the tenant with an external gateway (its address is the local IKE endpoint), at most
    one per router."""
    _check_text(svc.display_name, svc.description)
    router = _ref(topo, "router", svc.router_id, svc.tenant, "router")
    gw = gateway_port(topo, router.id)
    if not router.gateway_network_id or gw is None:
        err = errors.failed_precondition(
            "ROUTER_NO_GATEWAY",
            f"router {named(router)} has no external gateway: a VPN service needs one (its address is the "
            "tunnel's local end); set the router's external gateway first",
            router=router.id,
        )
        err.violations = [("router", "has no external gateway")]
        raise err
    other = topo.router_vpn.get(router.id)
    if other is not None:
        err = errors.failed_precondition(
            "ROUTER_HAS_VPN_SERVICE",
            f"router {named(router)} already has VPN service {named_ref(topo.vpn_services, other, svc.tenant)} "
            "(one per router: add connections to it)",
            router=router.id,
            vpn_service=other,
        )
        err.violations = [("router", f"already has VPN service {other!r}")]
        raise err
    v4 = next((a for _s, a in gw.fixed_ips if ":" not in a), "")
    v6 = next((a for _s, a in gw.fixed_ips if ":" in a), "")
    rec = dataclasses.replace(
        svc,
        status=VPN_PENDING_CREATE if svc.admin_state_up else VPN_DOWN,
        external_v4_ip=v4,
        external_v6_ip=v6,
    )
    return [("vpn_service", rec.id, None, _stamp(rec, rev, now, True))]


def _admin_status(conn: IpsecSiteConnection, up: bool, rev: int, now: float) -> Change | None:
    """A connection's status when its (or its service's) admin state flips: DOWN while down, PENDING_CREATE
    again when up (until the IKE daemon reports)."""
    status, reason = (VPN_PENDING_CREATE, "") if up else (VPN_DOWN, ADMIN_DOWN_REASON)
    if (conn.status, conn.status_reason) == (status, reason):
        return None
    return _updated(conn, {"status": status, "status_reason": reason}, rev, now)


def update_vpn_service(
    topo: Topology, old: VpnService, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, VPN_SERVICE_MUTABLE)
    new = dataclasses.replace(old, **fields)
    _check_text(new.display_name, new.description)
    changes: list[Change] = [("vpn_service", old.id, old, _stamp(new, rev, now, False))]
    if new.admin_state_up != old.admin_state_up:
        for cid in sorted(topo.vpn_users.get(("vpn_service", old.id), ())):
            conn = topo.ipsec_site_connections[cid]
            change = _admin_status(conn, new.admin_state_up and conn.admin_state_up, rev, now)
            if change is not None:
                changes.append(change)
    return settle(topo, changes, [old.id], rev, now)


def delete_vpn_service(topo: Topology, old: VpnService) -> list[Change]:
    _in_use("vpn_service", old, topo)
    return [("vpn_service", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ endpoint groups


def create_endpoint_group(topo: Topology, group: VpnEndpointGroup, rev: int, now: float) -> list[Change]:
    """type "subnet": endpoints are subnet ids of the tenant; "cidr": CIDRs (stored with host bits cleared).
    One IP version per group; no repeats."""
    _check_text(group.display_name, group.description)
    kind = (group.type or "").strip().lower()
    if kind not in ENDPOINT_TYPES:
        raise errors.invalid(
            "type",
            f"{group.type!r} is not an endpoint group type: {' or '.join(ENDPOINT_TYPES)}"
            if group.type
            else f"required: {' or '.join(ENDPOINT_TYPES)}",
        )
    if not group.endpoints:
        raise errors.invalid("endpoints", "required: at least one")
    if len(group.endpoints) > MAX_ENDPOINTS:
        raise errors.invalid("endpoints", f"{len(group.endpoints)} endpoints: at most {MAX_ENDPOINTS}")
    out: list[str] = []
    versions: set[int] = set()
    for i, value in enumerate(group.endpoints):
        path = f"endpoints[{i}]"
        if kind == EP_SUBNET:
            sub = _ref(topo, "subnet", value, group.tenant, path)
            norm, version = sub.id, sub.ip_version
        else:
            try:
                net = netaddr.IPNetwork(value.strip())
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise errors.invalid(path, f"{value!r} is not a CIDR") from None
            if "/" not in value:
                raise errors.invalid(path, f"{value!r} has no prefix length")
            norm, version = str(net.cidr), net.version
        if norm in out:
            raise errors.invalid(path, f"repeats endpoints[{out.index(norm)}]")
        versions.add(version)
        if len(versions) > 1:
            raise errors.invalid(path, "mixes IPv4 and IPv6: a group is of one IP version")
        out.append(norm)
    rec = dataclasses.replace(group, type=kind, endpoints=tuple(out))
    return [("vpn_endpoint_group", rec.id, None, _stamp(rec, rev, now, True))]


def update_endpoint_group(
    topo: Topology, old: VpnEndpointGroup, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """Its name and description (type and endpoints are fixed, as in Neutron: make another group and move
    the connections to it)."""
    _check_fields(fields, ENDPOINT_GROUP_MUTABLE)
    new = dataclasses.replace(old, **fields)
    _check_text(new.display_name, new.description)
    return [("vpn_endpoint_group", old.id, old, _stamp(new, rev, now, False))]


def delete_endpoint_group(topo: Topology, old: VpnEndpointGroup) -> list[Change]:
    _in_use("vpn_endpoint_group", old, topo)
    return [("vpn_endpoint_group", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ connections


def _ike_id(value: str, field_path: str) -> str:
    if not IKE_ID_RE.match(value):
        raise errors.invalid(
            field_path,
            "must be 1-255 characters of letters, digits and @ . _ : + - (an address, a FQDN, user@FQDN)",
        )
    return value


def _check_psk(psk: str) -> None:
    """Never echoes the key: not its value, not its length."""
    if not psk:
        raise errors.invalid(
            "psk", "required: a pre-shared key (write-only: never returned)", reason="PSK_REQUIRED"
        )
    if len(psk) > MAX_PSK:
        raise errors.invalid("psk", f"longer than {MAX_PSK} characters", reason="PSK_INVALID")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in psk):
        raise errors.invalid("psk", "contains control characters", reason="PSK_INVALID")


def _peer_address(value: str, service: VpnService) -> str:
    try:
        addr = netaddr.IPAddress(value.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise errors.invalid(
            "peer_address", f"{value!r} is not an IP address (FQDNs are not resolved)"
        ) from None
    if not value or "/" in value:
        raise errors.invalid("peer_address", f"{value!r} is not an IP address")
    if (
        addr.is_loopback()
        or addr.is_multicast()
        or int(addr) == 0
        or addr.is_link_local()
        or (addr.version == 4 and int(addr) == 0xFFFFFFFF)
    ):
        raise errors.invalid("peer_address", f"{addr} is not a unicast address a peer gateway can have")
    local = service.external_v4_ip if addr.version == 4 else service.external_v6_ip
    if not local:
        raise errors.invalid(
            "peer_address",
            f"an IPv{addr.version} peer, but VPN service {named(service)}'s router has no IPv{addr.version} "
            "gateway address",
        )
    if str(addr) == local:
        raise errors.invalid("peer_address", f"{addr} is the router's own gateway address")
    if addr.version == 6:  # a dual-stack gateway has an IPv6 address, but tunnels are realized over IPv4 only
        err = errors.failed_precondition(
            "IPV6_VPN_PEER_NOT_SUPPORTED",
            f"IPsec over IPv6 is not realized yet (tunnels end at the gateway's IPv4 address "
            f"{service.external_v4_ip or '(none)'}): give an IPv4 peer_address",
        )
        err.violations = [("peer_address", "an IPv6 peer")]
        raise err
    return str(addr)


def _check_connection(topo: Topology, conn: IpsecSiteConnection) -> IpsecSiteConnection:
    """The connection checked whole (create, and every update), normalized."""
    _check_text(conn.display_name, conn.description)
    tenant = conn.tenant
    service: VpnService = _ref(topo, "vpn_service", conn.vpnservice_id, tenant, "vpnservice")
    _ref(topo, "ike_policy", conn.ikepolicy_id, tenant, "ikepolicy")
    _ref(topo, "ipsec_policy", conn.ipsecpolicy_id, tenant, "ipsecpolicy")
    local: VpnEndpointGroup = _ref(
        topo, "vpn_endpoint_group", conn.local_ep_group_id, tenant, "local_ep_group"
    )
    peer: VpnEndpointGroup = _ref(topo, "vpn_endpoint_group", conn.peer_ep_group_id, tenant, "peer_ep_group")
    if local.type != EP_SUBNET:
        raise errors.invalid(
            "local_ep_group",
            f"endpoint group {named(local)} is of type {local.type!r}: the local side is a {EP_SUBNET!r} group",
            reason="ENDPOINT_GROUP_TYPE",
        )
    if peer.type != EP_CIDR:
        raise errors.invalid(
            "peer_ep_group",
            f"endpoint group {named(peer)} is of type {peer.type!r}: the peer side is a {EP_CIDR!r} group",
            reason="ENDPOINT_GROUP_TYPE",
        )
    on_router = {sid for _p, sid, _a in router_interfaces(topo, service.router_id)}
    local_nets: list[tuple[str, netaddr.IPNetwork]] = []
    for sid in local.endpoints:
        if sid not in on_router:
            err = errors.failed_precondition(
                "SUBNET_NOT_ON_ROUTER",
                f"subnet {named_ref(topo.subnets, sid, tenant)} of local endpoint group {named(local)} is not an "
                f"interface of router {named_ref(topo.routers, service.router_id, tenant)} (VPN service "
                f"{named(service)}'s); add it to the router first",
                subnet=sid,
                router=service.router_id,
            )
            err.violations = [("local_ep_group", f"subnet {sid!r} is not on the VPN service's router")]
            raise err
        local_nets.append((sid, netaddr.IPNetwork(topo.subnets[sid].cidr)))
    peer_nets = [netaddr.IPNetwork(c) for c in peer.endpoints]
    if local_nets and peer_nets and local_nets[0][1].version != peer_nets[0].version:
        raise errors.invalid(
            "peer_ep_group",
            f"IPv{peer_nets[0].version} peer CIDRs with IPv{local_nets[0][1].version} local subnets",
            reason="IP_VERSION_MISMATCH",
        )
    if any(n.version == 6 for n in peer_nets) or any(n.version == 6 for _s, n in local_nets):
        err = errors.failed_precondition(  # refused, not accepted and left PENDING_CREATE
            "IPV6_VPN_NOT_SUPPORTED",
            "IPsec tunnels carrying IPv6 subnets are not realized yet (IPv4 local subnets and peer CIDRs only)",
        )
        which = "peer_ep_group" if any(n.version == 6 for n in peer_nets) else "local_ep_group"
        err.violations = [(which, "IPv6 endpoints")]
        raise err
    for pnet in peer_nets:
        for sid, lnet in local_nets:
            if pnet in lnet or lnet in pnet:
                raise errors.invalid(
                    "peer_ep_group",
                    f"peer CIDR {pnet} overlaps {lnet} of local subnet {named_ref(topo.subnets, sid, tenant)}",
                    reason="OVERLAPPING_CIDR",
                )
    for cid in sorted(topo.vpn_users.get(("vpn_service", service.id), ())):
        other = topo.ipsec_site_connections[cid]
        if cid == conn.id:
            continue
        for onet in (
            netaddr.IPNetwork(c) for c in topo.vpn_endpoint_groups[other.peer_ep_group_id].endpoints
        ):
            for pnet in peer_nets:
                if pnet in onet or onet in pnet:
                    raise errors.invalid(
                        "peer_ep_group",
                        f"peer CIDR {pnet} overlaps {onet}, a peer CIDR of connection {named(other)} of the same "
                        "VPN service (traffic to it could take either tunnel)",
                        reason="OVERLAPPING_CIDR",
                    )
    address = _peer_address(conn.peer_address, service)
    peer_id = _ike_id(conn.peer_id.strip() or address, "peer_id")
    local_id = _ike_id(conn.local_id.strip(), "local_id") if conn.local_id.strip() else ""
    _check_psk(conn.psk)
    if not MIN_MTU <= conn.mtu <= MAX_MTU:
        raise errors.invalid("mtu", f"{conn.mtu}: must be {MIN_MTU}-{MAX_MTU}")
    dpd_action = _choice(conn.dpd_action, DPD_ACTIONS, "dpd_action", "hold")
    if not 1 <= conn.dpd_interval_s <= MAX_DPD_INTERVAL:
        raise errors.invalid("dpd_interval", f"{conn.dpd_interval_s} seconds: must be 1-{MAX_DPD_INTERVAL}")
    if conn.dpd_timeout_s <= conn.dpd_interval_s:
        raise errors.invalid(
            "dpd_timeout",
            f"{conn.dpd_timeout_s} seconds: must be longer than dpd_interval ({conn.dpd_interval_s})",
        )
    if conn.dpd_timeout_s > MAX_DPD_TIMEOUT:
        raise errors.invalid("dpd_timeout", f"{conn.dpd_timeout_s} seconds: at most {MAX_DPD_TIMEOUT}")
    initiator = _choice(conn.initiator, INITIATORS, "initiator", "bi-directional")
    return dataclasses.replace(
        conn,
        peer_address=address,
        peer_id=peer_id,
        local_id=local_id,
        dpd_action=dpd_action,
        initiator=initiator,
    )


def create_ipsec_site_connection(
    topo: Topology, conn: IpsecSiteConnection, rev: int, now: float
) -> list[Change]:
    """`conn.tenant` is its service's (the API takes it from there). Starts PENDING_CREATE (DOWN if
    administratively down) until the IKE daemon reports."""
    rec = _check_connection(topo, conn)
    up = rec.admin_state_up and topo.vpn_services[rec.vpnservice_id].admin_state_up
    rec = dataclasses.replace(
        rec,
        status=VPN_PENDING_CREATE if up else VPN_DOWN,
        status_reason="" if up else ADMIN_DOWN_REASON,
    )
    changes: list[Change] = [("ipsec_site_connection", rec.id, None, _stamp(rec, rev, now, True))]
    return settle(topo, changes, [rec.vpnservice_id], rev, now)


def update_ipsec_site_connection(
    topo: Topology, old: IpsecSiteConnection, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """`fields` by API name (endpoint groups as ids); the connection is checked whole. A peer id that was the
    peer address follows a new peer address unless given. The status stays the daemon's last report, except
    that an admin state change makes it DOWN / PENDING_CREATE at once."""
    _check_fields(fields, CONNECTION_MUTABLE)
    values = {CONNECTION_FIELDS.get(k, k): v for k, v in fields.items()}
    if "peer_address" in values and "peer_id" not in values and old.peer_id == old.peer_address:
        values["peer_id"] = ""
    new = _check_connection(topo, dataclasses.replace(old, **values))
    if new.admin_state_up != old.admin_state_up:
        up = new.admin_state_up and topo.vpn_services[new.vpnservice_id].admin_state_up
        new = dataclasses.replace(
            new,
            status=VPN_PENDING_CREATE if up else VPN_DOWN,
            status_reason="" if up else ADMIN_DOWN_REASON,
        )
    changes: list[Change] = [("ipsec_site_connection", old.id, old, _stamp(new, rev, now, False))]
    return settle(topo, changes, [old.vpnservice_id], rev, now)


def delete_ipsec_site_connection(
    topo: Topology, old: IpsecSiteConnection, rev: int, now: float
) -> list[Change]:
    changes: list[Change] = [("ipsec_site_connection", old.id, old, None)]
    return settle(topo, changes, [old.vpnservice_id], rev, now)
