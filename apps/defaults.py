"""Each stage's catch-all: pass-through stages hand the packet on, deciding stages drop what they did not
claim. Security groups (acl_*) and port security replace these pass-throughs when they land. The plug-in
hooks' entries and the plug-in stages pass on as well (a plug-in adds flows above them, never a default)."""

from __future__ import annotations

from apps import ids
from flows.actions import Goto, Resubmit
from flows.flow import Flow
from flows.pipeline import DEFAULT, HOOKS, hook_next, plugin_stages

OWNER = "pipeline"
PASS_THROUGH = {
    "port_sec_in": "plugin_from_port",
    "acl_egress": "arp_nd",
    "fw_router_in": "acl_egress_commit",
    "acl_egress_commit": "arp_nd",
    "fw_router_out": "snat",
    "acl_ingress_commit": "plugin_to_port",
    "arp_nd": "dhcp",
    "dhcp": "lb",
    "lb": "l2_lookup",
    "acl_ingress": "plugin_to_port",
    "dnat": "l3_lookup",
}
DROP = ("classify", "l2_lookup", "l3_lookup", "arp_resolve", "egress_dispatch", "output")


def chassis_flows() -> list[Flow]:
    c = ids.cookie(ids.DEFAULTS, OWNER)
    out = [Flow(stage, DEFAULT, actions=(Goto(nxt),), cookie=c) for stage, nxt in PASS_THROUGH.items()]
    # the plug-in hooks: each entry and each plug-in stage passes on what no plug-in flow claims
    for hook in HOOKS.values():
        for stage in (hook.entry, *(s.name for s in plugin_stages(hook.name))):
            out.append(Flow(stage, DEFAULT, actions=(Goto(hook_next(stage)),), cookie=c))
    out += [Flow(stage, DEFAULT, cookie=c) for stage in DROP]  # no actions: drop, visibly in dumps
    # routed packets (DATAPATH now the egress network, eth_dst resolved) go back to switching
    out.append(Flow("snat", DEFAULT, actions=(Resubmit("l2_lookup"),), cookie=c))
    return out
