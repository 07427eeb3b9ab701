"""The router firewall's reject: answer a refused packet so the sender fails at once, not on a timeout.

A reject rule (apps/firewall.py) sends the packet to the controller (metered). Here, on the dataplane
worker, the answer is built as the destination would have given it and sent straight back out of the
port the packet came in on:

- TCP: a RST from the destination address and port (for a SYN: seq 0, ack = its seq + 1, so the
  client's connect() fails with ECONNREFUSED; for a segment with ACK: seq = its ack);
- anything else: ICMP destination unreachable, port unreachable (type 3 code 3), from the destination
  address, carrying the original IP header and the first 8 bytes after it (never about an ICMP error);
- IPv6 the same way: TCP gets a RST, anything else ICMPv6 destination unreachable, administratively
  prohibited (type 1 code 1, RFC 4443), carrying as much of the packet as fits in the IPv6 minimum MTU
  (1280), never about an ICMPv6 error (types below 128).

The reply's eth_src is the MAC of the router interface on the sender's own network (its gateway), its
eth_dst the sender's MAC. The sender must be a VM plugged on this chassis (east-west traffic is checked
where it is routed, on the sender's chassis): a packet from anywhere else (the external network, through
a floating IP, on the gateway chassis) is just dropped, so there reject acts as deny.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from controller.services.host import PacketIn
from topology.records import OWNER_ROUTER_INTERFACE, Port

log = logging.getLogger(__name__)

ICMP_ERRORS = {3, 4, 5, 11, 12}  # never answer an ICMP error with another one (RFC 1122)
TCP_RST, TCP_ACK, TCP_SYN, TCP_FIN = 0x04, 0x10, 0x02, 0x01


def handler(packet_out: Callable[[int, bytes, int], object]) -> Callable[[PacketIn], None]:
    """The packet-in handler for Dataplane.packet_in_apps[ids.FIREWALL], replying through `packet_out`."""

    def handle(pin: PacketIn) -> None:
        out = build_reply(pin)
        if out is not None:
            data, ofport = out
            packet_out(pin.datapath_id, data, ofport)

    return handle


def _sender(pin: PacketIn) -> tuple[Port, int] | None:
    """The VM port plugged at the packet's in_port on this chassis, and that ofport."""
    in_port = pin.match.get("in_port")
    if not isinstance(in_port, int):
        return None
    vifs = pin.view.rt(pin.chassis_id).vifs
    for pid, ofport in vifs.items():
        if ofport == in_port:
            port = pin.topo.ports.get(pid)
            if port is not None and port.device_owner != OWNER_ROUTER_INTERFACE:
                return port, ofport
    return None


def _gateway_mac(pin: PacketIn, sender: Port, macs: tuple[str, ...], version: int = 4) -> str | None:
    """The MAC of the router interface on the sender's network, of the router the packet was crossing
    (found by the interface MAC it carries: eth_dst before routing, eth_src after)."""
    topo = pin.topo
    for mac in macs:
        pid = topo.macs.get(mac)
        iface = topo.ports.get(pid) if pid else None
        if iface is None or iface.device_owner != OWNER_ROUTER_INTERFACE:
            continue
        gws = [
            p
            for p in topo.router_ports(iface.device_id)
            if p.device_owner == OWNER_ROUTER_INTERFACE and p.network_id == sender.network_id
        ]
        # the interface of the packet's family first (a dual-stack network may have one per family)
        gw = next((p for p in gws if any((":" in ip) == (version == 6) for _, ip in p.fixed_ips)), None)
        gw = gw or next(iter(gws), None)
        if gw is not None:
            return gw.mac
    return None


