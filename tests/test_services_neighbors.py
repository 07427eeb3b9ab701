"""Neighbour learning as a service (controller/services/neighbors.py) with a fake clock and a fake dataplane
(tests/service_host.py): what a NAT packet-in teaches or probes, the probe rate, expiry after the TTL, the
legacy neighbors.json. Through the Dataplane and its compile: tests/test_dataplane_nat.py and
tests/test_gateway_failover.py."""

from __future__ import annotations

import json
from pathlib import Path

import netaddr
from os_ken.lib.packet import arp, ethernet, ipv4, packet

from controller.services import neighbors
from controller.services.neighbors import NeighborService
from tests.service_host import Clock, FakeHost
from topology.records import Port

HOP = "172.24.4.100"


def routed(gw: Port, dst: str = "8.8.8.8") -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("00:00:00:00:00:00", gw.mac, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src="172.24.4.2", dst=dst, proto=1))
    pkt.serialize()
    return bytes(pkt.data)


def reply(gw: Port, ip: str, mac: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(gw.mac, mac, 0x0806))
    pkt.add_protocol(
        arp.arp(opcode=arp.ARP_REPLY, src_mac=mac, src_ip=ip, dst_mac=gw.mac, dst_ip=gw.fixed_ips[0][1])
    )
    pkt.serialize()
    return bytes(pkt.data)


def stored(host: FakeHost) -> dict[str, str]:
    return {n.address: n.mac for n in host.state.topology.neighbors.values()}


def test_a_miss_is_probed_at_most_once_a_second_per_address_from_the_gateway_chassis_only(
    tmp_path: Path,
) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    svc = NeighborService(host, ttl_s=600, clock=clock)
    try:
        gw, ext = host.gateway(), host.state.topology.networks["ext"]
        miss = {"metadata": ext.key, "reg0": int(netaddr.IPAddress(HOP))}
        svc.on_packet_in(host.packet_in("hv1", routed(gw), miss))
        svc.on_packet_in(host.packet_in("hv1", routed(gw), miss))
        clock.now += neighbors.PROBE_INTERVAL_S - 0.01
        svc.on_packet_in(host.packet_in("hv1", routed(gw), miss))
        assert host.probes() == [(1, HOP)]
        assert host.sent[0][2] == host.runtimes["hv1"][1].patches["physnet1"]
        # another address has a rate of its own; no next hop in reg0: the destination is on the network
        svc.on_packet_in(host.packet_in("hv1", routed(gw, "172.24.4.77"), {"metadata": ext.key}))
        assert host.probes() == [(1, HOP), (1, "172.24.4.77")]
        svc.on_packet_in(host.packet_in("hv2", routed(gw), miss))  # hv2 is no gateway: no probe
        clock.now += 0.01
        svc.on_packet_in(host.packet_in("hv1", routed(gw), miss))
        assert host.probes() == [(1, HOP), (1, "172.24.4.77"), (1, HOP)]
        host.packet_out = None  # no OpenFlow app: nothing to send with
        clock.now += 5
        svc.on_packet_in(host.packet_in("hv1", routed(gw), miss))
        assert len(host.probes()) == 3
    finally:
        host.state.close()


def test_an_arp_reply_to_the_gateway_mac_is_learnt_into_the_store_once(tmp_path: Path) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    svc = NeighborService(host, ttl_s=600, clock=clock)
    try:
        gw = host.gateway()
        svc.on_packet_in(host.packet_in("hv1", reply(gw, HOP, "02:ee:00:00:00:01"), {}))
        assert stored(host) == {HOP: "02:ee:00:00:00:01"}
        rev = host.state.revision
        svc.on_packet_in(host.packet_in("hv1", reply(gw, HOP, "02:ee:00:00:00:01"), {}))
        assert host.state.revision == rev, "the same answer writes nothing"
        created = host.state.topology.neighbors[f"ext|{HOP}"].create_time
        clock.now += 10
        svc.on_packet_in(host.packet_in("hv1", reply(gw, HOP, "02:ee:00:00:00:02"), {}))
        assert stored(host) == {HOP: "02:ee:00:00:00:02"}
        assert host.state.topology.neighbors[f"ext|{HOP}"].create_time == created
        svc.on_packet_in(host.packet_in("hv2", reply(gw, HOP, "02:ee:00:00:00:03"), {}))  # not hv2's gateway
        assert stored(host) == {HOP: "02:ee:00:00:00:02"}
    finally:
        host.state.close()


