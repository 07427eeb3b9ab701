"""egress_dispatch and output: a decided DST_PORT leaves through the local pipeline (acl_ingress, then
its ofport), through the tunnel to the chassis it is bound to (tun_id = segment id, tun_dst = that
chassis's tunnel IP), or onto the physical network with the segment's VLAN tag. What came in from
outside is never sent back outside (split horizon: FROM_TUNNEL must be clear)."""

from __future__ import annotations

from functools import lru_cache

from apps import ids
from apps.view import View
from flows.actions import IN_PORT, Action, CtClear, Goto, Output, PushVlan, SetField
from flows.flow import Flow
from flows.pipeline import ALLOW_LOOPBACK, DST_PORT, FLAGS, FROM_TUNNEL, HIGH, MATCH, flags_match
from topology.records import OVERLAY_TYPES, Network, Port

OFPVID_PRESENT = 0x1000


def to_remote(view: View, chassis_id: str, net: Network, remote_id: str) -> tuple[Action, ...]:
    """Actions that tunnel a packet of `net` to chassis `remote_id` ((): not possible yet)."""
    remote = view.chassis(remote_id)
    tun = view.uplink(chassis_id, net)
    if remote is None or not remote.tunnel_ip or tun is None or net.segment_id is None:
        return ()
    return (SetField("tunnel_id", net.segment_id), SetField("tun_ipv4_dst", remote.tunnel_ip), Output(tun))


def to_uplink(view: View, chassis_id: str, net: Network) -> tuple[Action, ...]:
    """Actions that put a packet of provider network `net` on its physical network."""
    patch = view.uplink(chassis_id, net)
    if patch is None or net.segment_type in OVERLAY_TYPES:
        return ()
    if net.segment_type == "vlan":
        assert net.segment_id is not None
        return (PushVlan(), SetField("vlan_vid", OFPVID_PRESENT | net.segment_id), Output(patch))
    return (Output(patch),)


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    net = view.topo.networks.get(port.network_id)
    if net is None or not view.located(port) or not view.hosts(chassis_id, net.id):
        return []
    c = ids.cookie(ids.EGRESS, port.id)
    dst = {DST_PORT.field: port.key}
    ofport = view.local_ofport(chassis_id, port)
    if ofport is not None:
        loop = flags_match(set_=[ALLOW_LOOPBACK])
        # the port's security groups track in its own zone: forget the state of the zones the packet
        # crossed on the way (the sender's, a router's)
        return [
            Flow("egress_dispatch", MATCH, match=dst, actions=(CtClear(), Goto("acl_ingress")), cookie=c),
            Flow("output", MATCH, match=dst, actions=(Output(ofport),), cookie=c),
            # a reply made in flows for the port itself (router echo) leaves where it came in
            Flow(
                "output",
                HIGH,
                match={**dst, "in_port": ofport, FLAGS.field: loop},
                actions=(Output(IN_PORT),),
                cookie=c,
            ),
        ]
    if port.binding_chassis == chassis_id:
        return []  # bound here but not plugged (yet): nowhere to deliver
    if net.segment_type in OVERLAY_TYPES:
        acts = to_remote(view, chassis_id, net, port.binding_chassis)
    else:
        acts = to_uplink(view, chassis_id, net)
    if not acts:
        return []
    return [_dispatch(port.id, port.key, acts)]


@lru_cache(maxsize=1 << 16)
def _dispatch(port_id: str, port_key: int, acts: tuple[Action, ...]) -> Flow:
    """Send DST_PORT `port_key` out with `acts` (a tunnel or the physical network), unless from outside."""
    return Flow(
        "egress_dispatch",
        MATCH,
        match={DST_PORT.field: port_key, FLAGS.field: flags_match(clear=[FROM_TUNNEL])},
        actions=acts,
        cookie=ids.cookie(ids.EGRESS, port_id),
    )
