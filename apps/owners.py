"""Every owner id the model's flows can carry in their cookies, for dumps, traces, drift and metrics.

Apart from apps/ids.py (the low-level ids every app imports) because it needs to know what each app owns
(security groups' clause units, from apps/acl.py): ids stays a leaf, and this module sits above the apps.
"""

from __future__ import annotations

from apps import acl
from topology.model import Topology


def model_owners(topo: Topology) -> list[str]:
    """Every owner id flows of the model can carry in their cookies: networks, ports, routers, floating IPs,
    security group rules and their clause flows, firewall rules and groups, load balancers, VPN services."""
    out = [
        *topo.networks,
        *topo.ports,
        *topo.routers,
        *topo.floatingips,
        *topo.sg_rules,
        *topo.firewall_rules,
        *topo.firewall_groups,
        *topo.load_balancers,
        *topo.vpn_services,
        acl.OWNER,
    ]
    out += [f"clause:{ident}" for kind, ident in acl.all_units(topo) if kind == "acl_clause"]
    return out
