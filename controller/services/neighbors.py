"""External next hops: learnt from ARP replies to a router's gateway MAC, probed for when a routed packet's
next hop is unknown, probed again when not confirmed for `ttl_s` and removed if they stay silent.

The bindings are Neighbor records in the store (revisioned: a write recompiles the gateway chassis's
arp_resolve, and a restarted controller finds them). What is kept here is timing only: when each binding was
last confirmed, when its re-probe started, when each address was last probed. The packet-ins are the NAT
app's (apps/nat.py: ARP replies to a gateway MAC, arp_resolve misses on a gateway chassis)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netaddr

from controller.services.announce import arp_request, uplink_vlan
from controller.services.host import Host, PacketIn, internal_write
from topology.model import Change, Topology
from topology.records import Neighbor

log = logging.getLogger(__name__)

#: at most one ARP probe per (chassis, external network, address) per this many seconds
PROBE_INTERVAL_S = 1.0
#: a binding re-probed this long without an answer is removed (probes go once a second meanwhile)
PROBE_WAIT_S = 3.0
#: past this many remembered probes, those older than PROBE_INTERVAL_S are forgotten
PROBED_MAX = 4096


class NeighborService:
    def __init__(
        self, host: Host, ttl_s: float, clock: Callable[[], float], legacy_file: Path | None = None
    ) -> None:
        self.host = host
        self.ttl_s = ttl_s  # 0: bindings never expire
        self.clock = clock
        # the JSON file earlier versions kept learnt next hops in (moved into the store by migrate)
        self.legacy_file = legacy_file
        # (network, address) -> when last confirmed by an ARP reply / when its re-probe started
        self._confirmed: dict[tuple[str, str], float] = {}
        self._reprobing: dict[tuple[str, str], float] = {}
        self._probed: dict[tuple[str, str, str], float] = {}  # (chassis, network, address) -> last probe

    def migrate(self) -> None:
        """Earlier versions kept learnt neighbours in a JSON file beside the store: move them into it once
        (at start, before the dataplane listens to writes), then remove the file."""
        path = self.legacy_file
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            found = [(str(n), str(ip), str(mac)) for n, m in data.items() for ip, mac in m.items()]
        except (OSError, ValueError, AttributeError):
            found = []
            log.warning("%s unreadable: external next hops are learnt again", path)

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            return [
                (
                    "neighbor",
                    f"{n}|{ip}",
                    None,
                    Neighbor(
                        id=f"{n}|{ip}",
                        network_id=n,
                        address=ip,
                        mac=mac,
                        revision=rev,
                        create_time=now,
                        update_time=now,
                    ),
                )
                for n, ip, mac in found
                if f"{n}|{ip}" not in t.neighbors and n in t.networks
            ]

        internal_write(self.host.state, fn, "neighbours migrated from " + path.name)
        path.unlink(missing_ok=True)

    def reset(self, now: float) -> None:
        """At start (ages are not kept): every stored binding counts as confirmed now."""
        known = self.host.state.topology.neighbor_map()
        self._confirmed = {(n, ip): now for n, m in known.items() for ip in m}

    # ------------------------------------------------------------------------------------------ packet-ins

    def on_packet_in(self, pin: PacketIn) -> None:
        """An ARP reply to a router's gateway MAC teaches a binding; a routed packet whose external next hop
        is unknown makes the controller probe for it (from the gateway chassis the packet-in came from)."""
        from os_ken.lib.packet import arp, ethernet, icmpv6, ipv4, ipv6, packet

        try:
            pkt = packet.Packet(pin.data)
        except Exception:  # noqa: BLE001 - a packet we cannot parse is not ours to handle
            return
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None:
            return
        topo, view = pin.topo, pin.view
        gateways = [
            (r, gwp)
            for r in topo.routers.values()
            if view.gateway_of(r) == pin.chassis_id and (gwp := view.gateway_port(r)) is not None
        ]
        a = pkt.get_protocol(arp.arp)
        if a is not None:
            if a.opcode == arp.ARP_REPLY:
                for router, gwp in gateways:
                    if gwp.mac == eth.dst:
                        self.learn(router.gateway_network_id, a.src_ip, a.src_mac)
                        break
            return
        icmp6 = pkt.get_protocol(icmpv6.icmpv6)
        if icmp6 is not None and icmp6.type_ == icmpv6.ND_NEIGHBOR_ADVERT:
            na = icmp6.data
            if isinstance(na, icmpv6.nd_neighbor):
                # the target link-layer address option, else the sender's MAC
                opt = na.option
                mac = opt.hw_src if isinstance(opt, icmpv6.nd_option_tla) else eth.src
                for router, gwp in gateways:
                    if gwp.mac == eth.dst:
                        self.learn(router.gateway_network_id, str(netaddr.IPAddress(na.dst)), mac)
                        break
            return
        ip: Any = pkt.get_protocol(ipv4.ipv4) or pkt.get_protocol(ipv6.ipv6)
        if ip is None:
            return
        net = next((n for n in topo.networks.values() if n.key == pin.match.get("metadata")), None)
        if net is None:
            return
        if isinstance(ip, ipv6.ipv6):
            nexthop = _nexthop6(pin.match) or ip.dst
        else:
            reg0 = pin.match.get("reg0")
            nexthop = str(netaddr.IPAddress(reg0)) if isinstance(reg0, int) and reg0 else ip.dst
        self._probe(
            pin.chassis_id, net, nexthop, [gwp for r, gwp in gateways if r.gateway_network_id == net.id]
        )

    def learn(self, network_id: str, ip: str, mac: str) -> None:
        """An ARP reply to a gateway's probe: the address's MAC, written to the store if it is news (the
        write recompiles). The caller holds the model lock."""
        self._confirmed[(network_id, ip)] = self.clock()
        self._reprobing.pop((network_id, ip), None)
        ident = f"{network_id}|{ip}"
        old = self.host.state.topology.neighbors.get(ident)
        if old is not None and old.mac == mac:
            return

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            before = t.neighbors.get(ident)
            if before is not None and before.mac == mac:
                return []
            new = Neighbor(
                id=ident,
                network_id=network_id,
                address=ip,
                mac=mac,
                revision=rev,
                create_time=before.create_time if before is not None else now,
                update_time=now,
            )
            return [("neighbor", ident, before, new)]

        internal_write(self.host.state, fn, "neighbour learnt")
        log.info("external network %s: %s is at %s", network_id, ip, mac)

    # ------------------------------------------------------------------------------------------ timer

    def tick(self, now: float) -> None:
        """A binding not confirmed for ttl_s is probed again (once a second); still unanswered after
        PROBE_WAIT_S it is removed (the next packet to it misses and is probed afresh)."""
        if self.ttl_s <= 0:
            return
        topo = self.host.state.topology
        view = None
        removed: list[str] = []
        for net_id, known in sorted(topo.neighbor_map().items()):
            view = view or self.host.current_view()
            if not self._responsible(topo, view, net_id):
                continue  # several controllers: the master of its gateway chassis probes and expires
            for ip in sorted(known):
                key = (net_id, ip)
                confirmed = self._confirmed.setdefault(key, now)
                if now - confirmed < self.ttl_s:
                    continue
                started = self._reprobing.setdefault(key, now)
                if now - started >= PROBE_WAIT_S:
                    self._confirmed.pop(key, None)
                    self._reprobing.pop(key, None)
                    removed.append(f"{net_id}|{ip}")
                    log.info("external network %s: %s expired (no answer to its probes)", net_id, ip)
                    continue
                net = topo.networks.get(net_id)
                if net is None:
                    continue
                view = view or self.host.current_view()
                for router in sorted(topo.routers.values(), key=lambda r: r.id):
                    gc = view.gateway_of(router) if router.gateway_network_id == net_id else None
                    gwp = view.gateway_port(router)
                    if gc is not None and self.host.runtime_of(gc) is not None and gwp is not None:
                        self._probe(gc, net, ip, [gwp])
                        break
        if removed:
            internal_write(
                self.host.state,
                lambda t, _rev, _now: [
                    ("neighbor", i, t.neighbors[i], None) for i in removed if i in t.neighbors
                ],
                "neighbour expired",
            )

    def _responsible(self, topo: Topology, view: Any, net_id: str) -> bool:
        """Does this controller probe and expire the network's neighbours: it is master of a gateway chassis
        of a router on it (or no router has one: nobody probes, expiry is anyone's)."""
        gcs = [
            gc
            for r in topo.routers.values()
            if r.gateway_network_id == net_id and (gc := view.gateway_of(r)) is not None
        ]
        return not gcs or any(self.host.owns(gc) for gc in gcs)

    # ------------------------------------------------------------------------------------------ probes

    def _probe(self, chassis_id: str, net: Any, nexthop: str, gw_ports: list[Any]) -> None:
        """ARP request for `nexthop` from a gateway port's MAC and address, out the chassis's patch port;
        at most one per PROBE_INTERVAL_S per (chassis, network, address)."""
        key = (chassis_id, net.id, nexthop)
        now = self.clock()
        send = self.host.packet_out
        if now - self._probed.get(key, -1e9) < PROBE_INTERVAL_S or send is None:
            return
        if len(self._probed) > PROBED_MAX:  # the table must not grow with every address tried
            self._probed = {k: t for k, t in self._probed.items() if now - t < PROBE_INTERVAL_S}
        found = self.host.runtime_of(chassis_id)
        if found is None:
            return
        datapath_id, runtime = found
        patch = runtime.patches.get(net.physical_network)
        target = netaddr.IPAddress(nexthop)
        subnets = self.host.state.topology.subnets
        for gwp in gw_ports:
            src = next(
                (
                    ip
                    for sid, ip in gwp.fixed_ips
                    if (sub := subnets.get(sid)) is not None and target in netaddr.IPNetwork(sub.cidr)
                ),
                None,
            )
            if src is None or patch is None:
                continue
            self._probed[key] = now
            if target.version == 6:
                send(datapath_id, neighbor_solicitation(gwp.mac, src, nexthop, uplink_vlan(net)), patch)
                log.info("chassis %s: neighbour solicitation for %s on %s", chassis_id, nexthop, net.id)
                return
            send(datapath_id, arp_request(gwp.mac, src, nexthop, uplink_vlan(net)), patch)
            log.info("chassis %s: ARP probe for %s on %s", chassis_id, nexthop, net.id)
            return


def _nexthop6(match: dict[str, Any]) -> str | None:
    """NEXT_HOP6 (xxreg3) of a packet-in's match: OpenFlow 1.3 carries it as reg12 (high) .. reg15."""
    xx = match.get("xxreg3")
    if isinstance(xx, int) and xx:
        return str(netaddr.IPAddress(xx, 6))
    parts = [match.get(f"reg{i}", 0) for i in range(12, 16)]
    if not all(isinstance(x, int) for x in parts) or not any(parts):
        return None
    n = 0
    for x in parts:
        n = (n << 32) | x
    return str(netaddr.IPAddress(n, 6))


def neighbor_solicitation(mac: str, src_ip: str, dst_ip: str, vlan: int | None = None) -> bytes:
    """A neighbour solicitation for `dst_ip` from `mac`, `src_ip` to its solicited-node multicast address
    (hop limit 255, the source link-layer address option); 802.1q-tagged if `vlan`."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet
    from os_ken.lib.packet import vlan as vlan_

    target = netaddr.IPAddress(dst_ip)
    low24 = int(target) & 0xFFFFFF
    group = netaddr.IPAddress((0xFF020000000000000000000000000000 | (1 << 32) | (0xFF << 24)) | low24, 6)
    eth_dst = "33:33:" + ":".join(f"{b:02x}" for b in (int(group) & 0xFFFFFFFF).to_bytes(4, "big"))
    pkt = packet.Packet()
    if vlan is not None:
        pkt.add_protocol(ethernet.ethernet(eth_dst, mac, 0x8100))
        pkt.add_protocol(vlan_.vlan(vid=vlan, ethertype=0x86DD))
    else:
        pkt.add_protocol(ethernet.ethernet(eth_dst, mac, 0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src_ip, dst=str(group), nxt=58, hop_limit=255))
    pkt.add_protocol(
        icmpv6.icmpv6(
            type_=icmpv6.ND_NEIGHBOR_SOLICIT,
            data=icmpv6.nd_neighbor(dst=str(target), option=icmpv6.nd_option_sla(hw_src=mac)),
        )
    )
    pkt.serialize()
    return bytes(pkt.data)
