"""Gratuitous ARP for addresses the dataplane answers for: what to announce, when, and how often.

Neutron's routers and load balancers announce themselves; here the controller does it for them. An address
is *claimed* by a MAC on a network, from somewhere:

- a router interface's address (the subnet's gateway) and a load balancer's VIP, on their tenant network:
  answered on every chassis hosting the network, so each such chassis announces it to its own VM ports;
- a router's gateway addresses and its floating IPs, on the external network: answered on the router's
  gateway chassis only, which announces them out its patch port to the physical network.

A claim that appears, changes MAC or moves to another gateway chassis is announced a few times, spaced
(`DELAYS_S`), each send at most `rate_pps` packets a second per chassis. A VM that still holds an old MAC
for the address updates its ARP cache from the request (sender = target = the address; Linux does so even
with `arp_accept=0` for an entry it has, and creates none). Pure: `claims` reads a View; `Announcer` keeps the
schedule; `Announcements` takes the model's writes and sends through the dataplane (controller/services/host.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import netaddr

from apps.view import View
from controller.services.host import Host
from topology.model import Change
from topology.records import (
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    FloatingIp,
    Network,
)

log = logging.getLogger(__name__)

#: announce a claim this long after it changed (the first as soon as the chassis's flows are realized)
DELAYS_S = (0.0, 1.0, 3.0)
#: at most this many gratuitous ARPs a second from one chassis (a burst of this many may go at once)
RATE_PPS = 100.0
#: an announcement its chassis could not send for this long (not connected, flows not realized) is dropped
STALE_S = 30.0
#: change kinds after which the claims are computed again (any other write cannot change them)
KINDS = frozenset({"network", "subnet", "port", "router", "floating_ip", "load_balancer", "chassis"})


@dataclass(frozen=True)
class Claim:
    """`address` is at `mac` on network `network_id`; announced from `chassis` (a gateway chassis, out its
    patch port) or, when None, from every chassis hosting the network to its local VM ports."""

    network_id: str
    address: str
    mac: str
    chassis: str | None = None


Claims = Mapping[tuple[str, str], Claim]  # (network id, address) -> claim


def claims(view: View) -> dict[tuple[str, str], Claim]:
    """Every address the dataplane answers ARP for on behalf of a router or a load balancer (IPv4)."""
    topo = view.topo
    out: dict[tuple[str, str], Claim] = {}

    def add(net_id: str, mac: str, addresses: Iterable[str], chassis: str | None = None) -> None:
        for a in addresses:
            if netaddr.valid_ipv4(a):
                out[(net_id, a)] = Claim(net_id, a, mac, chassis)

    fips: dict[str, list[FloatingIp]] = {}
    for fip in topo.floatingips.values():
        port = topo.ports.get(fip.port_id) if fip.port_id and fip.fixed_ip else None
        if fip.router_id and port is not None and any(ip == fip.fixed_ip for _s, ip in port.fixed_ips):
            fips.setdefault(fip.router_id, []).append(fip)  # as apps.nat.floating_ips: still the port's
    for router in sorted(topo.routers.values(), key=lambda r: r.id):
        for p in topo.router_ports(router.id):
            if p.device_owner == OWNER_ROUTER_INTERFACE and view.distributed(p):
                add(p.network_id, p.mac, (ip for _s, ip in p.fixed_ips))
        gc, gwp = view.gateway_of(router), view.gateway_port(router)
        if gc is None or gwp is None or not router.admin_state_up or not gwp.admin_state_up:
            continue
        add(
            gwp.network_id,
            gwp.mac,
            [ip for _s, ip in gwp.fixed_ips] + [f.address for f in fips.get(router.id, [])],
            gc,
        )
    for lb in topo.load_balancers.values():
        vip = topo.ports.get(lb.vip_port_id)
        if vip is not None and view.vip(vip):
            add(vip.network_id, vip.mac, (ip for _s, ip in vip.fixed_ips))
    return out


def may_change(change: Change) -> bool:
    """Can this model change alter the claims? (Most writes are VM ports' status and binding: they cannot.)"""
    kind, _ident, old, new = change
    if kind not in KINDS:
        return False
    if kind != "port":
        return True
    owners = (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY, OWNER_LOAD_BALANCER)
    if old is None or new is None:
        return getattr(old or new, "device_owner", "") in owners
    # a floating IP holds while its fixed IP is still the port's
    return (
        getattr(new, "device_owner", "") in owners
        or getattr(old, "fixed_ips", ()) != getattr(new, "fixed_ips", ())
        or getattr(old, "mac", "") != getattr(new, "mac", "")
    )


def changed(before: Claims, after: Claims) -> list[Claim]:
    """Claims that are new, or whose MAC or announcing chassis changed."""
    return [c for k, c in sorted(after.items()) if before.get(k) != c]


@dataclass
class Pending:
    due: float
    claim: Claim
    chassis: str
    revision: int  # the model revision whose flows the chassis must have realized first


@dataclass
class Announcer:
    """The schedule of gratuitous ARPs to send, per chassis, rate-limited (a token bucket per chassis)."""

    delays_s: tuple[float, ...] = DELAYS_S
    rate_pps: float = RATE_PPS
    current: dict[tuple[str, str], Claim] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    _tokens: dict[str, tuple[float, float]] = field(default_factory=dict)  # chassis -> (tokens, when)

    def update(self, view: View, now: float, revision: int) -> list[Claim]:
        """Take the model's claims; schedule the changed ones (a distributed one on every chassis hosting its
        network) once `revision` is realized there. Returns the changed claims."""
        after = claims(view)
        moved = changed(self.current, after)
        self.current = after
        for c in moved:
            chassis = [c.chassis] if c.chassis is not None else sorted(view.hosting(c.network_id))
            key = (c.network_id, c.address)
            # a newer claim of the address replaces what is still pending for it
            self.pending = [p for p in self.pending if (p.claim.network_id, p.claim.address) != key]
            self.pending += [Pending(now + d, c, ch, revision) for ch in chassis for d in self.delays_s]
        return moved

    def reset(self, view: View) -> None:
        """Take the model's claims as known, announcing nothing (a controller start: nothing moved)."""
        self.current = claims(view)

    def due(
        self, now: float, ready: Callable[[str, int], bool], cost: Callable[[Pending], int]
    ) -> list[Pending]:
        """The pending announcements to send now: due, their chassis ready (its switch has realized the model
        revision: `ready(chassis, revision)`), within the chassis's rate (`cost`: the packets an announcement
        takes there). Those not sent now stay pending; one whose claim is no longer current is dropped."""
        out: list[Pending] = []
        keep: list[Pending] = []
        for p in sorted(self.pending, key=lambda p: p.due):
            key = (p.claim.network_id, p.claim.address)
            if self.current.get(key) != p.claim or now - p.due > STALE_S:
                continue
            if p.due > now or not ready(p.chassis, p.revision):
                keep.append(p)
                continue
            if not self._take(p.chassis, cost(p), now):
                keep.append(p)
                continue
            out.append(p)
        self.pending = keep
        return out

    def _take(self, chassis: str, n: int, now: float) -> bool:
        tokens, when = self._tokens.get(chassis, (self.rate_pps, now))
        tokens = min(self.rate_pps, tokens + (now - when) * self.rate_pps)
        if (
            n > tokens and tokens < self.rate_pps
        ):  # an announcement larger than the burst goes when it is full
            self._tokens[chassis] = (tokens, now)
            return False
        self._tokens[chassis] = (tokens - n, now)
        return True


def garp(mac: str, address: str, vlan: int | None = None) -> bytes:
    """A gratuitous ARP request (sender = target = `address`) from `mac`, broadcast; 802.1q-tagged if `vlan`."""
    return arp_request(mac, address, address, vlan)


def arp_request(mac: str, src_ip: str, dst_ip: str, vlan: int | None = None) -> bytes:
    """A broadcast ARP request for `dst_ip` from `mac`, `src_ip`; 802.1q-tagged if `vlan`."""
    from os_ken.lib.packet import arp, ethernet, packet
    from os_ken.lib.packet import vlan as vlan_

    pkt = packet.Packet()
    if vlan is not None:
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, 0x8100))
        pkt.add_protocol(vlan_.vlan(vid=vlan, ethertype=0x0806))
    else:
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, 0x0806))
    pkt.add_protocol(
        arp.arp(
            opcode=arp.ARP_REQUEST, src_mac=mac, src_ip=src_ip, dst_mac="00:00:00:00:00:00", dst_ip=dst_ip
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def uplink_vlan(net: Network) -> int | None:
    """The tag a packet sent out the patch port to the network's physical network carries."""
    return net.segment_id if net.segment_type == "vlan" else None


class Announcements:
    """The dataplane's side of the Announcer: the model's writes in (a state listener), the due gratuitous
    ARPs out through the dataplane's packet-out once their chassis's flows are realized."""

    def __init__(self, host: Host, clock: Callable[[], float]) -> None:
        self.host = host
        self.clock = clock
        self.announcer = Announcer()

    @property
    def pending(self) -> bool:
        return bool(self.announcer.pending)

    def reset(self) -> None:
        """At start: the model's claims are taken as known (a start announces nothing: nothing moved)."""
        self.announcer.reset(self.host.current_view())

    def on_write(self, revision: int, changes: list[Change]) -> None:
        """State listener (after the dataplane's): router interfaces, gateways, floating IPs and VIPs that
        appeared, changed MAC or moved are announced once this revision's flows are realized."""
        if any(may_change(c) for c in changes):
            moved = self.announcer.update(self.host.current_view(), self.clock(), revision)
            if moved:
                log.info("to announce: %s", ", ".join(f"{c.address} at {c.mac}" for c in moved))

    def gateways_moved(self, now: float) -> None:
        """Gateway failover moved routers: their gateway addresses and floating IPs are announced from
        their new gateway chassis at once (their flows are already there: no revision to wait for)."""
        self.announcer.update(self.host.current_view(), now, 0)

    def send(self, now: float) -> None:
        """Send the due gratuitous ARPs (requests, sender = target = the address, from the claiming MAC):
        a gateway chassis's out its patch port (the physical network's switches and hosts learn where the
        address is), a distributed claim's out each local VM port of its network (VMs replace a stale MAC).
        The caller holds the model lock."""
        if not self.announcer.pending:
            return
        send = self.host.packet_out
        if send is None:
            self.announcer.pending.clear()
            return
        view = self.host.current_view()
        out: dict[int, list[tuple[int, bytes]]] = {}

        def targets(p: Pending) -> list[tuple[int, bytes]]:
            got = out.get(id(p))
            if got is None:
                got = out[id(p)] = self._targets(view, p)
            return got

        for p in self.announcer.due(now, self.host.realized_on, lambda p: len(targets(p))):
            found = self.host.runtime_of(p.chassis)
            if found is None:
                continue
            for ofport, data in targets(p):
                send(found[0], data, ofport)
            if targets(p):
                log.info(
                    "chassis %s: gratuitous ARP for %s at %s (%d ports)",
                    p.chassis,
                    p.claim.address,
                    p.claim.mac,
                    len(targets(p)),
                )

    def _targets(self, view: View, p: Pending) -> list[tuple[int, bytes]]:
        """(ofport, packet) of one announcement on its chassis."""
        found = self.host.runtime_of(p.chassis)
        net = view.topo.networks.get(p.claim.network_id)
        if found is None or net is None:
            return []
        runtime = found[1]
        if p.claim.chassis is not None:
            patch = runtime.patches.get(net.physical_network)
            data = garp(p.claim.mac, p.claim.address, uplink_vlan(net))
            return [] if patch is None else [(patch, data)]
        data = garp(p.claim.mac, p.claim.address)
        return [
            (ofport, data)
            for port in view.local_ports(p.chassis, net.id)
            if (ofport := view.local_ofport(p.chassis, port)) is not None
        ]
