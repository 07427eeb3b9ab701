"""North-south: SNAT and floating IPs, centralized on each router's gateway chassis (GC).

GC is the first configured gateway chassis with a bridge mapping for the external network's physical
network (View.gateway_of). Only there does the router's gateway port exist in flows:

- outbound: a route into the external network (its connected subnet, the default route via the external
  subnet's gateway_ip) sends the packet, on any other chassis, to GC in router context (tun_id = the
  router's redirect id, no TTL change); on GC it is routed: dec_ttl, eth_src := gateway MAC, NEXT_HOP,
  CT_ZONE := the router's zone, DATAPATH := external network; arp_resolve uses MAC bindings the controller
  learns by probing (a miss goes to the controller); snat: ct(nat) translates replies of DNAT'ed
  connections, new connections from a fixed IP with a floating IP get nat(src=FIP), others nat(src=gateway
  IP) (enable_snat; without it they are committed untranslated, so their replies are let in); then l2_lookup puts it on the physical network;
- inbound: the gateway MAC on the external network enters the router (dnat): an ICMP echo request to the
  gateway address is answered first (the router's own reply, TTL 64, no conntrack entry: apps/echo.py),
  ct(nat) un-NATs replies, new connections to a floating IP get nat(dst=fixed IP) (a later packet of one not
  answered yet is still new, and already translated by ct(nat): +dnat, it goes on), any other new connection
  is dropped; then l3_lookup routes to the VM like east-west traffic (or the echo reply back out);
- ARP from the physical network for the gateway address and the floating IPs is answered in l2_lookup
  (with the gateway MAC); ARP replies to the gateway MAC go to the controller (its probes' answers);
- hairpin (a VM to a floating IP of its own router): arp_resolve resolves the router's own external addresses
  to the gateway MAC (in_port := 0: the packet may have to leave by the tunnel it came in by), so the packet
  routed to one is SNAT'ed in snat as if it left (the source's FIP, else the gateway IP, with or without
  enable_snat), then l2_lookup leads it back into the router as if it came in (ct_clear; dnat DNATs it to the
  fixed IP: a second conntrack entry in the same zone); the target's replies, addressed to the SNAT address,
  take the same way: un-DNAT'ed in snat, un-SNAT'ed in dnat, routed back to the VM;
- IPv6 (a dual-stack gateway: an IPv6 address beside the IPv4 one) is never translated: routed out like
  IPv4 (redirected to GC elsewhere; there dec_ttl, eth_src := gateway MAC, NEXT_HOP6, DATAPATH := external
  network) with no conntrack, its next hop resolved from bindings the controller learns by neighbour
  solicitation; from outside, IPv6 to the gateway MAC passes dnat untouched into l3_lookup (echo to the
  gateway's IPv6 address answered there); solicitations for that address are answered through mac_lookup
  (as a router port's), advertisements to the gateway MAC go to the controller.
"""

from __future__ import annotations

import netaddr

from apps import echo, ids
from apps.arp import ICMPV6, ND_NA, ND_NS
from apps.view import View
from flows.actions import (
    CT,
    IN_PORT,
    NAT,
    Action,
    Controller,
    CtClear,
    DecTtl,
    Goto,
    Meter,
    Move,
    Output,
    Resubmit,
    SetField,
    WriteMetadata,
    load,
)
from flows.cookie import Cookie
from flows.flow import Flow
from flows.pipeline import (
    ARP_ASK,
    CT_ZONE,
    FLAGS,
    FROM_TUNNEL,
    HIGH,
    LOW,
    MAC_HI,
    MAC_LO,
    MATCH,
    ND_ROUTER,
    NEXT_HOP,
    NEXT_HOP6,
    flags_match,
)
from topology.records import FloatingIp, Network, Port, Router

IPV4 = 0x0800
ARP = 0x0806
IPV6 = 0x86DD
#: the tunnel type that carries router-redirected packets to the gateway chassis
REDIRECT_TUNNEL = "vxlan"
#: redirect ids live above every segment id tenants get: (1 << 23) | router key
REDIRECT_BASE = 1 << 23

