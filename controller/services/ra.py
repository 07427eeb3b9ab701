"""IPv6 router advertisements: the controller speaks for each router interface on a subnet with an
ipv6_ra_mode (Neutron's semantics: no router interface, no advertisement), out through packet-out to the VM
ports of the network plugged on each chassis: every `INTERVAL_S` (RFC 4861's unsolicited advertisements),
within a second to the ports of a network whose advertisements may have changed (a subnet written, a router
interface added or changed, a port of it turned ACTIVE: a VM just plugged need not wait), and to a port at
once when it sends a router solicitation (apps/dhcp.py punts those, metered).

One advertisement per router interface port, from its MAC and its link-local address (fe80:: + the MAC's
EUI-64 interface identifier), to ff02::1: hop limit 64, router lifetime `ROUTER_LIFETIME_S`, the M flag on a
dhcpv6-stateful subnet, O on stateful and stateless ones (the options come from DHCPv6, as radvd is set up by
Neutron), the source link-layer address, the network's MTU, and one prefix option per such subnet the port
holds (on-link; A, autonomous, on slaac and dhcpv6-stateless).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr
from os_ken.lib.packet import ethernet, icmpv6, packet
from os_ken.lib.packet import ipv6 as ipv6_pkt

from apps.dhcp import advertised
from apps.view import View
from controller.services.dhcp import Responder
from controller.services.host import Host, PacketIn
from topology import ipv6
from topology.model import Change
from topology.records import OWNER_ROUTER_INTERFACE, PORT_ACTIVE, Port, Subnet

log = logging.getLogger(__name__)

#: seconds between unsolicited advertisements (radvd as Neutron configures it: 30..100 s)
INTERVAL_S = 30.0
#: how often the networks whose advertisements may have changed are served (Advertiser.tick's period)
TICK_S = 1.0
#: RFC 4861 defaults: router lifetime 3 x MaxRtrAdvInterval (600 s), prefix valid 30 days, preferred 7 days
ROUTER_LIFETIME_S = 1800
VALID_LIFETIME_S = 2592000
PREFERRED_LIFETIME_S = 604800
ALL_NODES, ALL_NODES_MAC = "ff02::1", "33:33:00:00:00:01"
_M, _O = 0b10, 0b01  # os-ken's nd_router_advert.res: the flags byte's top two bits
_L, _A = 0b100, 0b010  # os-ken's nd_option_pi.res1: the flags byte's top three bits


def advertising_interfaces(view: View, network_id: str) -> list[tuple[Port, list[Subnet]]]:
    """The network's router interface ports holding a subnet with an ipv6_ra_mode, with those subnets."""
    if not advertised(view, network_id):
        return []
    out = []
    for p in view.topo.ports_of(network_id):
        if p.device_owner != OWNER_ROUTER_INTERFACE or not p.admin_state_up:
            continue
        subs = []
        for sid, ip in p.fixed_ips:
            sub = view.topo.subnets.get(sid)
            if sub is not None and sub.ipv6_ra_mode and ip == sub.gateway_ip:
                subs.append(sub)
        if subs:
            out.append((p, subs))
    return out


def advertisement(mtu: int, router_mac: str, subnets: list[Subnet]) -> bytes:
    """The router advertisement of one router interface (see the module docstring)."""
    flags = 0
    options: list[Any] = [icmpv6.nd_option_sla(hw_src=router_mac)]
    if mtu:  # as bytes: os-ken's nd_option_mtu cannot be serialized (it has no _MIN_LEN)
        options.append(struct.pack("!BBHI", icmpv6.ND_OPTION_MTU, 1, 0, mtu))
    for sub in subnets:
        if sub.ipv6_ra_mode == ipv6.STATEFUL:
            flags |= _M | _O
        elif sub.ipv6_ra_mode == ipv6.STATELESS:
            flags |= _O
        net = netaddr.IPNetwork(sub.cidr)
        options.append(
            icmpv6.nd_option_pi(
                length=4,
                pl=net.prefixlen,
                res1=_L | (_A if sub.ipv6_ra_mode in ipv6.AUTO_ADDRESS_MODES else 0),
                val_l=VALID_LIFETIME_S,
                pre_l=PREFERRED_LIFETIME_S,
                prefix=str(net.network),
            )
        )
    ra = icmpv6.nd_router_advert(ch_l=64, res=flags, rou_l=ROUTER_LIFETIME_S, options=options)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(ALL_NODES_MAC, router_mac, 0x86DD))
    pkt.add_protocol(ipv6_pkt.ipv6(src=ipv6.link_local(router_mac), dst=ALL_NODES, nxt=58, hop_limit=255))
    pkt.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_ROUTER_ADVERT, data=ra))
    pkt.serialize()
    return bytes(pkt.data)