def build_reply(pin: PacketIn) -> tuple[bytes, int] | None:
    """(the RST or ICMP error, the ofport to send it out of), or None: nothing to answer."""
    from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp

    found = _sender(pin)
    if found is None:
        return None  # not from a local VM (e.g. the external network): reject acts as deny
    sender, ofport = found
    try:
        pkt = packet.Packet(pin.data)
    except Exception:  # noqa: BLE001 - a packet we cannot parse gets no answer
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is not None and eth.ethertype == 0x86DD:
        return _reply6(pin, sender, ofport, pkt)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None or eth.ethertype != 0x0800:
        return None
    gw_mac = _gateway_mac(pin, sender, (eth.dst, eth.src))
    if gw_mac is None:
        return None
    raw_ip = pin.data[14:]
    ihl = (raw_ip[0] & 0x0F) * 4
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=sender.mac, src=gw_mac, ethertype=0x0800))
    seg = pkt.get_protocol(tcp.tcp)
    if ip.proto == 6 and seg is not None:
        if seg.bits & TCP_RST:
            return None  # never answer a RST
        reply.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=6, ttl=64))
        reply.add_protocol(_rst(seg, ip.total_length - ihl - seg.offset * 4))
    else:
        if ip.proto == 1 and len(raw_ip) > ihl and raw_ip[ihl] in ICMP_ERRORS:
            return None
        quoted = bytes(raw_ip[: ihl + 8])
        reply.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1, ttl=64))
        reply.add_protocol(icmp.icmp(type_=3, code=3, data=icmp.dest_unreach(data=quoted)))
    reply.serialize()
    return bytes(reply.data), ofport


def _rst(seg: object, payload: int) -> object:
    """The RST answering TCP segment `seg` carrying `payload` bytes of data."""
    from os_ken.lib.packet import tcp

    assert isinstance(seg, tcp.tcp)
    if seg.bits & TCP_ACK:
        return tcp.tcp(
            src_port=seg.dst_port, dst_port=seg.src_port, seq=seg.ack, ack=0, bits=TCP_RST, window_size=0
        )
    length = payload + (1 if seg.bits & TCP_SYN else 0) + (1 if seg.bits & TCP_FIN else 0)
    return tcp.tcp(
        src_port=seg.dst_port,
        dst_port=seg.src_port,
        seq=0,
        ack=(seg.seq + length) & 0xFFFFFFFF,
        bits=TCP_RST | TCP_ACK,
        window_size=0,
    )


#: the most of a packet an ICMPv6 error quotes: the error must fit the IPv6 minimum MTU (RFC 4443 2.4)
ICMP6_QUOTE = 1280 - 40 - 8  # IPv6 header, ICMPv6 header and its unused word


def _reply6(pin: PacketIn, sender: Port, ofport: int, pkt: object) -> tuple[bytes, int] | None:
    """The IPv6 answer: a RST for TCP (with no extension headers), else ICMPv6 administratively prohibited."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet, tcp

    assert isinstance(pkt, packet.Packet)
    eth, ip = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6)
    if eth is None or ip is None:
        return None
    if ipaddress.IPv6Address(ip.src).is_unspecified or ipaddress.IPv6Address(ip.src).is_multicast:
        return None  # never to the unspecified or a multicast source
    gw_mac = _gateway_mac(pin, sender, (eth.dst, eth.src), 6)
    if gw_mac is None:
        return None
    raw_ip = pin.data[14:]
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=sender.mac, src=gw_mac, ethertype=0x86DD))
    seg = pkt.get_protocol(tcp.tcp)
    if ip.nxt == 6 and seg is not None:
        if seg.bits & TCP_RST:
            return None
        reply.add_protocol(ipv6.ipv6(src=ip.dst, dst=ip.src, nxt=6, hop_limit=64))
        reply.add_protocol(_rst(seg, ip.payload_length - seg.offset * 4))
    else:
        if ip.nxt == 58 and len(raw_ip) > 40 and raw_ip[40] < 128:
            return None  # an ICMPv6 error is never answered with another (RFC 4443 2.4 e)
        reply.add_protocol(ipv6.ipv6(src=ip.dst, dst=ip.src, nxt=58, hop_limit=64))
        reply.add_protocol(
            icmpv6.icmpv6(
                type_=icmpv6.ICMPV6_DST_UNREACH,
                code=1,
                data=bytes(4) + bytes(raw_ip[:ICMP6_QUOTE]),  # 4 unused bytes, then the packet
            )
        )
    reply.serialize()
    return bytes(reply.data), ofport