CT_NEW, CT_EST, CT_TRK, CT_DNAT = 0x01, 0x02, 0x20, 0x80


def redirect_id(router: Router) -> int:
    """The tun_id that carries a router's packets to its gateway chassis (keys < 2**23)."""
    return REDIRECT_BASE | (router.key & (REDIRECT_BASE - 1))


def zone(gateway_port: Port) -> int:
    """The router's conntrack zone on its gateway chassis: its gateway port's zone (never another port's)."""
    return ids.ct_zone(gateway_port.key)


def _v4(port: Port) -> list[tuple[str, str]]:
    return [(sid, ip) for sid, ip in port.fixed_ips if netaddr.IPAddress(ip).version == 4]


def _v6(port: Port) -> list[tuple[str, str]]:
    return [(sid, ip) for sid, ip in port.fixed_ips if netaddr.IPAddress(ip).version == 6]


def floating_ips(view: View, router: Router) -> list[FloatingIp]:
    """The router's associated floating IPs (the fixed IP must still be the port's)."""
    out = []
    for fip in view.topo.floatingips.values():
        if fip.router_id != router.id or not fip.port_id or not fip.fixed_ip:
            continue
        port = view.topo.ports.get(fip.port_id)
        if port is None or all(ip != fip.fixed_ip for _s, ip in port.fixed_ips):
            continue
        out.append(fip)
    return sorted(out, key=lambda f: f.id)


def router_flows(view: View, chassis_id: str, router: Router, routes_here: bool) -> list[Flow]:
    """The router's gateway flows on `chassis_id`; `routes_here`: the router routes on this chassis."""
    if not router.admin_state_up or router.key >= REDIRECT_BASE:
        return []  # a key from 2**23 up has no redirect id of its own (datapath keys are handed out lowest first)
    gc = view.gateway_of(router)
    gwp = view.gateway_port(router)
    if gc is None or gwp is None or not gwp.admin_state_up:
        return []
    ext = view.topo.networks[router.gateway_network_id]
    gw_ips = _v4(gwp)
    if not gw_ips:
        return []
    c = ids.cookie(ids.NAT, router.id)
    out: list[Flow] = []
    md = {"metadata": router.key, "eth_type": IPV4}
    on_gc = chassis_id == gc
    redirect: tuple[Action, ...] | None
    if on_gc:
        redirect = None
    else:
        tun = view.rt(chassis_id).tunnels.get(REDIRECT_TUNNEL)
        gc_rec = view.chassis(gc)
        if tun is None or gc_rec is None or not gc_rec.tunnel_ip:
            redirect = ()
        else:
            redirect = (
                SetField("tunnel_id", redirect_id(router)),
                SetField("tun_ipv4_dst", gc_rec.tunnel_ip),
                Output(tun),
            )
    own_default = any(
        (p := netaddr.IPNetwork(d)).prefixlen == 0 and p.version == 4 for d, _n in router.routes
    )
    if routes_here or on_gc:
        out += _v6_routes(view, router, ext, gwp, redirect, c)
    if routes_here or on_gc:  # on the gateway chassis also without interfaces there: echo replies to outside
        for sid, ip in gw_ips:
            sub = view.topo.subnets.get(sid)
            if sub is None:
                continue
            cidr = netaddr.IPNetwork(sub.cidr)
            routes: list[tuple[netaddr.IPNetwork, str | None, int]] = [(cidr, None, 2 * cidr.prefixlen + 1)]
            if sub.gateway_ip and not own_default:
                routes.append((netaddr.IPNetwork("0.0.0.0/0"), sub.gateway_ip, 0))
            for prefix, nexthop, prio in routes:
                if redirect is not None:
                    if redirect:
                        out.append(
                            Flow(
                                "l3_lookup",
                                MATCH(prio),
                                match={**md, "ipv4_dst": str(prefix.cidr)},
                                actions=redirect,
                                cookie=c,
                            )
                        )
                    continue
                hop = (
                    Move("ipv4_dst", NEXT_HOP.field, 32)
                    if nexthop is None
                    else SetField(NEXT_HOP.field, int(netaddr.IPAddress(nexthop)))
                )
                out.append(
                    Flow(
                        "l3_lookup",
                        MATCH(prio),
                        match={**md, "ipv4_dst": str(prefix.cidr)},
                        actions=(
                            DecTtl(),
                            SetField("eth_src", gwp.mac),
                            hop,
                            load(CT_ZONE.field, zone(gwp), CT_ZONE.start, CT_ZONE.end),
                            # forget the source port's conntrack state: snat tracks afresh
                            CtClear(),
                            WriteMetadata(ext.key),
                            Goto("arp_resolve"),
                        ),
                        cookie=c,
                    )
                )
            # ping the gateway address from inside: answered where the router routes
            out.append(
                Flow(
                    "l3_lookup",
                    HIGH,
                    match={**md, **echo.request(ip)},
                    actions=(*echo.reply(ip), Resubmit("l3_lookup")),
                    cookie=c,
                )
            )
    if not on_gc:
        return out
    out += _gateway_chassis_flows(view, chassis_id, router, ext, gwp, gw_ips, c)
    return out


