"""The QoS plug-in's pure compile: one unit per port ("qos_port", port id), on the chassis the port is
plugged into.

From the VM (hook from_port, stage qos_egress): the egress bandwidth limit is a kbit/s meter every packet
of the port passes; a DSCP mark is set_field ip_dscp (ovs-ofctl shows mod_nw_tos) on its IPv4 and IPv6
packets. To the VM (hook to_port, stage qos_ingress): the ingress bandwidth limit is a meter every packet
to the port passes. Each port has its own two meters, numbered from its key, so no two ports share one.
"""

from __future__ import annotations

from collections.abc import Iterable

from apps.plugin import Item
from apps.view import View
from flows.actions import Goto, Meter, SetField
from flows.cookie import Cookie
from flows.flow import Flow, MeterEntry
from flows.pipeline import DST_PORT, MATCH, SRC_PORT, hook_next
from sdn_qos import model
from sdn_qos.records import BANDWIDTH_LIMIT, DSCP_MARKING, EGRESS, INGRESS, QosBinding, QosRule
from topology.model import Change, Topology

APP_ID = 130
UNIT = "qos_port"
EGRESS_STAGE = "qos_egress"
INGRESS_STAGE = "qos_ingress"
#: two meters per port key (keys < 2**16): egress at BASE + 2*key, ingress at BASE + 2*key + 1
METER_BASE = 1 << 17
METERS = range(METER_BASE, METER_BASE + (1 << 17))
IPV4, IPV6 = 0x0800, 0x86DD
#: Neutron's OVS agent: a burst of 0 means 80% of the rate
DEFAULT_BURST_PERCENT = 80


def meter_id(port_key: int, direction: str) -> int:
    return METER_BASE + 2 * port_key + (1 if direction == INGRESS else 0)


def burst_kbit(rule: QosRule) -> int:
    return rule.max_burst_kbps or max(1, rule.max_kbps * DEFAULT_BURST_PERCENT // 100)


def port_flows(view: View, chassis_id: str, port_id: str) -> list[Item]:
    """The port's meters and flows on `chassis_id` (none unless it is plugged there and has a policy)."""
    topo = view.topo
    port = topo.ports.get(port_id)
    if port is None or view.local_ofport(chassis_id, port) is None:
        return []
    policy = model.policy_of_port(topo, port_id)
    if not policy:
        return []
    c = Cookie.for_owner(APP_ID, port_id)
    out: list[Item] = []
    limit: dict[str, QosRule] = {}
    dscp: QosRule | None = None
    for rule in model.rules_of(topo, policy):
        if rule.type == BANDWIDTH_LIMIT:
            limit[rule.direction] = rule
        elif rule.type == DSCP_MARKING:
            dscp = rule
    for direction, rule in sorted(limit.items()):
        out.append(MeterEntry(meter_id(port.key, direction), rule.max_kbps, burst_kbit(rule), kbps=True))
    police = (Meter(meter_id(port.key, EGRESS)),) if EGRESS in limit else ()
    if police or dscp is not None:
        src = {SRC_PORT.field: port.key}
        on = (Goto(hook_next(EGRESS_STAGE)),)
        out.append(Flow(EGRESS_STAGE, MATCH, match=src, actions=(*police, *on), cookie=c))
        if dscp is not None:
            for eth_type in (IPV4, IPV6):
                out.append(
                    Flow(
                        EGRESS_STAGE,
                        MATCH(1),
                        match={**src, "eth_type": eth_type},
                        actions=(*police, SetField("ip_dscp", dscp.dscp_mark), *on),
                        cookie=c,
                    )
                )
    if INGRESS in limit:
        out.append(
            Flow(
                INGRESS_STAGE,
                MATCH,
                match={DST_PORT.field: port.key},
                actions=(Meter(meter_id(port.key, INGRESS)), Goto(hook_next(INGRESS_STAGE))),
                cookie=c,
            )
        )
    return out


def all_units(topo: Topology) -> Iterable[str]:
    """Every port with a policy (through its own binding or its network's)."""
    out: set[str] = set()
    for b in model.bindings(topo).values():
        if b.port_id:
            out.add(b.port_id)
        else:
            out.update(p.id for p in topo.ports_of(b.network_id))
    return sorted(out)


def dirty(topo: Topology, change: Change) -> Iterable[str]:
    """The ports whose QoS flows a model change can reach (topo is the model after it)."""
    kind, ident, old, new = change
    if kind == "port":
        return [ident]
    if kind == "qos_policy":
        return model.ports_of_policy(topo, ident)
    out: set[str] = set()
    for rec in (old, new):
        if isinstance(rec, QosRule):
            out |= model.ports_of_policy(topo, rec.policy_id)
        elif isinstance(rec, QosBinding):
            out |= {rec.port_id} if rec.port_id else {p.id for p in topo.ports_of(rec.network_id)}
    return out
