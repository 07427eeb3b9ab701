"""egress_dispatch and output: a decided DST_PORT leaves through the local pipeline (acl_ingress, then
its ofport), through the tunnel to the chassis it is bound to (tun_id = segment id, tun_dst = that
chassis's tunnel IP), or onto the physical network with the segment's VLAN tag. What came in from
outside is never sent back outside (split horizon: FROM_TUNNEL must be clear). A local port has its
flows here; a remote one none: l2_lookup marks it REMOTE (with the tunnel destination) and one flow per
network sends every such packet out."""

from __future__ import annotations

from apps import ids
from apps.view import View
from flows.actions import Action, CtClear, Goto, Output, PushVlan, Resubmit, SetField, load
from flows.flow import Flow
from flows.pipeline import ALLOW_LOOPBACK, DST_PORT, FLAGS, FROM_TUNNEL, HIGH, MATCH, REMOTE, flags_match
from topology.records import OVERLAY_TYPES, Network, Port

OFPVID_PRESENT = 0x1000
OWNER = "pipeline"


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
        # the port's security groups track in its own zone: forget the state of the zones the packet
        # crossed on the way (the sender's, a router's)
        return [
            Flow("egress_dispatch", MATCH, match=dst, actions=(CtClear(), Goto("acl_ingress")), cookie=c),
            Flow("output", MATCH, match=dst, actions=(Output(ofport),), cookie=c),
        ]
    return []  # bound here but not plugged (yet): nowhere to deliver; bound elsewhere: network_flows


def chassis_flows() -> list[Flow]:
    """A reply made in flows for the port that sent the request (a router's echo, a load balancer's hairpin)
    leaves where it came in: with in_port := 0 the port's own output flow may send it there (OVS never
    outputs to the in_port otherwise). One flow for every port, not one per port."""
    return [
        Flow(
            "output",
            HIGH,
            match={FLAGS.field: flags_match(set_=[ALLOW_LOOPBACK])},
            actions=(
                load(FLAGS.field, 0, ALLOW_LOOPBACK.bit, ALLOW_LOOPBACK.bit),
                SetField("in_port_nxm", 0),
                Resubmit("output"),
            ),
            cookie=ids.cookie(ids.EGRESS, OWNER),
        )
    ]


def network_flows(view: View, chassis_id: str, net: Network) -> list[Flow]:
    """A destination port bound on another chassis (l2_lookup marked it REMOTE and, on an overlay, set the
    tunnel destination to that chassis) leaves through the network's tunnel or physical network, unless it
    came from outside (split horizon): one flow per network, not one per remote port."""
    if not view.hosts(chassis_id, net.id):
        return []
    if net.segment_type in OVERLAY_TYPES:
        tun = view.uplink(chassis_id, net)
        if tun is None or net.segment_id is None:
            return []
        acts: tuple[Action, ...] = (SetField("tunnel_id", net.segment_id), Output(tun))
    else:
        acts = to_uplink(view, chassis_id, net)
        if not acts:
            return []
    return [
        Flow(
            "egress_dispatch",
            MATCH,
            match={"metadata": net.key, FLAGS.field: flags_match(set_=[REMOTE], clear=[FROM_TUNNEL])},
            actions=acts,
            cookie=ids.cookie(ids.EGRESS, net.id),
        )
    ]
