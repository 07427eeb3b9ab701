"""The DHCPv4 responder: answers the DHCP requests apps/dhcp.py sends to the controller (packet-in), out the
asking VM's port (packet-out: no pipeline, so security groups need no rule for the answer).

Who gets an answer: the packet's source port (SRC_PORT, reg6, or else its in_port) must be plugged on the
chassis that asked, with the packet's source MAC (and DHCP chaddr) as its MAC, and an IPv4 address on a
subnet with DHCP enabled. Anyone else gets nothing.

DISCOVER -> OFFER, REQUEST -> ACK (NAK if it asks for another address; nothing if it chose another server),
INFORM -> ACK without lease, DECLINE / RELEASE -> nothing (the address is the port's whatever happens).

Options served: 1 subnet mask, 3 router (the subnet's gateway_ip, if any), 6 DNS servers (the subnet's
dns_servers, if any), 26 interface MTU (the network's MTU: 1450 over VXLAN), 28 broadcast address,
51 lease time (config dhcp_lease_s), 58/59 renewal (T1 = lease/2) / rebinding (T2 = lease*7/8),
54 server identifier, 121 classless static routes (the subnet's host_routes, plus the default route via
the gateway: a client that gets option 121 ignores option 3, RFC 3442), 12 host name (the port's
display name, if it is a valid host name).

The server: its address (option 54, the reply's source IP) is the subnet's gateway_ip, or SERVER_ID_NO_GATEWAY
on a subnet without one; its MAC is the router interface's MAC where a router holds the gateway address, else
SERVER_MAC. A renewing client unicasts to the server identifier: that request is the port's DHCP traffic
all the same (apps/dhcp.py matches the source, not the destination) and reaches the controller too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr
from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from apps.dhcp import dhcp_address
from apps.view import View
from controller.services.host import PacketIn
from flows.pipeline import SRC_PORT
from topology.records import OWNER_ROUTER_INTERFACE, Port, Subnet

log = logging.getLogger(__name__)

#: the server's MAC where no router interface holds the subnet's gateway address (locally administered)
SERVER_MAC = "02:00:00:d4:c0:01"
#: the server identifier on a subnet without a gateway_ip (link-local: never a tenant's address)
SERVER_ID_NO_GATEWAY = "169.254.0.1"
DEFAULT_LEASE_S = 43200
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
BROADCAST_IP = "255.255.255.255"
_BROADCAST_FLAG = 0x8000
# option tags os-ken does not name
OPT_HOST_NAME, OPT_BROADCAST, OPT_MTU, OPT_CLASSLESS_ROUTES = 12, 28, 26, 121
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

MESSAGE_NAMES = {
    dhcp.DHCP_DISCOVER: "DISCOVER",
    dhcp.DHCP_OFFER: "OFFER",
    dhcp.DHCP_REQUEST: "REQUEST",
    4: "DECLINE",
    dhcp.DHCP_ACK: "ACK",
    6: "NAK",
    7: "RELEASE",
    8: "INFORM",
}
DHCP_DECLINE, DHCP_NAK, DHCP_RELEASE, DHCP_INFORM = 4, 6, 7, 8


@dataclass(frozen=True)
class Reply:
    """An answer to send: its bytes, out which ofport, and what it is (for logs and tests)."""

    data: bytes
    ofport: int
    message_type: int
    port_id: str


def _ip_bytes(ip: str) -> bytes:
    return netaddr.IPAddress(ip).packed


def classless_routes(routes: list[tuple[str, str]]) -> bytes:
    """RFC 3442 option 121 value: per route the prefix length, the significant octets of the destination,
    the router."""
    out = bytearray()
    for dest, nexthop in routes:
        net = netaddr.IPNetwork(dest)
        width = net.prefixlen
        out.append(width)
        out += net.network.packed[: (width + 7) // 8]
        out += _ip_bytes(nexthop)
    return bytes(out)


def server_identity(view: View, subnet: Subnet) -> tuple[str, str]:
    """(server identifier, server MAC) for a subnet; see the module docstring."""
    if not subnet.gateway_ip:
        return SERVER_ID_NO_GATEWAY, SERVER_MAC
    for p in view.topo.ports_of(subnet.network_id):
        if p.device_owner == OWNER_ROUTER_INTERFACE and any(
            ip == subnet.gateway_ip for _s, ip in p.fixed_ips
        ):
            return subnet.gateway_ip, p.mac
    return subnet.gateway_ip, SERVER_MAC


@dataclass
class Responder:
    """Answers DHCP packet-ins (a Dataplane.packet_in_apps handler); `send` is Dataplane.packet_out."""

    lease_s: int = DEFAULT_LEASE_S
    send: Callable[[int, bytes, int], Any] | None = None
    #: what happened, by message type or reason: for tests and logs
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, pin: PacketIn) -> None:
        reply = self.answer(pin.view, pin.chassis_id, pin.match, pin.data)
        if reply is None or self.send is None:
            return
        self.send(pin.datapath_id, reply.data, reply.ofport)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # --------------------------------------------------------------------------------------------------

    def answer(self, view: View, chassis_id: str, match: dict[str, Any], data: bytes) -> Reply | None:
        """The reply to one DHCP packet from a port of `chassis_id` (None: no answer). Pure but for counts."""
        try:
            pkt = packet.Packet(data)
        except Exception:  # noqa: BLE001 - a packet os-ken cannot parse gets no answer
            self._count("unparsable")
            return None
        eth = pkt.get_protocol(ethernet.ethernet)
        req = pkt.get_protocol(dhcp.dhcp)
        if eth is None or req is None or req.op != dhcp.DHCP_BOOT_REQUEST:
            self._count("not_a_request")
            return None
        port = self._port(view, chassis_id, match, eth.src)
        if port is None or req.chaddr.lower() != port.mac.lower():
            self._count("unknown_port")
            log.debug(
                "chassis %s: DHCP from %s (in_port %s): no port of ours, no answer",
                chassis_id,
                eth.src,
                match.get("in_port"),
            )
            return None
        got = dhcp_address(view, port)
        ofport = view.local_ofport(chassis_id, port)
        if got is None or ofport is None:
            self._count("no_dhcp")
            return None
        subnet, ip = got
        mtype = _option(req, dhcp.DHCP_MESSAGE_TYPE_OPT)
        kind = mtype[0] if mtype else 0
        self._count(MESSAGE_NAMES.get(kind, f"type{kind}"))
        server_id, server_mac = server_identity(view, subnet)
        if kind == dhcp.DHCP_DISCOVER:
            reply_type = dhcp.DHCP_OFFER
        elif kind == dhcp.DHCP_REQUEST:
            chosen = _option(req, dhcp.DHCP_SERVER_IDENTIFIER_OPT)
            if chosen and chosen != _ip_bytes(server_id):
                return None  # the client took another server's offer
            requested = _option(req, dhcp.DHCP_REQUESTED_IP_ADDR_OPT)
            wanted = (
                str(netaddr.IPAddress(int.from_bytes(requested, "big")))
                if requested and len(requested) == 4
                else req.ciaddr
            )
            reply_type = dhcp.DHCP_ACK if wanted == ip else DHCP_NAK
        elif kind == DHCP_INFORM:
            reply_type = dhcp.DHCP_ACK
        else:  # DECLINE, RELEASE, anything else: nothing to say
            log.info("chassis %s: DHCP %s from port %s", chassis_id, MESSAGE_NAMES.get(kind, kind), port.id)
            return None
        data_out = self._build(view, port, subnet, ip, req, reply_type, kind, server_id, server_mac)
        self._count("sent_" + MESSAGE_NAMES[reply_type])
        log.debug("chassis %s: DHCP %s to port %s (%s)", chassis_id, MESSAGE_NAMES[reply_type], port.id, ip)
        return Reply(data_out, ofport, reply_type, port.id)

    @staticmethod
    def _port(view: View, chassis_id: str, match: dict[str, Any], mac: str) -> Port | None:
        """The logical port the packet came from: by SRC_PORT key (else in_port), and it must own `mac`."""
        key = match.get(SRC_PORT.field)
        in_port = match.get("in_port")
        for pid in sorted(view.rt(chassis_id).vifs):  # plugged here: O(VIFs), not O(ports bound here)
            port = view.topo.ports.get(pid)
            ofport = None if port is None else view.local_ofport(chassis_id, port)
            if port is None or ofport is None:
                continue
            if (key and port.key == key) or (not key and in_port is not None and ofport == in_port):
                if in_port is not None and ofport != in_port:
                    return None
                return port if port.mac.lower() == mac.lower() else None
        return None

    def _build(
        self,
        view: View,
        port: Port,
        subnet: Subnet,
        ip: str,
        req: Any,
        reply_type: int,
        kind: int,
        server_id: str,
        server_mac: str,
    ) -> bytes:
        net = netaddr.IPNetwork(subnet.cidr)
        opts: list[tuple[int, bytes]] = [
            (dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([reply_type])),
            (dhcp.DHCP_SERVER_IDENTIFIER_OPT, _ip_bytes(server_id)),
        ]
        if reply_type != DHCP_NAK:
            opts.append((dhcp.DHCP_SUBNET_MASK_OPT, net.netmask.packed))
            opts.append(
                (OPT_BROADCAST, net.broadcast.packed if net.broadcast is not None else net.network.packed)
            )
            if subnet.gateway_ip:
                opts.append((dhcp.DHCP_GATEWAY_ADDR_OPT, _ip_bytes(subnet.gateway_ip)))
            if subnet.dns_servers:
                opts.append(
                    (dhcp.DHCP_DNS_SERVER_ADDR_OPT, b"".join(_ip_bytes(d) for d in subnet.dns_servers))
                )
            mtu = view.topo.networks[port.network_id].mtu
            if mtu:
                opts.append((OPT_MTU, mtu.to_bytes(2, "big")))
            routes = [(d, n) for d, n in subnet.host_routes if netaddr.IPNetwork(d).version == 4]
            if routes:
                if subnet.gateway_ip and not any(netaddr.IPNetwork(d).prefixlen == 0 for d, _n in routes):
                    routes.append(("0.0.0.0/0", subnet.gateway_ip))
                opts.append((OPT_CLASSLESS_ROUTES, classless_routes(routes)))
            if _HOSTNAME.match(port.display_name or ""):
                opts.append((OPT_HOST_NAME, port.display_name.encode()))
            if kind != DHCP_INFORM:  # an INFORM's client has its address: no lease (RFC 2131 3.4)
                lease = self.lease_s
                opts += [
                    (dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT, lease.to_bytes(4, "big")),
                    (dhcp.DHCP_RENEWAL_TIME_OPT, (lease // 2).to_bytes(4, "big")),
                    (dhcp.DHCP_REBINDING_TIME_OPT, (lease * 7 // 8).to_bytes(4, "big")),
                ]
        # where it goes (RFC 2131 4.1): a configured client (ciaddr) by unicast; a NAK, or a client that
        # asked for broadcast, to everyone (on its own port); else to the offered address and its MAC
        if reply_type == DHCP_NAK or (req.ciaddr == "0.0.0.0" and req.flags & _BROADCAST_FLAG):
            ip_dst, eth_dst = BROADCAST_IP, BROADCAST_MAC
        elif req.ciaddr != "0.0.0.0":
            ip_dst, eth_dst = req.ciaddr, port.mac
        else:
            ip_dst, eth_dst = ip, port.mac
        yiaddr = ip if reply_type != DHCP_NAK and kind != DHCP_INFORM else "0.0.0.0"
        reply = dhcp.dhcp(
            op=dhcp.DHCP_BOOT_REPLY,
            chaddr=port.mac,
            xid=req.xid,
            flags=req.flags,
            ciaddr=req.ciaddr if kind == DHCP_INFORM else "0.0.0.0",
            yiaddr=yiaddr,
            siaddr=server_id if reply_type != DHCP_NAK else "0.0.0.0",
            giaddr=req.giaddr,
            hlen=6,
            options=dhcp.options([dhcp.option(tag, value) for tag, value in opts]),
        )
        out = packet.Packet()
        out.add_protocol(ethernet.ethernet(eth_dst, server_mac, 0x0800))
        out.add_protocol(ipv4.ipv4(src=server_id, dst=ip_dst, proto=17, ttl=64))
        out.add_protocol(udp.udp(src_port=67, dst_port=68))
        out.add_protocol(reply)
        out.serialize()
        return bytes(out.data)


def _option(req: Any, tag: int) -> bytes | None:
    """The value of option `tag` in a parsed request, or None."""
    if req.options is None:
        return None
    for opt in req.options.option_list:
        if opt.tag == tag:
            return bytes(opt.value)
    return None
