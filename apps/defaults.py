"""Each stage's catch-all: pass-through stages hand the packet on, deciding stages drop what they did not
claim. Security groups (acl_*) and port security replace these pass-throughs when they land."""

from __future__ import annotations

from apps import ids
from flows.actions import Goto, Resubmit
from flows.flow import Flow
from flows.pipeline import DEFAULT

OWNER = "pipeline"
PASS_THROUGH = {
    "port_sec_in": "acl_egress",
    "acl_egress": "arp_nd",
    "fw_router_in": "acl_egress_commit",
    "acl_egress_commit": "arp_nd",
    "fw_router_out": "snat",
    "acl_ingress_commit": "output",
    "arp_nd": "dhcp",
    "dhcp": "lb",
    "lb": "l2_lookup",
    "acl_ingress": "output",
    "dnat": "l3_lookup",
}
DROP = ("classify", "l2_lookup", "l3_lookup", "arp_resolve", "egress_dispatch", "output")


def chassis_flows() -> list[Flow]:
    c = ids.cookie(ids.DEFAULTS, OWNER)
    out = [Flow(stage, DEFAULT, actions=(Goto(nxt),), cookie=c) for stage, nxt in PASS_THROUGH.items()]
    out += [Flow(stage, DEFAULT, cookie=c) for stage in DROP]  # no actions: drop, visibly in dumps
    # routed packets (DATAPATH now the egress network, eth_dst resolved) go back to switching
    out.append(Flow("snat", DEFAULT, actions=(Resubmit("l2_lookup"),), cookie=c))
    return out