def _v6_routes(
    view: View,
    router: Router,
    ext: Network,
    gwp: Port,
    redirect: tuple[Action, ...] | None,
    c: Cookie,
) -> list[Flow]:
    """IPv6 into the external network, never translated: its connected subnet and the default route via the
    external subnet's IPv6 gateway_ip (unless the router has its own ::/0), redirected to the gateway chassis
    elsewhere; there routed out of the gateway MAC, the next hop resolved from the ND bindings the controller
    learns (network_flows). Echo requests to the gateway's IPv6 address are answered."""
    out: list[Flow] = []
    md = {"metadata": router.key, "eth_type": IPV6}
    own_default = any(
        (p := netaddr.IPNetwork(d)).prefixlen == 0 and p.version == 6 for d, _n in router.routes
    )
    for sid, ip in _v6(gwp):
        sub = view.topo.subnets.get(sid)
        if sub is None:
            continue
        cidr = netaddr.IPNetwork(sub.cidr)
        routes: list[tuple[netaddr.IPNetwork, str | None, int]] = [(cidr, None, 2 * cidr.prefixlen + 1)]
        if sub.gateway_ip and not own_default:
            routes.append((netaddr.IPNetwork("::/0"), sub.gateway_ip, 0))
        for prefix, nexthop, prio in routes:
            match = {**md, "ipv6_dst": str(prefix.cidr)}
            if redirect is not None:
                if redirect:
                    out.append(Flow("l3_lookup", MATCH(prio), match=match, actions=redirect, cookie=c))
                continue
            hop = (
                Move("ipv6_dst", NEXT_HOP6.field, 128)
                if nexthop is None
                else SetField(NEXT_HOP6.field, int(netaddr.IPAddress(nexthop)))
            )
            out.append(
                Flow(
                    "l3_lookup",
                    MATCH(prio),
                    match=match,
                    actions=(
                        DecTtl(),
                        SetField("eth_src", gwp.mac),
                        hop,
                        CtClear(),
                        WriteMetadata(ext.key),
                        Goto("arp_resolve"),
                    ),
                    cookie=c,
                )
            )
        out += [
            Flow(
                "l3_lookup",
                HIGH,
                match={**md, **echo.request(ip)},
                actions=(*echo.reply(ip), Resubmit("l3_lookup")),
                cookie=c,
            ),
            # anything else to the gateway's own address ends here (not routed back out to itself)
            Flow("l3_lookup", MATCH(2 * 128 + 1), match={**md, "ipv6_dst": ip}, cookie=c),
        ]
    return out