def test_a_binding_past_its_ttl_is_probed_and_removed_unless_answered(tmp_path: Path) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    svc = NeighborService(host, ttl_s=60, clock=clock)
    try:
        with host.state.lock:
            svc.learn("ext", HOP, "02:ee:00:00:00:01")
        clock.now += 59.9
        svc.tick(clock.now)
        assert host.probes() == []
        clock.now += 0.1
        svc.tick(clock.now)
        assert host.probes() == [(1, HOP)], "probed from the gateway chassis, still used meanwhile"
        svc.learn("ext", HOP, "02:ee:00:00:00:01")  # answered: confirmed again, nothing written
        clock.now += 59.9
        svc.tick(clock.now)
        assert len(host.probes()) == 1 and stored(host) == {HOP: "02:ee:00:00:00:01"}
        clock.now += 0.1
        for _ in range(3):  # silent: probed once a second for PROBE_WAIT_S, then removed
            svc.tick(clock.now)
            assert stored(host) == {HOP: "02:ee:00:00:00:01"}
            clock.now += neighbors.PROBE_WAIT_S / 3 + 0.001
        svc.tick(clock.now)
        assert len(host.probes()) == 4 and stored(host) == {}
    finally:
        host.state.close()


def test_with_no_ttl_nothing_expires_and_a_start_counts_stored_bindings_as_confirmed(tmp_path: Path) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    forever = NeighborService(host, ttl_s=0, clock=clock)
    try:
        forever.learn("ext", HOP, "02:ee:00:00:00:01")
        clock.now += 1e6
        forever.tick(clock.now)
        assert host.probes() == [] and stored(host) == {HOP: "02:ee:00:00:00:01"}
        restarted = NeighborService(host, ttl_s=60, clock=clock)
        restarted.reset(clock.now)
        clock.now += 59
        restarted.tick(clock.now)
        assert host.probes() == []
        clock.now += 1
        restarted.tick(clock.now)
        assert host.probes() == [(1, HOP)]
    finally:
        host.state.close()


def test_the_legacy_neighbors_file_is_moved_into_the_store_once(tmp_path: Path) -> None:
    legacy = tmp_path / "neighbors.json"
    legacy.write_text(
        json.dumps({"ext": {HOP: "02:ee:00:00:00:01"}, "gone": {"10.9.9.9": "02:00:00:00:00:09"}})
    )
    host, clock = FakeHost(tmp_path), Clock()
    svc = NeighborService(host, ttl_s=600, clock=clock, legacy_file=legacy)
    try:
        svc.migrate()
        assert stored(host) == {HOP: "02:ee:00:00:00:01"} and not legacy.exists()
        legacy.write_text("[1, 2]")  # unreadable: learnt again, the file removed
        svc.migrate()
        assert stored(host) == {HOP: "02:ee:00:00:00:01"} and not legacy.exists()
    finally:
        host.state.close()


def _dual_stack(host: FakeHost) -> Port:
    """Give ext an IPv6 subnet and router r's gateway an address on it (beside its IPv4 one)."""
    from topology import ops
    from topology.records import Subnet

    def fn(t, rev, now):  # type: ignore[no-untyped-def]
        sub = Subnet(id="ext-v6", tenant="alice", network_id="ext", cidr="2001:db8:ee::/64", ip_version=6)
        c = ops.create_subnet(t, sub, False, rev, now)
        t.apply(c, rev)
        v4 = next(a for _s, a in host.gateway().fixed_ips)
        gw = ops.GatewayRequest("ext", fixed_ips=(("", v4), ("ext-v6", "")))
        return c + ops.update_router(t, t.routers["r"], {"external_gateway": gw}, rev, now)

    host.state.write(fn)
    return host.gateway()


