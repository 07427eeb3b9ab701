"""Load balancers: a VIP spread over pool members in conntrack, on the client's chassis (no proxy).

Client side (every chassis hosting the VIP's network or a network routed to it):

- acl_egress tracks every IP packet of a VM port with ct(zone=the port's zone, nat): packets of a connection
  to a VIP are DNAT'ed to their member, replies (acl_ingress, same zone) get the VIP back as source;
- acl_egress_commit HIGH(10): a new connection from a network that can reach the VIP (the VIP's network and
  those routed to it) to VIP:listener port goes to the listener's select group (ROUND_ROBIN: OVS hashes the
  5-tuple, buckets weighted by member weight) whose buckets do
  ct(commit, zone=CT_ZONE, nat(dst=member:port), exec(ct_mark := VIP port key), table=arp_nd);
  SOURCE_IP: 64 flows on the low 6 bits of ipv4_src, each committing to one member (slots shared out by
  weight), so one client always lands on the same member while the member set stays the same;
  a listener without usable member drops new connections;
- lb (VIP network) MATCH(0): eth_dst = VIP MAC, ipv4_dst = a member -> eth_dst := the member's MAC, or the
  VIP network's router interface MAC for a member on another network (it is then routed);
- hairpin (a member lands on itself), on the member's chassis, the VIP port's (shared) zone as a conntrack zone:
  MATCH(10) src = dst = member, ct_zone = the member's, ct_mark = the VIP's: SNAT to the VIP in the VIP's
  zone, eth_src := VIP MAC, eth_dst := member MAC, ALLOW_LOOPBACK, to l2_lookup (out its own port);
  MATCH(5) member -> VIP: ct(zone=VIP zone, nat) then MATCH(20) an un-SNAT'ed hairpin reply (member ->
  member) is un-DNAT'ed in the member's zone, and MATCH(20) (VIP -> member, member's zone, +est+rpl) goes
  straight out its port (output stage); MATCH(15) anything else from a member to the VIP (health probe
  answers) goes to the controller (metered), on the member's chassis, whatever the member's subnet;
- l2_lookup (VIP network): anything else to the VIP MAC is dropped (a port no listener has);
  arp_resolve: the VIP address -> VIP MAC (routed clients to such ports).

Floating IP on the VIP (router's gateway chassis, dnat stage MATCH(5)): new to FIP:listener port -> a select
group of ct(commit, zone=the router's zone, nat(dst=member:port), table=l3_lookup); replies are un-NAT'ed by
the router's snat stage (source back to the FIP).

Members used for new connections: admin up, weight > 0, and not ERROR under an admin-up health monitor.
Established connections keep their member whatever happens to it (conntrack).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import netaddr

from apps import ids, nat
from apps.view import View
from flows.actions import CT, NAT, Controller, CtClear, Goto, GroupAction, Meter, SetField, load
from flows.flow import Bucket, Flow, Group
from flows.pipeline import ALLOW_LOOPBACK, CT_ZONE, DST_PORT, FLAGS, HIGH, MATCH, NEXT_HOP
from topology.model import Topology
from topology.records import (
    ERROR,
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_INTERFACE,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Port,
)

IPV4 = 0x0800
TCP, UDP = 6, 17
PROTO = {"TCP": TCP, "UDP": UDP}
CT_NEW, CT_EST, CT_RPL, CT_TRK = 0x01, 0x02, 0x08, 0x20
#: SOURCE_IP affinity: clients are shared out by the low bits of their address
SOURCE_IP_BITS = 6
CLIENT, FLOATING = 0, 1
UNIT = "lb"
KINDS = ("load_balancer", "listener", "pool", "member", "health_monitor")


def group_id(listener: Listener, kind: int) -> int:
    """A listener's select group (kind CLIENT or FLOATING): apps.ids.lb_group of its key."""
    return ids.lb_group(listener.key, kind)


# ---------------------------------------------------------------------------------------------------------
# model queries
# ---------------------------------------------------------------------------------------------------------


def vip_port(topo: Topology, lb: LoadBalancer) -> Port | None:
    port = topo.ports.get(lb.vip_port_id)
    if port is None or port.device_owner != OWNER_LOAD_BALANCER:
        return None
    return port


