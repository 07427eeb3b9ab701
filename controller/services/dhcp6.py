"""The DHCPv6 responder (RFC 8415): answers the DHCPv6 requests apps/dhcp.py sends to the controller,
out the asking VM's port (packet-out), as the port's subnets say (topology/ipv6.py dhcpv6_mode):

- dhcpv6-stateful (or a v6 subnet with DHCP enabled and no modes, as Neutron's dnsmasq answers it): SOLICIT
  -> ADVERTISE, REQUEST / RENEW / REBIND -> REPLY, with an IA_NA holding the port's address on the subnet
  (T1 = lease/2, T2 = lease*4/5, preferred = valid = lease); CONFIRM, RELEASE, DECLINE -> REPLY (status
  success: the address is the port's whatever happens);
- dhcpv6-stateless: INFORMATION-REQUEST -> REPLY with the options only (no address: SLAAC gives it);
- options: DNS recursive name servers (23: the subnet's IPv6 dns_servers), the client's DUID echoed, the
  server's DUID (DUID-LL of the server MAC).

Who gets an answer: as for DHCPv4 (controller/services/dhcp.py), the packet's source port must be plugged on
the asking chassis with the packet's source MAC. A REQUEST / RENEW naming another server's DUID gets nothing.
The server's MAC is the router interface's where a router holds the subnet's gateway, else SERVER_MAC; its
address is the MAC's link-local one.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr
from os_ken.lib.packet import dhcp6, ethernet, packet, udp
from os_ken.lib.packet import ipv6 as ipv6_pkt

from apps.dhcp import dhcpv6_addresses
from apps.view import View
from controller.services.dhcp import DEFAULT_LEASE_S, Responder, server_identity
from controller.services.host import PacketIn
from topology import ipv6

log = logging.getLogger(__name__)

OPT_DNS_SERVERS = 23
STATUS_SUCCESS, STATUS_NO_ADDRS = 0, 2
NAMES = {
    dhcp6.DHCPV6_SOLICIT: "SOLICIT",
    dhcp6.DHCPV6_ADVERTISE: "ADVERTISE",
    dhcp6.DHCPV6_REQUEST: "REQUEST",
    dhcp6.DHCPV6_CONFIRM: "CONFIRM",
    dhcp6.DHCPV6_RENEW: "RENEW",
    dhcp6.DHCPV6_REBIND: "REBIND",
    dhcp6.DHCPV6_REPLY: "REPLY",
    dhcp6.DHCPV6_RELEASE: "RELEASE",
    dhcp6.DHCPV6_DECLINE: "DECLINE",
    dhcp6.DHCPV6_INFORMATION_REQUEST: "INFORMATION-REQUEST",
}
_STATEFUL_ASKS = (dhcp6.DHCPV6_SOLICIT, dhcp6.DHCPV6_REQUEST, dhcp6.DHCPV6_RENEW, dhcp6.DHCPV6_REBIND)
_ACKS = (dhcp6.DHCPV6_CONFIRM, dhcp6.DHCPV6_RELEASE, dhcp6.DHCPV6_DECLINE)


def duid_ll(mac: str) -> bytes:
    """DUID-LL (type 3) of an Ethernet MAC (hardware type 1)."""
    return struct.pack("!HH", 3, 1) + netaddr.EUI(mac).packed


def _opt(code: int, data: bytes) -> Any:
    return dhcp6.option(code, data, len(data))


@dataclass(frozen=True)
class Reply6:
    data: bytes
    ofport: int
    message_type: int
    port_id: str


@dataclass
class Responder6:
    lease_s: int = DEFAULT_LEASE_S
    send: Callable[[int, bytes, int], Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def __call__(self, pin: PacketIn) -> None:
        reply = self.answer(pin.view, pin.chassis_id, pin.match, pin.data)
        if reply is not None and self.send is not None:
            self.send(pin.datapath_id, reply.data, reply.ofport)

    def answer(self, view: View, chassis_id: str, match: dict[str, Any], data: bytes) -> Reply6 | None:
        """The reply to one DHCPv6 packet from a port of `chassis_id` (None: no answer)."""
        try:
            pkt = packet.Packet(data)
            eth = pkt.get_protocol(ethernet.ethernet)
            ip6 = pkt.get_protocol(ipv6_pkt.ipv6)
            u = pkt.get_protocol(udp.udp)
            req = pkt.get_protocol(dhcp6.dhcp6)
            if req is None and u is not None:  # os-ken parses DHCPv6 by port; take the payload as one
                req = dhcp6.dhcp6.parser(bytes(pkt.protocols[-1]))[0]
        except Exception:  # noqa: BLE001 - a packet os-ken cannot parse gets no answer
            self._count("unparsable")
            return None
        if eth is None or ip6 is None or req is None:
            self._count("not_a_request")
            return None
        port = Responder._port(view, chassis_id, match, eth.src)
        ofport = view.local_ofport(chassis_id, port) if port is not None else None
        if port is None or ofport is None:
            self._count("unknown_port")
            return None
        got = dhcpv6_addresses(view, port)
        if not got:
            self._count("no_dhcp")
            return None
        kind = req.msg_type
        self._count(NAMES.get(kind, f"type{kind}"))
        opts = {o.code: bytes(o.data) for o in (req.options.option_list if req.options else [])}
        client_id = opts.get(dhcp6.DHCPV6_OPTION_CLIENTID)
        stateful = [(s, ip) for s, ip in got if ipv6.dhcpv6_mode(s) == ipv6.STATEFUL]
        subnet = (stateful or got)[0][0]
        _server_ip, server_mac = server_identity(view, subnet)
        server_duid = duid_ll(server_mac)
        asked_server = opts.get(dhcp6.DHCPV6_OPTION_SERVERID)
        if client_id is None or (asked_server is not None and asked_server != server_duid):
            return None  # no client DUID, or the client chose another server
        out: list[Any] = [
            _opt(dhcp6.DHCPV6_OPTION_CLIENTID, client_id),
            _opt(dhcp6.DHCPV6_OPTION_SERVERID, server_duid),
        ]
        if kind in _STATEFUL_ASKS:
            if not stateful:
                return None  # a stateless subnet hands out no addresses: no answer (the RA says so)
            ia = opts.get(dhcp6.DHCPV6_OPTION_IA_NA)
            if ia is None or len(ia) < 12:
                return None
            reply_type = dhcp6.DHCPV6_ADVERTISE if kind == dhcp6.DHCPV6_SOLICIT else dhcp6.DHCPV6_REPLY
            lease = self.lease_s
            addrs = b"".join(
                struct.pack(
                    "!HH16sII", dhcp6.DHCPV6_OPTION_IAADDR, 24, netaddr.IPAddress(ip).packed, lease, lease
                )
                for _s, ip in stateful
            )
            out.append(
                _opt(
                    dhcp6.DHCPV6_OPTION_IA_NA, ia[:4] + struct.pack("!II", lease // 2, lease * 4 // 5) + addrs
                )
            )
        elif kind == dhcp6.DHCPV6_INFORMATION_REQUEST or kind in _ACKS:
            reply_type = dhcp6.DHCPV6_REPLY
            if kind in _ACKS:
                out.append(_opt(dhcp6.DHCPV6_OPTION_STATUS_CODE, struct.pack("!H", STATUS_SUCCESS)))
        else:
            return None
        dns = [d for s, _ip in got for d in s.dns_servers if netaddr.IPAddress(d).version == 6]
        if dns:
            out.append(
                _opt(OPT_DNS_SERVERS, b"".join(netaddr.IPAddress(d).packed for d in dict.fromkeys(dns)))
            )
        msg = dhcp6.dhcp6(reply_type, dhcp6.options(out), transaction_id=req.transaction_id)
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(port.mac, server_mac, 0x86DD))
        reply.add_protocol(ipv6_pkt.ipv6(src=ipv6.link_local(server_mac), dst=ip6.src, nxt=17, hop_limit=255))
        reply.add_protocol(udp.udp(src_port=547, dst_port=546))
        reply.add_protocol(msg)
        reply.serialize()
        self._count("sent_" + NAMES[reply_type])
        log.debug("chassis %s: DHCPv6 %s to port %s", chassis_id, NAMES[reply_type], port.id)
        return Reply6(bytes(reply.data), ofport, reply_type, port.id)


def by_protocol(
    v4: Callable[[PacketIn], None], rs: Callable[[PacketIn], None], v6: Callable[[PacketIn], None]
) -> Callable[[PacketIn], None]:
    """The dhcp app's packet-in handler: DHCPv4, router solicitations and DHCPv6 share its flows' cookie."""

    def handle(pin: PacketIn) -> None:
        data = pin.data
        if len(data) > 20 and data[12:14] == b"\x86\xdd":
            (rs if data[20] == 58 else v6)(pin)
        else:
            v4(pin)

    return handle
