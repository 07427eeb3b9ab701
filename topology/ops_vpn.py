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
from collections.abc import Iterable, Sequence
from typing import Any

from topology.model import Change, Topology
from topology.ops import _stamp
from topology.records import (
    VPN_ACTIVE,
    VPN_DOWN,
    VPN_ERROR,
    VPN_PENDING_CREATE,
    VPN_STATUSES,
    IpsecSiteConnection,
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