def monitored(topo: Topology, pool: Pool) -> bool:
    hm = topo.health_monitors.get(topo.pool_monitor.get(pool.id, ""))
    return hm is not None and hm.admin_state_up


def pool_members(topo: Topology, pool: Pool) -> list[Member]:
    return sorted(
        (m for mid in topo.pool_members.get(pool.id, ()) if (m := topo.members.get(mid)) is not None),
        key=lambda m: m.id,
    )


def usable(topo: Topology, pool: Pool, member: Member) -> bool:
    """The member takes new connections."""
    return (
        member.admin_state_up
        and member.weight > 0
        and not (member.operating_status == ERROR and monitored(topo, pool))
    )


def listeners(topo: Topology, lb: LoadBalancer) -> list[tuple[Listener, Pool]]:
    out = []
    for lid in sorted(topo.lb_listeners.get(lb.id, ())):
        ls = topo.listeners.get(lid)
        if ls is None or not ls.admin_state_up or ls.protocol not in PROTO or not ls.protocol_port:
            continue
        pool = topo.pools.get(ls.default_pool_id)
        if pool is None or not pool.admin_state_up:
            continue
        out.append((ls, pool))
    return out


def member_network(topo: Topology, lb: LoadBalancer, member: Member) -> str | None:
    subnet = topo.subnets.get(member.subnet_id or lb.vip_subnet_id)
    return subnet.network_id if subnet is not None else None


def member_port(topo: Topology, lb: LoadBalancer, member: Member) -> Port | None:
    """The VM port holding the member's address in its subnet (None: not a port of ours)."""
    try:
        addr = int(netaddr.IPAddress(member.address))
    except (netaddr.AddrFormatError, ValueError):
        return None
    pid = topo.ip_owner.get(member.subnet_id or lb.vip_subnet_id, {}).get(addr)
    port = topo.ports.get(pid) if pid is not None else None
    if port is None or port.device_owner == OWNER_LOAD_BALANCER:
        return None
    return port


def _vip_v4(lb: LoadBalancer) -> bool:
    return bool(lb.vip_address) and netaddr.IPAddress(lb.vip_address).version == 4


def active(view: View, lb: LoadBalancer) -> Port | None:
    """The VIP port if the load balancer is up and its VIP usable."""
    port = vip_port(view.topo, lb)
    if port is None or not _vip_v4(lb) or not view.vip(port) or not port.key:
        return None
    return port


def lbs_near(view: View, network_ids: Iterable[str]) -> set[str]:
    """Load balancers whose VIP network is routed to (or is) one of these networks."""
    topo = view.topo
    if not topo.load_balancers:
        return set()
    comp: set[str] = set()
    for n in network_ids:
        comp |= view.component(n)
    out = set()
    for lb in topo.load_balancers.values():
        port = topo.ports.get(lb.vip_port_id)
        if port is not None and port.network_id in comp:
            out.add(lb.id)
    return out


def changed_lbs(topo: Topology, kind: str, old: object, new: object) -> set[str]:
    """Load balancers a change of a load-balancer record touches."""
    out: set[str] = set()
    for rec in (old, new):
        if rec is None:
            continue
        if kind == "load_balancer":
            out.add(rec.id)  # type: ignore[attr-defined]
        elif kind in ("listener", "pool"):
            out.add(rec.load_balancer_id)  # type: ignore[attr-defined]
        elif kind in ("member", "health_monitor"):
            pool = topo.pools.get(rec.pool_id)  # type: ignore[attr-defined]
            if pool is not None:
                out.add(pool.load_balancer_id)
    return out


# ---------------------------------------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------------------------------------


def _l4(listener: Listener) -> dict[str, int]:
    proto = PROTO[listener.protocol]
    return {"ip_proto": proto, ("tcp_dst" if proto == TCP else "udp_dst"): listener.protocol_port}