def _v6_gateway_chassis_flows(router: Router, ext: Network, gwp: Port, c: Cookie) -> list[Flow]:
    """On the gateway chassis, the external network's side of the gateway's IPv6 addresses: neighbour
    solicitations for them answered as any port's are (apps/arp.py: mac_lookup, R S O set, out the asking
    port), advertisements to the gateway MAC to the controller (answers to its probes), any other IPv6 to the
    gateway MAC into the router as is (through dnat, which translates none of it) and routed like east-west."""
    v6 = _v6(gwp)
    if not v6:
        return []
    ext_md = {"metadata": ext.key, "eth_type": IPV6}
    mac = int(netaddr.EUI(gwp.mac))
    out = [
        Flow(
            "l2_lookup",
            MATCH,
            match={**ext_md, "eth_dst": gwp.mac},
            actions=(
                CtClear(),
                load(CT_ZONE.field, zone(gwp), CT_ZONE.start, CT_ZONE.end),
                load(FLAGS.field, 0, FROM_TUNNEL.bit, FROM_TUNNEL.bit),
                WriteMetadata(router.key),
                Goto("dnat"),
            ),
            cookie=c,
        ),
        Flow(
            "dnat",
            MATCH,
            match={"metadata": router.key, "eth_type": IPV6, CT_ZONE.field: zone(gwp)},
            actions=(Goto("l3_lookup"),),
            cookie=c,
        ),
        Flow(
            "dnat",
            MATCH(1),
            match={
                "metadata": router.key,
                "eth_type": IPV6,
                CT_ZONE.field: zone(gwp),
                "ip_proto": ICMPV6,
                "icmpv6_type": ND_NA,
            },
            actions=(Meter(ids.PACKET_IN_METER), Controller()),
            cookie=c,
        ),
    ]
    for _sid, ip in v6:
        # a solicitation from the physical network (which skips arp_nd): answered by mac_lookup below; duplicate
        # address detection (from ::) is no question and is dropped
        ns = {**ext_md, "ip_proto": ICMPV6, "icmpv6_type": ND_NS, "icmpv6_code": 0, "ipv6_nd_target": ip}
        out += [
            Flow("l2_lookup", HIGH(1), match={**ns, "ipv6_src": "::"}, cookie=c),
            Flow(
                "l2_lookup",
                HIGH,
                match=ns,
                actions=(
                    Move("ipv6_nd_target", NEXT_HOP6.field, 128),
                    load(FLAGS.field, 1, ARP_ASK.bit, ARP_ASK.bit),
                    Resubmit("mac_lookup"),
                ),
                cookie=c,
            ),
        ]
        # ping from outside: answered in dnat (as IPv4's), leaving by the patch port it came in by
        out.append(
            Flow(
                "dnat",
                HIGH,
                match={"metadata": router.key, CT_ZONE.field: zone(gwp), **echo.request(ip)},
                actions=(*echo.reply(ip), SetField("in_port_nxm", 0), Goto("l3_lookup")),
                cookie=c,
            )
        )
        out.append(
            Flow(
                "mac_lookup",
                MATCH,
                match={
                    "metadata": ext.key,
                    NEXT_HOP6.field: int(netaddr.IPAddress(ip)),
                    FLAGS.field: flags_match(set_=[ARP_ASK]),
                },
                actions=(
                    load(FLAGS.field, 1, ND_ROUTER.bit, ND_ROUTER.bit),
                    load(MAC_LO.field, mac & 0xFFFFFFFF, MAC_LO.start, MAC_LO.end),
                    load(MAC_HI.field, mac >> 32, MAC_HI.start, MAC_HI.end),
                    Goto("mac_found"),
                ),
                cookie=c,
            )
        )
    return out


