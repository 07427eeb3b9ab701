"""VPNaaS in flows: a router's IPsec site connections terminate in a namespace on its gateway chassis (GC).

The controller runs one IKE daemon (strongSwan's charon) per VPN service in a namespace attached to br-int on
the router's GC (controller/services/vpn.py); this module says where packets go, and what that namespace is
(`plan`: its port's iface-id, MACs and routes, and the connections charon is to hold), both pure functions
of the model. The namespace ("vpn ns") has one port on br-int, MAC `ns_mac(service)`, the router's gateway IP
as a /32, and two next hops with permanent neighbour entries: EXT_HOP (-> the gateway MAC) for its own IKE /
ESP-in-UDP packets, the default route, and INT_HOP (-> `int_mac(service)`) for decrypted packets, routes to
the local subnets. So br-int tells them apart by eth_dst, in classify:

- VM -> remote site: l3_lookup (DATAPATH = router) routes each peer CIDR (priority as a connected subnet's: a
  peer CIDR never overlaps the local ones, and beats the default route, so it is never SNAT'ed): on GC, out
  to the vpn ns (dec_ttl, eth_src := INT MAC, eth_dst := ns MAC); elsewhere redirected to GC in router
  context like external traffic (apps/nat.py). Without the namespace's port on GC the packets are dropped.
- the vpn ns's IKE / ESP: classify (in_port = ns port, eth_dst = gateway MAC) -> router; l3_lookup (eth_src
  = ns MAC, eth_dst = gateway MAC, ipv4_src = gateway IP) routes into the external network like the router's
  own packets (no dec_ttl, eth_src := gateway MAC, no conntrack zone: snat leaves it untranslated).
- IKE (UDP 500), NAT-T (UDP 4500) and ESP (IP 50) from outside to the gateway IP: dnat, before conntrack
  (no SNAT state to undo), out to the vpn ns.
- decrypted packets: classify (in_port = ns port, eth_dst = INT MAC) -> the router's l3_lookup, routed to the
  local subnets as any packet entering the router.
Each router is its own datapath: two tenants' VPNs with the same CIDRs never meet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import netaddr

from apps import ids, nat
from apps.view import View
from flows.actions import Action, DecTtl, Goto, Move, Output, SetField, WriteMetadata
from flows.flow import Flow
from flows.pipeline import HIGH, MATCH, NEXT_HOP
from topology.model import Change, Topology
from topology.records import (
    EP_CIDR,
    EP_SUBNET,
    OWNER_ROUTER_INTERFACE,
    VPN_AEAD,
    VPN_AUTH,
    VPN_ENCRYPTION,
    VPN_PFS,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Port,
    Router,
    VpnService,
)

IPV4 = 0x0800
IKE_PORT, NATT_PORT, ESP_PROTO, UDP = 500, 4500, 50, 17
#: the vpn ns's next hops (link-local, answered by permanent neighbour entries in the namespace)
EXT_HOP = "169.254.64.1"
INT_HOP = "169.254.64.2"


def iface_id(service_id: str) -> str:
    """The iface-id of the vpn ns's br-int port (how the controller learns its ofport)."""
    return f"vpn-{service_id}"


def _mac(service_id: str, role: int) -> str:
    digest = hashlib.sha256(f"vpn\0{service_id}".encode()).digest()
    # locally administered, unicast; `role` in the first byte keeps the ns and router sides apart
    return ":".join(f"{b:02x}" for b in (0x0A | (role << 4), *digest[:5]))


def ns_mac(service_id: str) -> str:
    """The vpn ns's MAC."""
    return _mac(service_id, 0)


def int_mac(service_id: str) -> str:
    """The router's MAC on the vpn ns's link, for decrypted packets (INT_HOP)."""
    return _mac(service_id, 1)


@dataclass(frozen=True)
class ConnPlan:
    """One IPsec site connection as charon is to hold it (psk included: this never leaves the controller
    but to the daemon; repr hides it)."""

    id: str
    peer_address: str
    peer_id: str
    local_id: str
    local_cidrs: tuple[str, ...]
    peer_cidrs: tuple[str, ...]
    ike_version: int
    ike_proposal: str
    esp_proposal: str
    ike_lifetime_s: int
    esp_lifetime_s: int
    dpd_action: str
    dpd_interval_s: int
    dpd_timeout_s: int
    initiator: bool  # bi-directional: initiates; response-only: waits
    psk: str = ""

    def __repr__(self) -> str:
        return f"ConnPlan({self.id!r}, peer={self.peer_address}, {self.local_cidrs} <-> {self.peer_cidrs})"


