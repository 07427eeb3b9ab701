"""Namespaces and links through pyroute2 (netlink), so the lab does not parse `ip` output."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = "/run/netns"


@contextmanager
def rtnl(namespace: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink socket in `namespace` (root namespace when None)."""
    sock = IPRoute() if namespace is None else NetNS(namespace)
    try:
        yield sock
    finally:
        sock.close()


def netns_exists(name: str) -> bool:
    """True when /run/netns/NAME exists."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create_netns(name: str) -> None:
    """Create a named network namespace with its loopback up."""
    pr_netns.create(name)
    with rtnl(name) as ns:
        ns.link("set", index=_index(ns, "lo"), state="up")


def remove_netns(name: str) -> None:
    """Remove a named namespace if it exists (kill its processes first, or it lives on hidden)."""
    if netns_exists(name):
        pr_netns.remove(name)


def list_netns() -> list[str]:
    """Names of all namespaces under /run/netns."""
    return sorted(pr_netns.listnetns()) if os.path.isdir(NETNS_DIR) else []


def _index(sock: IPRoute, ifname: str) -> int:
    found = sock.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no link named {ifname}")
    return int(found[0])


def link_exists(ifname: str, namespace: str | None = None) -> bool:
    """True when `ifname` exists in `namespace`."""
    with rtnl(namespace) as sock:
        return bool(sock.link_lookup(ifname=ifname))


def list_links(namespace: str | None = None) -> list[str]:
    """Names of all links in `namespace`."""
    with rtnl(namespace) as sock:
        return [str(link.get("ifname")) for link in sock.get_links()]


def add_bridge(ifname: str, mtu: int = 1500) -> None:
    """Create a Linux bridge in the root namespace and bring it up.

    The host sets net.bridge.bridge-nf-call-iptables=1: without opting out per bridge, bridged lab traffic
    would cross the root namespace's iptables FORWARD chain (e.g. Docker's DROP policy).
    """
    with rtnl() as ip:
        ip.link(
            "add",
            ifname=ifname,
            kind="bridge",
            br_nf_call_iptables=0,
            br_nf_call_ip6tables=0,
            br_nf_call_arptables=0,
        )
        ip.link("set", index=_index(ip, ifname), mtu=mtu, state="up")


def add_veth(
    ifname: str,
    peer: str,
    namespace: str | None = None,
    peer_namespace: str | None = None,
    mtu: int = 1500,
    master: str | None = None,
    peer_mac: str | None = None,
) -> None:
    """Create a veth pair with `ifname` in `namespace` and `peer` directly in `peer_namespace`, both up.

    Creating the peer straight in its namespace avoids name clashes in the root namespace (e.g. eth0).
    `master` enslaves `ifname` to a bridge in its own namespace.
    """
    peer_spec: dict[str, object] = {"ifname": peer}
    if peer_namespace is not None and peer_namespace != namespace:
        peer_spec["net_ns_fd"] = peer_namespace
    with rtnl(namespace) as sock:
        sock.link("add", ifname=ifname, kind="veth", peer=peer_spec)
        attrs: dict[str, object] = {"mtu": mtu, "state": "up"}
        if master is not None:
            attrs["master"] = _index(sock, master)
        sock.link("set", index=_index(sock, ifname), **attrs)
        if peer_namespace is None or peer_namespace == namespace:
            set_link(peer, namespace, mtu=mtu, mac=peer_mac)
    if peer_namespace is not None and peer_namespace != namespace:
        set_link(peer, peer_namespace, mtu=mtu, mac=peer_mac)


def set_link(
    ifname: str, namespace: str | None = None, mtu: int | None = None, mac: str | None = None, up: bool = True
) -> None:
    """Set MTU / MAC of a link and bring it up (or down)."""
    attrs: dict[str, object] = {"state": "up" if up else "down"}
    if mtu is not None:
        attrs["mtu"] = mtu
    if mac is not None:
        attrs["address"] = mac
    with rtnl(namespace) as sock:
        sock.link("set", index=_index(sock, ifname), **attrs)


def add_address(ifname: str, cidr: str, namespace: str | None = None) -> None:
    """Add an IPv4/IPv6 address given as ADDR/PREFIXLEN."""
    address, prefixlen = cidr.split("/")
    with rtnl(namespace) as sock:
        sock.addr("add", index=_index(sock, ifname), address=address, prefixlen=int(prefixlen))


def add_default_route(gateway: str, namespace: str | None = None) -> None:
    """Add a default route via `gateway`."""
    with rtnl(namespace) as sock:
        sock.route("add", dst="default", gateway=gateway)


def delete_link(ifname: str, namespace: str | None = None) -> bool:
    """Delete a link if present; return whether it existed."""
    with rtnl(namespace) as sock:
        found = sock.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            sock.link("del", index=found[0])
        except NetlinkError as e:
            if e.code != errno.ENODEV:  # its veth peer went first
                raise
        return True


def root_addresses() -> list[str]:
    """IPv4 addresses with prefix length in the root namespace, as ADDR/LEN."""
    with rtnl() as ip:
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ip.get_addr(family=2)]
