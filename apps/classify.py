"""classify: where a packet comes from decides its logical network (DATAPATH in metadata) and source.

- a VM port (in_port): DATAPATH, SRC_PORT; then port security and the rest of the ingress pipeline;
- a tunnel (in_port of the type's tunnel port + tun_id = segment id): DATAPATH, FROM_TUNNEL; straight to
  l2_lookup (the sending chassis already ran the ingress pipeline);
- the physical network (patch port + VLAN tag, or untagged for flat): pop the tag, DATAPATH, FROM_TUNNEL.
"""

from __future__ import annotations

from apps import ids
from apps.view import View
from flows.actions import Goto, PopVlan, SetField, WriteMetadata, load
from flows.flow import Flow
from flows.pipeline import FLAGS, FROM_TUNNEL, MATCH, PORT_SECURED, SRC_PORT
from topology.records import OVERLAY_TYPES, Network, Port

OFPVID_PRESENT = 0x1000


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    ofport = view.local_ofport(chassis_id, port)
    net = view.topo.networks.get(port.network_id)
    if ofport is None or net is None:
        return []
    # a port with port security is marked: port_sec_in's drops shared by every such port match the mark
    secured = (
        (load(FLAGS.field, 1, PORT_SECURED.bit, PORT_SECURED.bit),) if port.port_security_enabled else ()
    )
    return [
        Flow(
            "classify",
            MATCH,
            match={"in_port": ofport},
            actions=(
                SetField(SRC_PORT.field, port.key),
                *secured,
                WriteMetadata(net.key),
                Goto("port_sec_in"),
            ),
            cookie=ids.cookie(ids.CLASSIFY, port.id),
        )
    ]


def network_flows(view: View, chassis_id: str, net: Network) -> list[Flow]:
    if not view.hosts(chassis_id, net.id):
        return []
    uplink = view.uplink(chassis_id, net)
    if uplink is None:
        return []
    c = ids.cookie(ids.CLASSIFY, net.id)
    from_outside = load(FLAGS.field, 1, FROM_TUNNEL.bit, FROM_TUNNEL.bit)
    if net.segment_type in OVERLAY_TYPES:
        assert net.segment_id is not None
        return [
            Flow(
                "classify",
                MATCH,
                match={"in_port": uplink, "tunnel_id": net.segment_id},
                actions=(from_outside, WriteMetadata(net.key), Goto("l2_lookup")),
                cookie=c,
            )
        ]
    if net.segment_type == "vlan":
        assert net.segment_id is not None
        return [
            Flow(
                "classify",
                MATCH,
                match={"in_port": uplink, "vlan_vid": OFPVID_PRESENT | net.segment_id},
                actions=(PopVlan(), from_outside, WriteMetadata(net.key), Goto("l2_lookup")),
                cookie=c,
            )
        ]
    return [
        Flow(
            "classify",
            MATCH,
            match={"in_port": uplink, "vlan_vid": 0},  # untagged: flat
            actions=(from_outside, WriteMetadata(net.key), Goto("l2_lookup")),
            cookie=c,
        )
    ]