def _slots(members: list[Member]) -> list[Member]:
    """SOURCE_IP: 2**SOURCE_IP_BITS slots shared out by weight (slot i -> a member), spread over the slots."""
    expanded = [m for m in members for _ in range(m.weight)]
    n = 1 << SOURCE_IP_BITS
    order = [(i * 37) % n for i in range(n)]  # 37 is odd: a permutation, so neighbouring addresses differ
    out: list[Member] = [members[0]] * n
    for rank, slot in enumerate(order):
        out[slot] = expanded[rank * len(expanded) // n]
    return out


def _dnat(m: Member, zone: int | str, table: str, mark: int | None) -> CT:
    return CT(
        commit=True,
        zone=zone,
        nat=NAT("dst", m.address, port_min=m.protocol_port),
        exec=(SetField("ct_mark", mark),) if mark is not None else (),
        table=table,
    )


def _spread(
    stage: str,
    prio: int,
    match: dict[str, Any],
    pool: Pool,
    members: list[Member],
    gid: int,
    zone: int | str,
    table: str,
    mark: int | None,
    c: Any,
) -> list[Flow | Group]:
    """New connections matching `match` over `members`: a select group, SOURCE_IP slot flows, or a drop."""
    if not members:
        return [Flow(stage, prio, match=match, cookie=c)]
    if pool.lb_algorithm == "SOURCE_IP":
        mask = (1 << SOURCE_IP_BITS) - 1
        return [
            Flow(
                stage,
                prio,
                match={**match, "ipv4_src": (str(netaddr.IPAddress(i)), str(netaddr.IPAddress(mask)))},
                actions=(_dnat(m, zone, table, mark),),
                cookie=c,
            )
            for i, m in enumerate(_slots(members))
        ]
    group = Group(gid, "select", tuple(Bucket((_dnat(m, zone, table, mark),), m.weight) for m in members))
    return [group, Flow(stage, prio, match=match, actions=(GroupAction(gid),), cookie=c)]


def lb_flows(view: View, chassis_id: str, lb: LoadBalancer) -> list[Flow | Group]:
    vip = active(view, lb)
    if vip is None or not view.hosts(chassis_id, vip.network_id):
        return []
    topo = view.topo
    vnet = topo.networks[vip.network_id]
    c = ids.cookie(ids.LB, lb.id)
    vzone = ids.ct_zone(vip.key)
    new = {"eth_type": IPV4, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW), "ipv4_dst": lb.vip_address}
    out: list[Flow | Group] = []
    clients = sorted(n for n in view.component(vnet.id) if view.hosts(chassis_id, n))
    all_members: dict[str, tuple[Member, Port | None]] = {}
    for ls, pool in listeners(topo, lb):
        members = pool_members(topo, pool)
        for m in members:
            all_members.setdefault(m.address, (m, member_port(topo, lb, m)))
        live = [m for m in members if usable(topo, pool, m) and netaddr.IPAddress(m.address).version == 4]
        gid = group_id(ls, CLIENT)
        for n in clients:
            match = {**new, "metadata": topo.networks[n].key, **_l4(ls)}
            out += [
                x
                for x in _spread(
                    "acl_egress_commit", HIGH(10), match, pool, live, gid, CT_ZONE.field, "arp_nd", vip.key, c
                )
                if isinstance(x, Flow) or n == clients[0]
            ]
        out += _floating(view, chassis_id, lb, vip, ls, pool, live, c)
    # after DNAT the frame still goes to the VIP MAC: to the member's MAC (or its router)
    router_mac = _router_mac(view, vnet.id)
    vmd = {"metadata": vnet.key, "eth_type": IPV4}
    for addr, (m, port) in sorted(all_members.items()):
        if netaddr.IPAddress(addr).version != 4:
            continue
        if port is not None and port.network_id == vnet.id:
            mac = port.mac
        elif member_network(topo, lb, m) != vnet.id and router_mac is not None:
            mac = router_mac
        else:
            continue
        out.append(
            Flow(
                "lb",
                MATCH(0),
                match={**vmd, "eth_dst": vip.mac, "ipv4_dst": addr},
                actions=(SetField("eth_dst", mac), Goto("l2_lookup")),
                cookie=c,
            )
        )
        # the hairpin happens on the member's own chassis (its zone is unique there only)
        if port is not None and port.key and view.located(port) and port.binding_chassis == chassis_id:
            out += _hairpin(topo.networks[port.network_id].key, lb, vip, vzone, port, addr, c)
    # anything else to the VIP MAC (a port no listener has) goes nowhere (rather than flooded as unknown)
    out.append(Flow("l2_lookup", MATCH, match={"metadata": vnet.key, "eth_dst": vip.mac}, cookie=c))
    if view.routers_here(chassis_id, vnet.id):
        out.append(
            Flow(
                "arp_resolve",
                MATCH,
                match={"metadata": vnet.key, NEXT_HOP.field: int(netaddr.IPAddress(lb.vip_address))},
                actions=(SetField("eth_dst", vip.mac), Goto("fw_router_out")),
                cookie=c,
            )
        )
    return out


