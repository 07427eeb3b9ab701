"""l2_lookup and replication. The model knows every MAC, so known unicast is looked up, never learned or
flooded: dst MAC -> DST_PORT. Broadcast/multicast go to the network's flood group: its local ports plus
one copy per remote chassis hosting the network (overlay) or one copy to the physical network (provider).
What came in from a tunnel or the physical network is replicated to local ports only (split horizon).
Unknown unicast: flooded on overlays; sent only to the physical network on provider networks (every
port's MAC is known, so an unknown MAC is outside).

A neighbour solicitation to a solicited-node group (ff02::1:ffXX:XXXX) that arp_nd did not answer (duplicate
address detection, a target no port holds) is not flooded to every port: only to the ports that may hold
an address the model does not know (port security disabled, or an IPv6 allowed address pair; the router's
are never among them), and on to the other chassis / the physical network as before. Every other port's
addresses are the model's, each held by one port, so none of them listens to that group for an address
it would answer: delivering the probe to them is what a multicast-snooping switch would not do.
"""

from __future__ import annotations

from functools import lru_cache

from apps import ids
from apps.egress import to_remote, to_uplink
from apps.view import View
from flows.actions import Action, Goto, GroupAction, Resubmit, SetField, WriteMetadata, load
from flows.flow import Bucket, Flow, Group
from flows.pipeline import DST_PORT, FLAGS, FROM_TUNNEL, LOW, MATCH, REMOTE, flags_match
from topology.records import OVERLAY_TYPES, Network, Port

MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
#: solicited-node multicast, ff02::1:ff00:0/104
SOLICITED_NODE = ("ff02::1:ff00:0", "ffff:ffff:ffff:ffff:ffff:ffff:ff00:0")


def may_hold_unknown(port: Port) -> bool:
    """Can the port's VM hold an IPv6 address the model does not know (and answer an NS for it)?"""
    if port.device_owner.startswith("network:router"):
        return False
    return not port.port_security_enabled or any(":" in addr for addr, _mac in port.allowed_address_pairs)


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    net = view.topo.networks.get(port.network_id)
    if net is None or not view.hosts(chassis_id, net.id):
        return []
    if view.distributed(port):  # a router interface: its MAC leads into the router's pipeline
        router = view.topo.routers[port.device_id]
        return [
            Flow(
                "l2_lookup",
                MATCH,
                match={"metadata": net.key, "eth_dst": port.mac, "eth_type": eth_type},
                actions=(WriteMetadata(router.key), Goto("dnat")),
                cookie=ids.cookie(ids.L2, port.id),
            )
            for eth_type in (0x0800, 0x86DD)
        ]
    if not view.located(port):
        return []
    return list(_lookup(port, net.key, _remote(view, chassis_id, net, port)))


def _remote(view: View, chassis_id: str, net: Network, port: Port) -> tuple[Action, ...]:
    """For a port bound on another chassis: what marks its packets for egress_dispatch's per-network flow
    (REMOTE, and on an overlay the tunnel destination: that chassis's tunnel IP); () for a local port, or
    one that cannot be reached from here (egress_dispatch drops it)."""
    if port.binding_chassis == chassis_id:
        return ()
    remote = load(FLAGS.field, 1, REMOTE.bit, REMOTE.bit)
    if net.segment_type not in OVERLAY_TYPES:
        return (remote,) if to_uplink(view, chassis_id, net) else ()
    acts = to_remote(view, chassis_id, net, port.binding_chassis)
    return (
        tuple(a for a in acts if isinstance(a, SetField) and a.field == "tun_ipv4_dst") + (remote,)
        if acts
        else ()
    )


