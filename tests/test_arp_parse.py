"""apps.arp's address-to-integer fast paths agree with netaddr's parse (canonical model addresses, and a MAC
spelled otherwise falling back to netaddr); ids.cookie's cache hands out equal values."""

from __future__ import annotations

import netaddr

from apps import ids
from apps.arp import _mac_int, _v4_int


def test_ipv4_and_mac_integers_are_netaddrs() -> None:
    for ip in ("0.0.0.0", "10.0.0.1", "192.168.255.254", "255.255.255.255"):
        assert _v4_int(ip) == int(netaddr.IPAddress(ip))
    for mac in (
        "02:00:00:00:00:01",
        "fa:16:3e:ab:cd:ef",
        "FA:16:3E:AB:CD:EF",
        "fa-16-3e-ab-cd-ef",
        "fa163eabcdef",
    ):
        assert _mac_int(mac) == int(netaddr.EUI(mac)), mac


def test_cached_cookies_are_the_computed_ones() -> None:
    a = ids.cookie(ids.ARP, "port-1")
    assert a == ids.Cookie.for_owner(ids.ARP, "port-1") and ids.cookie(ids.ARP, "port-1") is a
    assert ids.cookie(ids.L2, "port-1") != a