@dataclass(frozen=True)
class ServicePlan:
    """What runs for one VPN service on its gateway chassis."""

    id: str
    router_id: str
    chassis_id: str
    gateway_ip: str
    gateway_mac: str  # EXT_HOP's MAC
    int_mac: str  # INT_HOP's MAC
    ns_mac: str
    iface_id: str
    local_cidrs: tuple[str, ...]  # routed INT_HOP in the ns
    local_addresses: tuple[str, ...]  # the router's addresses in them (the ns's source for those routes)
    connections: tuple[ConnPlan, ...]

    @property
    def peer_cidrs(self) -> tuple[str, ...]:
        return tuple(sorted({p for c in self.connections for p in c.peer_cidrs}))


def proposal(encryption: str, auth: str, pfs: str, ike: bool) -> str:
    """charon's proposal keyword string: aes128-sha256-modp2048 (IKE: AEAD takes the PRF, aes128gcm16-prfsha256)."""
    enc = VPN_ENCRYPTION[encryption]
    parts = [enc]
    if encryption in VPN_AEAD:
        if ike:
            parts.append("prf" + VPN_AUTH[auth])
    else:
        parts.append(VPN_AUTH[auth])
    if pfs:
        parts.append(VPN_PFS[pfs])
    return "-".join(parts)


def _v4(port: Port) -> str | None:
    return next((ip for _s, ip in port.fixed_ips if netaddr.IPAddress(ip).version == 4), None)


def _cidrs(view: View, group_id: str, kind: str) -> tuple[str, ...]:
    group = view.topo.vpn_endpoint_groups.get(group_id)
    if group is None or group.type != kind:
        return ()
    if kind == EP_CIDR:
        return tuple(str(netaddr.IPNetwork(c).cidr) for c in group.endpoints if ":" not in c)
    out = []
    for sid in group.endpoints:
        sub = view.topo.subnets.get(sid)
        if sub is not None and sub.ip_version == 4:
            out.append(str(netaddr.IPNetwork(sub.cidr).cidr))
    return tuple(out)


def _conn_plan(view: View, conn: IpsecSiteConnection, gateway_ip: str) -> ConnPlan | None:
    ike: IkePolicy | None = view.topo.ike_policies.get(conn.ikepolicy_id)
    esp: IpsecPolicy | None = view.topo.ipsec_policies.get(conn.ipsecpolicy_id)
    local = _cidrs(view, conn.local_ep_group_id, EP_SUBNET)
    peer = _cidrs(view, conn.peer_ep_group_id, EP_CIDR)
    if (
        not conn.admin_state_up
        or ike is None
        or esp is None
        or not local
        or not peer
        or not conn.peer_address
    ):
        return None
    return ConnPlan(
        id=conn.id,
        peer_address=conn.peer_address,
        peer_id=conn.peer_id or conn.peer_address,
        local_id=conn.local_id or gateway_ip,
        local_cidrs=local,
        peer_cidrs=peer,
        ike_version=2 if ike.ike_version == "v2" else 1,
        ike_proposal=proposal(ike.encryption_algorithm, ike.auth_algorithm, ike.pfs, ike=True),
        esp_proposal=proposal(esp.encryption_algorithm, esp.auth_algorithm, esp.pfs, ike=False),
        ike_lifetime_s=ike.lifetime_s,
        esp_lifetime_s=esp.lifetime_s,
        dpd_action=conn.dpd_action,
        dpd_interval_s=conn.dpd_interval_s,
        dpd_timeout_s=conn.dpd_timeout_s,
        initiator=conn.initiator == "bi-directional",
        psk=conn.psk,
    )