@lru_cache(maxsize=1 << 16)
def _lookup(port: Port, net_key: int, remote: tuple[Action, ...]) -> tuple[Flow, ...]:
    """The same on every chassis hosting the network but for where a remote port is: once per port version
    and place. A remote port's packets leave through egress_dispatch's flow of the network (egress.py): no
    flow per remote port there."""
    c = ids.cookie(ids.L2, port.id)
    macs = dict.fromkeys([port.mac, *(m for _ip, m in port.allowed_address_pairs)])
    return tuple(
        Flow(
            "l2_lookup",
            MATCH,
            match={"metadata": net_key, "eth_dst": mac},
            actions=(SetField(DST_PORT.field, port.key), *remote, Goto("egress_dispatch")),
            cookie=c,
        )
        for mac in macs
    )


@lru_cache(maxsize=1 << 17)
def _to_port(key: int) -> Bucket:
    """A flood bucket to the local port `key`. Made once per port, not per bucket per recompile of its
    network: a Bucket checks its actions when made, and a port's write recompiles its network's groups, whose
    buckets are every local port's (~40% of a CreatePort's compile in a network of 50, bench_latency.py)."""
    return Bucket((SetField(DST_PORT.field, key), Resubmit("egress_dispatch")))


def network_flows(view: View, chassis_id: str, net: Network) -> list[Flow | Group]:
    if not view.hosts(chassis_id, net.id):
        return []
    c = ids.cookie(ids.L2, net.id)
    local = view.local_ports(chassis_id, net.id)
    local_buckets = [_to_port(port.key) for port in local]
    outside_buckets = []
    if net.segment_type in OVERLAY_TYPES:
        for remote in sorted(view.hosting(net.id) - {chassis_id}):
            acts = to_remote(view, chassis_id, net, remote)
            if acts:
                outside_buckets.append(Bucket(acts))
    else:
        acts = to_uplink(view, chassis_id, net)
        if acts:
            outside_buckets.append(Bucket(acts))
    g_all = Group(ids.flood_all_group(net.key), "all", tuple(local_buckets + outside_buckets))
    g_local = Group(ids.flood_local_group(net.key), "all", tuple(local_buckets))
    listeners = [_to_port(port.key) for port in local if may_hold_unknown(port)]
    nd_all = Group(ids.nd_group(net.key, False), "all", tuple(listeners + outside_buckets))
    nd_local = Group(ids.nd_group(net.key, True), "all", tuple(listeners))
    ns = {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 135, "ipv6_dst": SOLICITED_NODE}
    from_outside = flags_match(set_=[FROM_TUNNEL])
    from_inside = flags_match(clear=[FROM_TUNNEL])
    md = {"metadata": net.key}
    out: list[Flow | Group] = [
        g_all,
        g_local,
        nd_all,
        nd_local,
        Flow(
            "l2_lookup",
            MATCH(1),
            match={**md, **ns, FLAGS.field: from_inside},
            actions=(GroupAction(nd_all.group_id),),
            cookie=c,
        ),
        Flow(
            "l2_lookup",
            MATCH(1),
            match={**md, **ns, FLAGS.field: from_outside},
            actions=(GroupAction(nd_local.group_id),),
            cookie=c,
        ),
        Flow(
            "l2_lookup",
            MATCH,
            match={**md, "eth_dst": MULTICAST, FLAGS.field: from_inside},
            actions=(GroupAction(g_all.group_id),),
            cookie=c,
        ),
        Flow(
            "l2_lookup",
            MATCH,
            match={**md, "eth_dst": MULTICAST, FLAGS.field: from_outside},
            actions=(GroupAction(g_local.group_id),),
            cookie=c,
        ),
    ]
    if net.segment_type in OVERLAY_TYPES:
        out += [
            Flow(
                "l2_lookup",
                LOW,
                match={**md, FLAGS.field: from_inside},
                actions=(GroupAction(g_all.group_id),),
                cookie=c,
            ),
            Flow(
                "l2_lookup",
                LOW,
                match={**md, FLAGS.field: from_outside},
                actions=(GroupAction(g_local.group_id),),
                cookie=c,
            ),
        ]
    else:
        acts = to_uplink(view, chassis_id, net)
        if acts:
            out.append(Flow("l2_lookup", LOW, match={**md, FLAGS.field: from_inside}, actions=acts, cookie=c))
    return out