def test_an_ipv6_miss_is_solicited_for_its_next_hop6_and_the_advertisement_is_learnt(tmp_path: Path) -> None:
    from os_ken.lib.packet import icmpv6, ipv6

    host, clock = FakeHost(tmp_path), Clock()
    svc = NeighborService(host, ttl_s=600, clock=clock)
    try:
        gw, ext = _dual_stack(host), host.state.topology.networks["ext"]
        gw6 = next(a for _s, a in gw.fixed_ips if ":" in a)
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet("00:00:00:00:00:00", gw.mac, 0x86DD))
        pkt.add_protocol(ipv6.ipv6(src="fd00:a::10", dst="2001:db8:ff::7", nxt=17))
        pkt.serialize()
        hop = int(netaddr.IPAddress("2001:db8:ee::1"))
        # OpenFlow 1.3 carries NEXT_HOP6 (xxreg3) as reg12 (high) .. reg15; zero registers are left out
        regs = {f"reg{12 + i}": (hop >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)}
        miss = {"metadata": ext.key, **{k: v for k, v in regs.items() if v}}
        svc.on_packet_in(host.packet_in("hv1", bytes(pkt.data), miss))
        assert len(host.sent) == 1
        ns = packet.Packet(host.sent[0][1])
        eth, ip6, icmp = (
            ns.get_protocol(ethernet.ethernet),
            ns.get_protocol(ipv6.ipv6),
            ns.get_protocol(icmpv6.icmpv6),
        )
        assert (eth.src, eth.dst, ip6.src, ip6.dst, ip6.hop_limit) == (
            gw.mac,
            "33:33:ff:00:00:01",
            gw6,
            "ff02::1:ff00:1",
            255,
        )
        assert icmp.type_ == icmpv6.ND_NEIGHBOR_SOLICIT and icmp.data.dst == "2001:db8:ee::1"
        assert icmp.data.option.hw_src == gw.mac
        # the advertisement, to the gateway MAC: its target link-layer address is learnt
        na = packet.Packet()
        na.add_protocol(ethernet.ethernet(gw.mac, "02:ee:00:00:00:99", 0x86DD))
        na.add_protocol(ipv6.ipv6(src="2001:db8:ee::1", dst=gw6, nxt=58, hop_limit=255))
        na.add_protocol(
            icmpv6.icmpv6(
                type_=icmpv6.ND_NEIGHBOR_ADVERT,
                data=icmpv6.nd_neighbor(
                    res=6, dst="2001:db8:ee::1", option=icmpv6.nd_option_tla(hw_src="02:ee:00:00:00:01")
                ),
            )
        )
        na.serialize()
        svc.on_packet_in(host.packet_in("hv1", bytes(na.data), {}))
        assert stored(host) == {"2001:db8:ee::1": "02:ee:00:00:00:01"}
        # no next hop in the registers (a destination on the external subnet): the destination is solicited
        on_link = packet.Packet()
        on_link.add_protocol(ethernet.ethernet("00:00:00:00:00:00", gw.mac, 0x86DD))
        on_link.add_protocol(ipv6.ipv6(src="fd00:a::10", dst="2001:db8:ee::77", nxt=17))
        on_link.serialize()
        svc.on_packet_in(host.packet_in("hv1", bytes(on_link.data), {"metadata": ext.key}))
        assert len(host.sent) == 2
        assert packet.Packet(host.sent[-1][1]).get_protocol(icmpv6.icmpv6).data.dst == "2001:db8:ee::77"
    finally:
        host.state.close()