def plan(view: View, service: VpnService) -> ServicePlan | None:
    """The service's namespace and connections, on its router's gateway chassis; None when it has nowhere
    to run (no router, no gateway chassis, no IPv4 gateway address) or is administratively down."""
    router = view.topo.routers.get(service.router_id)
    if router is None or not service.admin_state_up:
        return None
    gc = view.gateway_of(router)
    gwp = view.gateway_port(router)
    if gc is None or gwp is None or not gwp.admin_state_up:
        return None
    gw_ip = _v4(gwp)
    if gw_ip is None:
        return None
    conns = []
    for cid in sorted(view.topo.vpn_users.get(("vpn_service", service.id), ())):
        conn = view.topo.ipsec_site_connections.get(cid)
        if conn is not None and conn.vpnservice_id == service.id:
            cp = _conn_plan(view, conn, gw_ip)
            if cp is not None:
                conns.append(cp)
    local = sorted({c for cp in conns for c in cp.local_cidrs})
    nets = [netaddr.IPNetwork(c) for c in local]
    addresses = sorted(
        {
            ip
            for port in view.topo.router_ports(router.id)
            if port.device_owner == OWNER_ROUTER_INTERFACE
            for _s, ip in port.fixed_ips
            if any(netaddr.IPAddress(ip) in n for n in nets)
        }
    )
    return ServicePlan(
        id=service.id,
        router_id=router.id,
        chassis_id=gc,
        gateway_ip=gw_ip,
        gateway_mac=gwp.mac,
        int_mac=int_mac(service.id),
        ns_mac=ns_mac(service.id),
        iface_id=iface_id(service.id),
        local_cidrs=tuple(local),
        local_addresses=tuple(addresses),
        connections=tuple(conns),
    )


def services_of(view: View, router: Router) -> list[VpnService]:
    sid = view.topo.router_vpn.get(router.id)
    svc = view.topo.vpn_services.get(sid) if sid else None
    return [svc] if svc is not None else []


def router_flows(view: View, chassis_id: str, router: Router, routes_here: bool) -> list[Flow]:
    """The router's VPN flows on `chassis_id` (`routes_here`: the router routes on this chassis)."""
    if not router.admin_state_up or router.key >= nat.REDIRECT_BASE:
        return []
    out: list[Flow] = []
    for service in services_of(view, router):
        sp = plan(view, service)
        if sp is None or not sp.connections:
            continue
        on_gc = chassis_id == sp.chassis_id
        if not (routes_here or on_gc):
            continue
        out += _service_flows(view, chassis_id, router, sp, on_gc)
    return out