def _hairpin(
    net_key: int, lb: LoadBalancer, vip: Port, vzone: int, port: Port, addr: str, c: Any
) -> list[Flow]:
    """A member reaching the VIP and landing on itself: SNAT to the VIP in the VIP's zone, and back."""
    mzone = ids.ct_zone(port.key)
    md = {"metadata": net_key, "eth_type": IPV4}
    loop = load(FLAGS.field, 1, ALLOW_LOOPBACK.bit, ALLOW_LOOPBACK.bit)
    est_rpl = (CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_EST | CT_RPL)
    return [
        Flow(
            "lb",
            MATCH(10),
            match={**md, "ipv4_src": addr, "ipv4_dst": addr, "ct_zone": mzone, "ct_mark": vip.key},
            actions=(
                SetField("eth_src", vip.mac),
                SetField("eth_dst", port.mac),
                loop,
                CT(commit=True, zone=vzone, nat=NAT("src", lb.vip_address), table="l2_lookup"),
            ),
            cookie=c,
        ),
        Flow(
            "lb",
            MATCH(5),
            match={**md, "ipv4_src": addr, "ipv4_dst": lb.vip_address},
            actions=(CtClear(), CT(zone=vzone, nat=NAT(), table="lb")),
            cookie=c,
        ),
        # not a hairpin answer: a health probe's answer (to the VIP address and MAC) goes to the controller
        Flow(
            "lb",
            MATCH(15),
            match={**md, "ipv4_src": addr, "ipv4_dst": lb.vip_address, "ct_zone": vzone},
            actions=(Meter(ids.PACKET_IN_METER), Controller()),
            cookie=c,
        ),
        Flow(
            "lb",
            MATCH(20),
            match={**md, "ipv4_src": addr, "ipv4_dst": addr, "ct_zone": vzone, "ct_state": est_rpl},
            actions=(CtClear(), CT(zone=mzone, nat=NAT(), table="lb")),
            cookie=c,
        ),
        Flow(
            "lb",
            MATCH(20),
            match={**md, "ipv4_src": lb.vip_address, "ipv4_dst": addr, "ct_zone": mzone, "ct_state": est_rpl},
            actions=(
                SetField("eth_src", vip.mac),
                SetField("eth_dst", port.mac),
                load(DST_PORT.field, port.key),
                loop,
                Goto("plugin_to_port"),
            ),
            cookie=c,
        ),
    ]


def _router_mac(view: View, network_id: str) -> str | None:
    """The MAC of a router interface on the network (the first by port id), if any."""
    for p in sorted(view.topo.ports_of(network_id), key=lambda p: p.id):
        if p.device_owner == OWNER_ROUTER_INTERFACE and view.distributed(p):
            return p.mac
    return None


def _floating(
    view: View,
    chassis_id: str,
    lb: LoadBalancer,
    vip: Port,
    ls: Listener,
    pool: Pool,
    live: list[Member],
    c: Any,
) -> list[Flow | Group]:
    """On a router's gateway chassis: new connections to a floating IP of the VIP, to the listener's port."""
    out: list[Flow | Group] = []
    for fip in sorted(view.topo.floatingips.values(), key=lambda f: f.id):
        if fip.port_id != vip.id or fip.fixed_ip != lb.vip_address or not fip.router_id:
            continue
        router = view.topo.routers.get(fip.router_id)
        if router is None or not router.admin_state_up or view.gateway_of(router) != chassis_id:
            continue
        gwp = view.gateway_port(router)
        if gwp is None or not gwp.admin_state_up or not gwp.key:
            continue
        match = {
            "metadata": router.key,
            "eth_type": IPV4,
            CT_ZONE.field: nat.zone(gwp),
            "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW),
            "ipv4_dst": fip.address,
            **_l4(ls),
        }
        out += _spread(
            "dnat", MATCH(5), match, pool, live, group_id(ls, FLOATING), CT_ZONE.field, "l3_lookup", None, c
        )
    return out


def all_units(topo: Topology) -> list[tuple[str, str]]:
    return [(UNIT, i) for i in topo.load_balancers]