def network_advertisements(view: View, network_id: str) -> list[bytes]:
    net = view.topo.networks.get(network_id)
    if net is None or not net.admin_state_up:
        return []
    return [advertisement(net.mtu, p.mac, subs) for p, subs in advertising_interfaces(view, network_id)]


@dataclass
class Advertiser:
    """Router solicitations in (a packet-in handler), advertisements out (`send`: Dataplane.packet_out);
    `tick` sends the unsolicited ones through `host`."""

    host: Host | None = None
    send: Callable[[int, bytes, int], Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: networks whose advertisements go out at the next tick (on_write notes them)
    dirty: set[str] = field(default_factory=set)
    _last_full: float = float("-inf")

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def answer(
        self, view: View, chassis_id: str, match: dict[str, Any], data: bytes
    ) -> list[tuple[int, bytes]]:
        """(ofport, advertisement) for a router solicitation from a port of `chassis_id`: to that port only."""
        try:
            pkt = packet.Packet(data)
        except Exception:  # noqa: BLE001 - a packet os-ken cannot parse gets no answer
            self._count("unparsable")
            return []
        eth = pkt.get_protocol(ethernet.ethernet)
        icmp = pkt.get_protocol(icmpv6.icmpv6)
        if eth is None or icmp is None or icmp.type_ != icmpv6.ND_ROUTER_SOLICIT:
            self._count("not_a_solicitation")
            return []
        port = Responder._port(view, chassis_id, match, eth.src)
        ofport = view.local_ofport(chassis_id, port) if port is not None else None
        if port is None or ofport is None:
            self._count("unknown_port")
            return []
        self._count("solicitations")
        return [(ofport, ra) for ra in network_advertisements(view, port.network_id)]

    def __call__(self, pin: PacketIn) -> None:
        out = self.answer(pin.view, pin.chassis_id, pin.match, pin.data)
        if self.send is not None:
            for ofport, data in out:
                self.send(pin.datapath_id, data, ofport)
            self._count("sent_solicited", len(out))

    def on_write(self, revision: int, changes: list[Change]) -> None:
        """State listener (under the model lock): note the networks whose ports should hear the advertisements
        again now (see the module docstring); `tick` sends them."""
        for kind, _ident, old, new in changes:
            if kind == "subnet":
                self.dirty.update(r.network_id for r in (old, new) if isinstance(r, Subnet))
            elif kind == "port" and isinstance(new, Port):
                activated = new.status == PORT_ACTIVE and getattr(old, "status", "") != PORT_ACTIVE
                if activated or new.device_owner == OWNER_ROUTER_INTERFACE:
                    self.dirty.add(new.network_id)

    def tick(self, now: float) -> None:
        """Every TICK_S: all networks every INTERVAL_S, else the ones `on_write` noted."""
        full = now - self._last_full >= INTERVAL_S
        if full:
            self._last_full = now
        self.send_all(None if full else self.dirty)
        self.dirty = set()

    def send_all(self, networks: set[str] | None = None) -> None:
        """The unsolicited advertisements: each network's (or only those of `networks`) to its VM ports
        plugged on each chassis."""
        host = self.host
        if host is None or host.packet_out is None or networks == set():
            return
        with host.state.lock:
            view = host.current_view()
            cache: dict[str, list[bytes]] = {}
            for chassis_id in sorted(view.topo.chassis):
                found = host.runtime_of(chassis_id)
                if found is None:
                    continue
                for pid in sorted(view.rt(chassis_id).vifs):  # plugged here: O(VIFs), not O(ports bound here)
                    port = view.topo.ports.get(pid)
                    if port is None or port.device_owner.startswith("network:"):
                        continue
                    if networks is not None and port.network_id not in networks:
                        continue
                    ofport = view.local_ofport(chassis_id, port)
                    if ofport is None:
                        continue
                    ras = cache.get(port.network_id)
                    if ras is None:
                        ras = cache[port.network_id] = network_advertisements(view, port.network_id)
                    for data in ras:
                        host.packet_out(found[0], data, ofport)
                    self._count("sent_periodic" if networks is None else "sent_on_change", len(ras))