def _service_flows(view: View, chassis_id: str, router: Router, sp: ServicePlan, on_gc: bool) -> list[Flow]:
    c = ids.cookie(ids.VPN, sp.id)
    md = {"metadata": router.key, "eth_type": IPV4}
    peers = sorted({p for cp in sp.connections for p in cp.peer_cidrs}, key=lambda p: netaddr.IPNetwork(p))
    ofport = view.rt(chassis_id).vifs.get(sp.iface_id) if on_gc else None
    to_ns: tuple[Action, ...]
    if on_gc:
        # without the namespace's port the peer CIDRs are dropped here: never sent out by the default route
        to_ns = (
            ()
            if ofport is None
            else (DecTtl(), SetField("eth_src", sp.int_mac), SetField("eth_dst", sp.ns_mac), Output(ofport))
        )
    else:
        tun = view.rt(chassis_id).tunnels.get(nat.REDIRECT_TUNNEL)
        gc_rec = view.chassis(sp.chassis_id)
        to_ns = (
            ()
            if tun is None or gc_rec is None or not gc_rec.tunnel_ip
            else (
                SetField("tunnel_id", nat.redirect_id(router)),
                SetField("tun_ipv4_dst", gc_rec.tunnel_ip),
                Output(tun),
            )
        )
    out = [
        Flow(
            "l3_lookup",
            MATCH(2 * netaddr.IPNetwork(p).prefixlen + 1),
            match={**md, "ipv4_dst": p},
            actions=to_ns,
            cookie=c,
        )
        for p in peers
    ]
    if not on_gc or ofport is None:
        return out
    gwp = view.gateway_port(router)
    ext = view.topo.networks.get(router.gateway_network_id)
    if gwp is None or ext is None:
        return out
    z = nat.zone(gwp)
    # the ns's own packets (IKE, ESP in UDP) to the gateway MAC: the router sends them out as its own
    out.append(
        Flow(
            "classify",
            MATCH,
            match={"in_port": ofport, "eth_dst": sp.gateway_mac},
            actions=(WriteMetadata(router.key), Goto("l3_lookup")),
            cookie=c,
        )
    )
    # decrypted packets to INT MAC: into the router like any routed packet
    out.append(
        Flow(
            "classify",
            MATCH,
            match={"in_port": ofport, "eth_dst": sp.int_mac},
            actions=(WriteMetadata(router.key), Goto("l3_lookup")),
            cookie=c,
        )
    )
    own = {**md, "eth_src": sp.ns_mac, "eth_dst": sp.gateway_mac}
    out.append(Flow("l3_lookup", HIGH(0), match=own, cookie=c))  # anything else from the ns to it: drop
    for sid, ip in gwp.fixed_ips:
        sub = view.topo.subnets.get(sid)
        if ip != sp.gateway_ip or sub is None:
            continue
        cidr = netaddr.IPNetwork(sub.cidr)
        hops: list[tuple[netaddr.IPNetwork, Action]] = [(cidr, Move("ipv4_dst", NEXT_HOP.field, 32))]
        if sub.gateway_ip:
            hops.append(
                (
                    netaddr.IPNetwork("0.0.0.0/0"),
                    SetField(NEXT_HOP.field, int(netaddr.IPAddress(sub.gateway_ip))),
                )
            )
        for prefix, hop in hops:
            out.append(
                Flow(
                    "l3_lookup",
                    HIGH(1 + prefix.prefixlen),
                    match={**own, "ipv4_src": sp.gateway_ip, "ipv4_dst": str(prefix.cidr)},
                    actions=(
                        SetField("eth_src", sp.gateway_mac),
                        hop,
                        WriteMetadata(ext.key),
                        Goto("arp_resolve"),
                    ),
                    cookie=c,
                )
            )
    # IKE, NAT-T and ESP from outside to the gateway address: to the ns, before conntrack
    rmd = {"metadata": router.key, "eth_type": IPV4, "reg5": z, "ipv4_dst": sp.gateway_ip}
    deliver = (SetField("eth_src", sp.gateway_mac), SetField("eth_dst", sp.ns_mac), Output(ofport))
    for extra in (
        {"ip_proto": UDP, "udp_dst": IKE_PORT},
        {"ip_proto": UDP, "udp_dst": NATT_PORT},
        {"ip_proto": ESP_PROTO},
    ):
        out.append(Flow("dnat", HIGH(1), match={**rmd, **extra}, actions=deliver, cookie=c))
    return out


#: a status report changes these fields only: no flow depends on them
_STATUS_FIELDS = ("status", "status_reason", "revision", "update_time")


def changed_routers(topo: Topology, change: Change) -> set[str]:
    """Routers whose VPN flows a model change can reach (their router units are recompiled)."""
    kind, _ident, old, new = change
    if kind not in (
        "vpn_service",
        "ipsec_site_connection",
        "vpn_endpoint_group",
        "ike_policy",
        "ipsec_policy",
    ):
        return set()
    if (
        old is not None
        and new is not None
        and all(
            getattr(old, f.name) == getattr(new, f.name) for f in fields(old) if f.name not in _STATUS_FIELDS
        )
    ):
        return set()  # a status report
    recs = [r for r in (old, new) if r is not None]
    if kind == "vpn_service":
        return {r.router_id for r in recs}  # type: ignore[union-attr]
    if kind == "ipsec_site_connection":
        services = {r.vpnservice_id for r in recs}  # type: ignore[union-attr]
    else:
        users = set().union(*(topo.vpn_users.get((kind, r.id), set()) for r in recs))  # type: ignore[union-attr]
        services = {c.vpnservice_id for u in users if (c := topo.ipsec_site_connections.get(u)) is not None}
    return {s.router_id for sid in services if (s := topo.vpn_services.get(sid)) is not None}


def router_of_iface(topo: Topology, iface: str) -> str | None:
    """The router of the VPN service whose namespace port carries this iface-id, if it is one."""
    if not iface.startswith("vpn-"):
        return None
    svc = topo.vpn_services.get(iface[4:])
    return svc.router_id if svc is not None else None
