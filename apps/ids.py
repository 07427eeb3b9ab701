"""App ids (the cookie's app byte) and group-id allocation, in one place."""

from __future__ import annotations

from flows.cookie import Cookie

DEFAULTS = 1
CLASSIFY = 2
L2 = 3
ARP = 4
EGRESS = 5

APP_NAMES = {DEFAULTS: "defaults", CLASSIFY: "classify", L2: "l2", ARP: "arp", EGRESS: "egress"}


def cookie(app: int, owner_id: str) -> Cookie:
    return Cookie.for_owner(app, owner_id)


def flood_all_group(network_key: int) -> int:
    """Replicates to local ports, each remote chassis hosting the network, or the physical uplink."""
    return network_key * 2


def flood_local_group(network_key: int) -> int:
    """Replicates to local ports only: for packets that came in from a tunnel or the physical network."""
    return network_key * 2 + 1
