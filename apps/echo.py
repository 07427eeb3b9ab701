"""A router's own ICMP echo replies, made in flows from the request (used by l3 and nat).

The reply is a packet the router sends itself, so it leaves with ROUTER_TTL (as Linux answers: 64 seen by an
on-link pinger), whatever the request's TTL was. Made replies are then routed like any packet, and routing
decrements once (l3_lookup, or the gateway chassis after a redirect): they start at ROUTER_TTL + 1. A further
router on the way back decrements as usual.
"""

from __future__ import annotations

from flows.actions import Action, Move, SetField, load
from flows.pipeline import ALLOW_LOOPBACK, FLAGS, NEXT_HOP, NEXT_HOP6

IPV4, IPV6 = 0x0800, 0x86DD
ICMP, ICMPV6 = 1, 58
ECHO_REQUEST, ECHO_REPLY = 8, 0
ECHO6_REQUEST, ECHO6_REPLY = 128, 129
#: the TTL a router's own packets leave with
ROUTER_TTL = 64


def request(address: str) -> dict[str, object]:
    """Match fields (besides metadata) of an ICMP (ICMPv6 for an IPv6 address) echo request to `address`."""
    if ":" in address:
        return {"eth_type": IPV6, "ipv6_dst": address, "ip_proto": ICMPV6, "icmpv6_type": ECHO6_REQUEST}
    return {"eth_type": IPV4, "ipv4_dst": address, "ip_proto": ICMP, "icmpv4_type": ECHO_REQUEST}


def reply(address: str) -> tuple[Action, ...]:
    """Turn an echo request to `address` into its reply from `address`, ready to be routed (NEXT_HOP is scratch).

    ALLOW_LOOPBACK: the reply may leave by the port the request came in by. An IPv6 reply's hop limit is set
    the same way (OVS fixes the ICMPv6 checksum as it rewrites addresses and type)."""
    if ":" in address:
        return (
            Move("ipv6_src", NEXT_HOP6.field, 128),
            SetField("ipv6_src", address),
            Move(NEXT_HOP6.field, "ipv6_dst", 128),
            SetField("icmpv6_type", ECHO6_REPLY),
            SetField("nw_ttl", ROUTER_TTL + 1),
            load(FLAGS.field, 1, ALLOW_LOOPBACK.bit, ALLOW_LOOPBACK.bit),
        )
    return (
        Move("ipv4_src", NEXT_HOP.field, 32),
        SetField("ipv4_src", address),
        Move(NEXT_HOP.field, "ipv4_dst", 32),
        SetField("icmpv4_type", ECHO_REPLY),
        SetField("nw_ttl", ROUTER_TTL + 1),
        load(FLAGS.field, 1, ALLOW_LOOPBACK.bit, ALLOW_LOOPBACK.bit),
    )