def _gateway_chassis_flows(
    view: View,
    chassis_id: str,
    router: Router,
    ext: Network,
    gwp: Port,
    gw_ips: list[tuple[str, str]],
    c: Cookie,
) -> list[Flow]:
    out: list[Flow] = _v6_gateway_chassis_flows(router, ext, gwp, c)
    z = zone(gwp)
    fips = floating_ips(view, router)
    # redirected packets from other chassis enter the router's routing
    tun = view.rt(chassis_id).tunnels.get(REDIRECT_TUNNEL)
    if tun is not None:
        out.append(
            Flow(
                "classify",
                MATCH,
                match={"in_port": tun, "tunnel_id": redirect_id(router)},
                actions=(WriteMetadata(router.key), Goto("l3_lookup")),
                cookie=c,
            )
        )
    ext_md = {"metadata": ext.key}
    # the gateway MAC on the external network leads into the router (no longer "from outside")
    # (ct_clear: a hairpinned packet comes here from snat still tracked in the same zone; dnat tracks afresh)
    out.append(
        Flow(
            "l2_lookup",
            MATCH,
            match={**ext_md, "eth_dst": gwp.mac, "eth_type": IPV4},
            actions=(
                CtClear(),
                load(CT_ZONE.field, z, CT_ZONE.start, CT_ZONE.end),
                load(FLAGS.field, 0, FROM_TUNNEL.bit, FROM_TUNNEL.bit),
                WriteMetadata(router.key),
                Goto("dnat"),
            ),
            cookie=c,
        )
    )
    # ARP replies to the gateway MAC: answers to the controller's probes
    out.append(
        Flow(
            "l2_lookup",
            MATCH,
            match={**ext_md, "eth_dst": gwp.mac, "eth_type": ARP},
            actions=(Meter(ids.PACKET_IN_METER), Controller()),
            cookie=c,
        )
    )
    # ARP requests for the gateway address and the floating IPs: answered with the gateway MAC
    for addr in [ip for _s, ip in gw_ips] + [f.address for f in fips]:
        out.append(
            Flow(
                "l2_lookup",
                HIGH,
                match={**ext_md, "eth_type": ARP, "arp_op": 1, "arp_tpa": addr},
                actions=(
                    Move("eth_src", "eth_dst", 48),
                    SetField("eth_src", gwp.mac),
                    SetField("arp_op", 2),
                    Move("arp_sha", "arp_tha", 48),
                    Move("arp_spa", "arp_tpa", 32),
                    SetField("arp_sha", gwp.mac),
                    SetField("arp_spa", addr),
                    Output(IN_PORT),
                ),
                cookie=c,
            )
        )
    # hairpin: the router's own external addresses resolve to its gateway MAC (as ARP on the wire would answer), so
    # a packet routed to one of them is SNAT'ed in snat as if it left, then l2_lookup leads it back into the router
    # as if it came in (dnat: DNAT to the floating IP's fixed IP); its replies take the same way back. in_port := 0:
    # a packet redirected here may have to leave by the tunnel port it came in by (to a VM on its own chassis)
    for addr in [ip for _s, ip in gw_ips] + [f.address for f in fips]:
        out.append(
            Flow(
                "arp_resolve",
                MATCH(1),
                match={"metadata": ext.key, NEXT_HOP.field: int(netaddr.IPAddress(addr))},
                actions=(SetField("eth_dst", gwp.mac), SetField("in_port_nxm", 0), Goto("fw_router_out")),
                cookie=c,
            )
        )
    # dnat (DATAPATH = router, CT_ZONE = router's zone: came in from the external network)
    rmd = {"metadata": router.key, "eth_type": IPV4, CT_ZONE.field: z}
    out += [
        Flow(
            "dnat",
            MATCH(1),
            match={**rmd, "ct_state": (0, CT_TRK)},
            actions=(CT(zone=CT_ZONE.field, nat=NAT(), table="dnat"),),
            cookie=c,
        ),
        Flow(
            "dnat", MATCH(1), match={**rmd, "ct_state": (CT_TRK, CT_TRK)}, cookie=c
        ),  # untracked states: drop
        Flow(
            "dnat",
            MATCH(2),
            match={**rmd, "ct_state": (CT_TRK | CT_EST, CT_TRK | CT_EST)},
            actions=(Goto("l3_lookup"),),
            cookie=c,
        ),
        Flow(
            "dnat", MATCH(3), match={**rmd, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}, cookie=c
        ),  # drop
        # a connection DNAT'ed here whose reply has not passed yet (lost on its way out, e.g. to the controller
        # while the external next hop was unknown) is still new to conntrack, and ct(nat) has already
        # translated its next packet (an echo request of the same ping, a retried SYN): it goes on as committed
        Flow(
            "dnat",
            MATCH(6),
            match={**rmd, "ct_state": (CT_TRK | CT_NEW | CT_DNAT, CT_TRK | CT_NEW | CT_DNAT)},
            actions=(Goto("l3_lookup"),),
            cookie=c,
        ),
    ]
    # ping the gateway address from outside: answered before conntrack (no entry; the reply leaves through snat's
    # ct as untracked-invalid, un-NATed). in_port := 0: the reply leaves by the patch port the request came in by
    for _s, ip in gw_ips:
        out.append(
            Flow(
                "dnat",
                HIGH,
                match={**rmd, **echo.request(ip)},
                cookie=c,
                actions=(*echo.reply(ip), SetField("in_port_nxm", 0), Goto("l3_lookup")),
            )
        )
    for f in fips:
        out.append(
            Flow(
                "dnat",
                MATCH(4),
                match={**rmd, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW), "ipv4_dst": f.address},
                actions=(CT(commit=True, zone=CT_ZONE.field, nat=NAT("dst", f.fixed_ip), table="l3_lookup"),),
                cookie=c,
            )
        )
    # snat (DATAPATH = external network, CT_ZONE = router's zone: routed out by this router)
    smd = {"metadata": ext.key, "eth_type": IPV4, CT_ZONE.field: z}
    out += [
        Flow(
            "snat",
            MATCH(1),
            match={**smd, "ct_state": (0, CT_TRK)},
            actions=(CT(zone=CT_ZONE.field, nat=NAT(), table="snat"),),
            cookie=c,
        ),
        Flow(
            "snat",
            MATCH(1),
            match={**smd, "ct_state": (CT_TRK, CT_TRK)},
            actions=(Resubmit("l2_lookup"),),
            cookie=c,
        ),
    ]
    new = {**smd, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}
    # without SNAT the connection leaves with its fixed source, committed so that its replies come back in
    snat = NAT("src", gw_ips[0][1]) if router.enable_snat else None
    out.append(
        Flow(
            "snat",
            MATCH(2),
            match=new,
            cookie=c,
            actions=(CT(commit=True, zone=CT_ZONE.field, nat=snat, table="l2_lookup"),),
        )
    )
    if not router.enable_snat:
        # a hairpin to a floating IP is SNAT'ed to the gateway address all the same: untranslated, the target's
        # replies to a fixed IP would be routed straight back, past the un-DNAT
        for f in fips:
            out.append(
                Flow(
                    "snat",
                    MATCH(3),
                    match={**new, "ipv4_dst": f.address},
                    cookie=c,
                    actions=(
                        CT(commit=True, zone=CT_ZONE.field, nat=NAT("src", gw_ips[0][1]), table="l2_lookup"),
                    ),
                )
            )
    for f in fips:
        out.append(
            Flow(
                "snat",
                MATCH(4),
                match={**new, "ipv4_src": f.fixed_ip},
                cookie=c,
                actions=(CT(commit=True, zone=CT_ZONE.field, nat=NAT("src", f.address), table="l2_lookup"),),
            )
        )
    return out


def network_flows(view: View, chassis_id: str, net: Network) -> list[Flow]:
    """arp_resolve of an external network on a gateway chassis: learned bindings, else ask the controller."""
    if not net.external or not view.is_gateway_for(chassis_id, net.id):
        return []
    c = ids.cookie(ids.NAT, net.id)
    out = [
        Flow(
            "arp_resolve",
            LOW,
            match={"metadata": net.key, "eth_type": eth_type},
            actions=(Meter(ids.PACKET_IN_METER), Controller()),
            cookie=c,
        )
        for eth_type in (IPV4, IPV6)
    ]
    for ip, mac in sorted(view.neighbors.get(net.id, {}).items()):
        addr = netaddr.IPAddress(ip)
        nh = NEXT_HOP6 if addr.version == 6 else NEXT_HOP
        out.append(
            Flow(
                "arp_resolve",
                MATCH,
                match={"metadata": net.key, nh.field: int(addr)},
                actions=(SetField("eth_dst", mac), Goto("fw_router_out")),
                cookie=c,
            )
        )
    return out
