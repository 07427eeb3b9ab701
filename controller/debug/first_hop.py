"""What a VM does before its packet reaches the switch: pick a route and the next hop's MAC.

A VM with an address on a subnet sends to an on-link destination directly, to anything else through a
host route of its subnets (DHCP option 121) or its default gateway (the subnet's gateway_ip, held by a
router interface or by whichever port has that address). The next hop's MAC is what ARP would answer:
the port of that network holding the address. trace and explain build the packet a real VM would send
from this, so that they follow the same path as the VM's packets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import netaddr

from topology.model import Topology
from topology.records import Port, Subnet


@dataclass(frozen=True)
class Route:
    """How `port` sends to an address: `next_hop` is the destination itself (on-link) or a gateway."""

    port: Port
    next_hop: str
    via: str  # "on-link", "host route 10.9.0.0/16 via 10.1.0.5", "default gateway 10.1.0.1"
    holder: Port | None  # the port holding next_hop on port's network (None: ARP for it is unanswered)

    @property
    def on_link(self) -> bool:
        return self.via == "on-link"

    @property
    def mac(self) -> str | None:
        return self.holder.mac if self.holder is not None else None

    def describe(self) -> str:
        who = (
            f"ports/{self.holder.id} ({self.holder.mac})"
            if self.holder is not None
            else "nobody (ARP for it is not answered)"
        )
        if self.on_link:
            return f"{self.next_hop} is on-link for ports/{self.port.id}: eth_dst = {who}"
        return f"ports/{self.port.id} sends it to its {self.via}: eth_dst = {who}"


def ipv4_subnets(topo: Topology, port: Port, version: int = 4) -> list[tuple[Subnet, str]]:
    """(subnet, address) of the port's fixed IPs of the family (IPv4 unless `version` is 6)."""
    out = []
    for sid, ip in port.fixed_ips:
        sub = topo.subnets.get(sid)
        if sub is not None and sub.ip_version == version and netaddr.IPAddress(ip).version == version:
            out.append((sub, ip))
    return out


def holder(topo: Topology, network_id: str, ip: str) -> Port | None:
    """The port of the network that answers ARP (or neighbour discovery) for `ip`: its fixed IP (or its
    EUI-64 link-local address), else an allowed address pair that names exactly that address."""
    a = netaddr.IPAddress(ip)
    if a.version == 6 and a.is_link_local():  # a port's EUI-64 link-local address (what ND answers for)
        return next(
            (
                p
                for p in topo.ports_of(network_id)
                if p.mac
                and any(":" in f for _, f in p.fixed_ips)
                and netaddr.EUI(p.mac).ipv6_link_local() == a
            ),
            None,
        )
    n = int(a)
    for sub in topo.subnets_of(network_id):
        pid = topo.ip_owner.get(sub.id, {}).get(n)
        if pid is not None and pid in topo.ports:
            return topo.ports[pid]
    for p in topo.ports_of(network_id):
        if any("/" not in addr and addr == ip for addr, _mac in p.allowed_address_pairs):
            return p
    return None


def host_ports(topo: Topology, port: Port) -> list[Port]:
    """The ports of the VM `port` belongs to (same device_id, not a router's or a service's), `port`
    first: a VM with a port on each of two networks can forward between them."""
    if not port.device_id or port.device_owner.startswith("network:"):
        return [port]
    others = sorted(
        (
            p
            for p in topo.ports.values()
            if p.device_id == port.device_id
            and p.id != port.id
            and p.tenant == port.tenant
            and not p.device_owner.startswith("network:")
        ),
        key=lambda p: (p.create_time, p.id),
    )
    return [port, *others]


def route(topo: Topology, ports: Sequence[Port], dst_ip: str) -> Route | None:
    """The route a VM with `ports` (its primary port first) takes to `dst_ip`, as Linux would with the
    addresses, host routes and default gateway DHCP gives it; None when it has no route at all. For an
    IPv6 destination: the IPv6 subnets, and the subnet's gateway address as default route (what a VM
    configured statically uses; the router's link-local address a router advertisement gives has the same
    MAC: the interface's)."""
    ip = netaddr.IPAddress(dst_ip)
    v = ip.version
    if v == 6 and ip.is_link_local():  # on the link of the VM's first port with an IPv6 address
        for p in ports:
            if ipv4_subnets(topo, p, 6):
                return Route(p, dst_ip, "on-link", holder(topo, p.network_id, dst_ip))
        return None
    best: tuple[int, Route] | None = None
    for p in ports:  # on-link: the longest prefix among the VM's subnets
        for sub, _own in ipv4_subnets(topo, p, v):
            cidr = netaddr.IPNetwork(sub.cidr)
            if ip in cidr and (best is None or cidr.prefixlen > best[0]):
                best = (cidr.prefixlen, Route(p, dst_ip, "on-link", holder(topo, p.network_id, dst_ip)))
    if best is not None:
        return best[1]
    for p in ports:  # host routes of the VM's subnets whose next hop is on-link
        for sub, own in ipv4_subnets(topo, p, v):
            for dest, nexthop in sub.host_routes:
                cidr = netaddr.IPNetwork(dest)
                if (
                    ip in cidr
                    and cidr.version == v
                    and nexthop != own
                    and netaddr.IPAddress(nexthop) in netaddr.IPNetwork(sub.cidr)
                    and (best is None or cidr.prefixlen > best[0])
                ):
                    best = (
                        cidr.prefixlen,
                        Route(
                            p,
                            nexthop,
                            f"host route {cidr} via {nexthop}",
                            holder(topo, p.network_id, nexthop),
                        ),
                    )
    if best is not None:
        return best[1]
    for p in ports:  # the default gateway of the first port that has one (not itself)
        for sub, own in ipv4_subnets(topo, p, v):
            if sub.gateway_ip and sub.gateway_ip != own:
                return Route(
                    p,
                    sub.gateway_ip,
                    f"default gateway {sub.gateway_ip}",
                    holder(topo, p.network_id, sub.gateway_ip),
                )
    return None


def addresses(port: Port, version: int = 4) -> list[netaddr.IPNetwork]:
    """The addresses of the family a port's VM owns: fixed IPs and allowed address pairs (which may be
    prefixes); for IPv6 also its EUI-64 link-local address."""
    out = [netaddr.IPNetwork(ip) for _, ip in port.fixed_ips if netaddr.IPAddress(ip).version == version]
    if version == 6 and out and port.mac:
        out.append(netaddr.IPNetwork(str(netaddr.EUI(port.mac).ipv6_link_local())))
    for addr, _mac in port.allowed_address_pairs:
        net = netaddr.IPNetwork(addr)
        if (
            net.version == version and net.prefixlen > 0
        ):  # 0.0.0.0/0: "may forward anything", not "is anything"
            out.append(net)
    return out


def holds(port: Port, ip: str) -> bool:
    a = netaddr.IPAddress(ip)
    full = 32 if a.version == 4 else 128
    return any(a in net if net.prefixlen < full else a == net.ip for net in addresses(port, a.version))
