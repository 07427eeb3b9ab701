"""Port security by behaviour: walk frames from a VM through its chassis's compiled tables and see whether
port_sec_in lets them on (to acl_egress) or drops them."""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps import ids
from apps.compiler import Compiler, desired_from_scratch
from flows.cookie import owner_hash
from flows.flow import Flow
from flows.walker import Result
from tests.test_apps_l2 import World
from topology import ops
from topology.records import Port, Subnet

BCAST = "ff:ff:ff:ff:ff:ff"
OTHER_MAC = "02:00:00:00:00:99"  # nobody's
PAIR_MAC = "02:00:00:00:00:aa"


def world() -> tuple[World, Port, Port]:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(id="a-v6", tenant="alice", network_id="a", cidr="2001:db8::/64"),
            False,
            w.rev + 1,
            0.0,
        )
    )
    vm = w.port("vm", "a", "hv1", "10.0.0.5")
    peer = w.port("peer", "a", "hv1", "10.0.0.6")
    for port in (vm, peer):  # and an IPv6 address each
        update(w, port, fixed_ips=(*port.fixed_ips, ("a-v6", "")))
    return w, w.topo.ports["vm"], w.topo.ports["peer"]


def update(w: World, port: Port, **fields: Any) -> Port:
    w.apply(ops.update_port(w.topo, w.topo.ports[port.id], fields, w.rev + 1, 0.0))
    return w.topo.ports[port.id]


def send(w: World, port: Port, **headers: Any) -> Result:
    return w.switch(port.binding_chassis).walk({"in_port": w.ofport(port), **headers})


def passes(res: Result) -> bool:
    """Port security let the frame on (what later stages do with it is theirs)."""
    stages = res.stages()
    assert "port_sec_in" in stages, res.format()
    return "acl_egress" in stages


def dropped_here(res: Result) -> bool:
    return res.dropped_at == "port_sec_in" and "acl_egress" not in res.stages()


def ipv4(mac: str, src: str, dst_mac: str, dst: str, **extra: Any) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": dst_mac,
        "eth_type": 0x0800,
        "ipv4_src": src,
        "ipv4_dst": dst,
        "ip_proto": 1,
        "icmpv4_type": 8,
        "icmpv4_code": 0,
        **extra,
    }


def udp(mac: str, src: str, dst_mac: str, dst: str, sport: int, dport: int) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": dst_mac,
        "eth_type": 0x0800,
        "ipv4_src": src,
        "ipv4_dst": dst,
        "ip_proto": 17,
        "udp_src": sport,
        "udp_dst": dport,
    }


def arp(mac: str, sha: str, spa: str, tpa: str, op: int = 1) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": BCAST,
        "eth_type": 0x0806,
        "arp_op": op,
        "arp_sha": sha,
        "arp_spa": spa,
        "arp_tpa": tpa,
        "arp_tha": "00:00:00:00:00:00",
    }


def owned(w: World, chassis: str, port: Port) -> set[Flow]:
    """The port-security flows of `port` a chassis wants."""
    return {
        i
        for i in desired_from_scratch(w.topo, w.runtime, chassis)
        if isinstance(i, Flow)
        and i.owner is not None
        and i.owner.app == ids.PORT_SECURITY
        and i.owner.owner == owner_hash(port.id)
    }


def ll(mac: str) -> str:
    return str(netaddr.EUI(mac).ipv6_link_local())


def icmp6(mac: str, src: str, type_: int, dst: str = "ff02::1", **extra: Any) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": "33:33:00:00:00:01",
        "eth_type": 0x86DD,
        "ipv6_src": src,
        "ipv6_dst": dst,
        "ip_proto": 58,
        "icmpv6_type": type_,
        "icmpv6_code": 0,
        **extra,
    }


def v4(port: Port) -> str:
    return next(a for _s, a in port.fixed_ips if netaddr.IPAddress(a).version == 4)


def v6(port: Port) -> str:
    return next(a for _s, a in port.fixed_ips if netaddr.IPAddress(a).version == 6)


# --------------------------------------------------------------------------------------------- IPv4 and ARP


def test_own_mac_and_address_pass_and_reach_the_peer() -> None:
    w, vm, peer = world()
    res = send(w, vm, **ipv4(vm.mac, v4(vm), peer.mac, v4(peer)))
    assert passes(res)
    assert w.ofport(peer) in res.ports or res.dropped_at in ("acl_egress", "acl_ingress"), res.format()
    assert passes(send(w, vm, **arp(vm.mac, vm.mac, v4(vm), v4(peer))))
    assert passes(send(w, vm, **arp(vm.mac, vm.mac, v4(vm), v4(vm), op=2)))  # its own gratuitous ARP
    assert passes(
        send(w, vm, **arp(vm.mac, vm.mac, "0.0.0.0", v4(peer)))
    )  # ARP probe (address conflict check)


def test_spoofed_source_mac_is_dropped() -> None:
    w, vm, peer = world()
    assert dropped_here(send(w, vm, **ipv4(OTHER_MAC, v4(vm), peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(peer.mac, v4(vm), BCAST, v4(peer))))  # another port's MAC
    assert dropped_here(send(w, vm, **arp(OTHER_MAC, OTHER_MAC, v4(vm), v4(peer))))


def test_spoofed_source_ip_is_dropped() -> None:
    w, vm, peer = world()
    for src in (v4(peer), "10.0.0.77", "192.0.2.200", "0.0.0.0"):
        assert dropped_here(send(w, vm, **ipv4(vm.mac, src, peer.mac, v4(peer)))), src


def test_arp_claiming_a_foreign_address_or_mac_is_dropped() -> None:
    w, vm, peer = world()
    for op in (1, 2):  # gratuitous ARP request and reply claiming the peer's address
        assert dropped_here(send(w, vm, **arp(vm.mac, vm.mac, v4(peer), v4(peer), op=op)))
    assert dropped_here(send(w, vm, **arp(vm.mac, OTHER_MAC, v4(vm), v4(peer))))  # sha not the frame's MAC
    assert dropped_here(send(w, vm, **arp(vm.mac, peer.mac, v4(vm), v4(peer))))
    assert dropped_here(send(w, vm, **arp(vm.mac, vm.mac, "0.0.0.0", v4(peer), op=2)))  # a probe is a request


def test_frames_that_are_neither_ip_nor_arp_or_are_tagged_are_dropped() -> None:
    w, vm, peer = world()
    tagged = {"vlan_vid": 0x1000 | 42}  # own addresses, but an 802.1Q tag
    assert dropped_here(send(w, vm, **ipv4(vm.mac, v4(vm), peer.mac, v4(peer)), **tagged))
    assert dropped_here(send(w, vm, **arp(vm.mac, vm.mac, v4(vm), v4(peer)), **tagged))
    assert dropped_here(send(w, vm, **icmp6(vm.mac, ll(vm.mac), 136, ipv6_nd_target=ll(vm.mac)), **tagged))
    assert dropped_here(send(w, vm, eth_src=vm.mac, eth_dst=peer.mac, eth_type=0x88CC))  # LLDP
    assert dropped_here(send(w, vm, eth_src=vm.mac, eth_dst=peer.mac))  # no EtherType at all


def test_dhcp_client_from_nowhere_passes_but_a_vm_never_serves_dhcp() -> None:
    w, vm, peer = world()
    assert passes(send(w, vm, **udp(vm.mac, "0.0.0.0", BCAST, "255.255.255.255", 68, 67)))  # discover
    assert passes(send(w, vm, **udp(vm.mac, v4(vm), BCAST, "255.255.255.255", 68, 67)))  # renewing
    assert dropped_here(send(w, vm, **udp(OTHER_MAC, "0.0.0.0", BCAST, "255.255.255.255", 68, 67)))
    assert dropped_here(send(w, vm, **udp(vm.mac, "0.0.0.0", BCAST, "255.255.255.255", 5000, 67)))
    # an offer / ack from the VM, with its own (valid) addresses, broadcast or to the peer
    assert dropped_here(send(w, vm, **udp(vm.mac, v4(vm), BCAST, "255.255.255.255", 67, 68)))
    assert dropped_here(send(w, vm, **udp(vm.mac, v4(vm), peer.mac, v4(peer), 67, 68)))
    # ordinary UDP from its own address passes
    assert passes(send(w, vm, **udp(vm.mac, v4(vm), peer.mac, v4(peer), 40000, 53)))


# ---------------------------------------------------------------------------------------------------- IPv6


def test_ipv6_own_addresses_pass_others_and_router_roles_drop() -> None:
    w, vm, peer = world()
    six = {
        "eth_dst": peer.mac,
        "eth_type": 0x86DD,
        "ipv6_dst": v6(peer),
        "ip_proto": 17,
        "udp_src": 4000,
        "udp_dst": 53,
    }
    assert passes(send(w, vm, eth_src=vm.mac, ipv6_src=v6(vm), **six))
    assert passes(send(w, vm, eth_src=vm.mac, ipv6_src=ll(vm.mac), **six))
    assert dropped_here(send(w, vm, eth_src=vm.mac, ipv6_src=v6(peer), **six))
    assert dropped_here(send(w, vm, eth_src=vm.mac, ipv6_src=ll(peer.mac), **six))
    assert dropped_here(send(w, vm, eth_src=OTHER_MAC, ipv6_src=ll(OTHER_MAC), **six))
    # duplicate address detection from :: (solicitation, MLD report); nothing else from ::
    assert passes(send(w, vm, **icmp6(vm.mac, "::", 135, "ff02::1:ff00:5", ipv6_nd_target=v6(vm))))
    assert dropped_here(send(w, vm, **icmp6(vm.mac, "::", 128)))
    # neighbour advertisements only for its own addresses
    for target in (v6(vm), ll(vm.mac)):
        assert passes(send(w, vm, **icmp6(vm.mac, ll(vm.mac), 136, ipv6_nd_target=target))), target
    for target in (v6(peer), ll(peer.mac), "2001:db8::1"):
        assert dropped_here(send(w, vm, **icmp6(vm.mac, ll(vm.mac), 136, ipv6_nd_target=target))), target
    # a VM is no router and no DHCPv6 server
    assert dropped_here(send(w, vm, **icmp6(vm.mac, ll(vm.mac), 134)))
    assert dropped_here(send(w, vm, **icmp6(vm.mac, ll(vm.mac), 137, v6(peer))))
    assert dropped_here(
        send(w, vm, eth_src=vm.mac, ipv6_src=ll(vm.mac), **{**six, "udp_src": 547, "udp_dst": 546})
    )


# ------------------------------------------------------------------------------------- allowed address pairs


def test_allowed_pairs_pass_with_their_mac_only() -> None:
    w, vm, peer = world()
    vm = update(
        w,
        vm,
        allowed_address_pairs=(("10.0.0.100", PAIR_MAC), ("10.0.1.0/24", ""), ("2001:db8:1::/64", PAIR_MAC)),
    )
    assert vm.allowed_address_pairs[1] == ("10.0.1.0/24", vm.mac)  # no MAC given: the port's
    # a pair address with the pair's MAC: IP and ARP (a VRRP-style virtual address taking over)
    assert passes(send(w, vm, **ipv4(PAIR_MAC, "10.0.0.100", peer.mac, v4(peer))))
    assert passes(send(w, vm, **arp(PAIR_MAC, PAIR_MAC, "10.0.0.100", "10.0.0.100", op=2)))
    assert dropped_here(send(w, vm, **ipv4(vm.mac, "10.0.0.100", peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(PAIR_MAC, v4(vm), peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **arp(PAIR_MAC, vm.mac, "10.0.0.100", v4(peer))))
    # a CIDR pair with the port's own MAC
    assert passes(send(w, vm, **ipv4(vm.mac, "10.0.1.77", peer.mac, v4(peer))))
    assert passes(send(w, vm, **arp(vm.mac, vm.mac, "10.0.1.200", v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(vm.mac, "10.0.2.1", peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(PAIR_MAC, "10.0.1.77", peer.mac, v4(peer))))
    # the pair MAC's own addresses: its link-local and its IPv6 CIDR, NAs for them
    six = {
        "eth_dst": peer.mac,
        "eth_type": 0x86DD,
        "ipv6_dst": v6(peer),
        "ip_proto": 17,
        "udp_src": 4000,
        "udp_dst": 53,
    }
    assert passes(send(w, vm, eth_src=PAIR_MAC, ipv6_src="2001:db8:1::42", **six))
    assert passes(send(w, vm, eth_src=PAIR_MAC, ipv6_src=ll(PAIR_MAC), **six))
    assert dropped_here(send(w, vm, eth_src=vm.mac, ipv6_src="2001:db8:1::42", **six))
    assert passes(send(w, vm, **icmp6(PAIR_MAC, ll(PAIR_MAC), 136, ipv6_nd_target="2001:db8:1::42")))
    assert dropped_here(send(w, vm, **icmp6(PAIR_MAC, ll(PAIR_MAC), 136, ipv6_nd_target=v6(vm))))
    # dropping the pairs takes their flows away
    vm = update(w, vm, allowed_address_pairs=())
    assert dropped_here(send(w, vm, **ipv4(PAIR_MAC, "10.0.0.100", peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(vm.mac, "10.0.1.77", peer.mac, v4(peer))))


def test_a_pair_covering_a_fixed_ip_is_one_well_defined_match() -> None:
    w, vm, peer = world()
    vm = update(w, vm, allowed_address_pairs=(("10.0.0.0/24", ""), ("0.0.0.0/0", PAIR_MAC)))
    # the walker raises on two different flows matching at one priority: the /32 and the /24 do not tie
    assert passes(send(w, vm, **ipv4(vm.mac, v4(vm), peer.mac, v4(peer))))
    assert passes(send(w, vm, **ipv4(vm.mac, "10.0.0.200", peer.mac, v4(peer))))
    assert passes(send(w, vm, **ipv4(PAIR_MAC, "198.51.100.7", peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **ipv4(vm.mac, "198.51.100.7", peer.mac, v4(peer))))
    assert dropped_here(send(w, vm, **udp(PAIR_MAC, "198.51.100.7", BCAST, "255.255.255.255", 67, 68)))


# ------------------------------------------------------------------------------------------ port security off


def test_port_security_disabled_lets_everything_through() -> None:
    w, vm, peer = world()
    vm = update(w, vm, port_security_enabled=False, security_groups=())  # groups need port security
    for frame in (
        ipv4(OTHER_MAC, v4(vm), peer.mac, v4(peer)),
        ipv4(vm.mac, v4(peer), peer.mac, v4(peer)),
        arp(vm.mac, vm.mac, v4(peer), v4(peer), op=2),
        udp(vm.mac, v4(vm), BCAST, "255.255.255.255", 67, 68),
        icmp6(vm.mac, ll(vm.mac), 134),
    ):
        assert passes(send(w, vm, **frame)), frame
    assert not owned(w, "hv1", vm)
    # the peer, still secured, is not affected
    assert dropped_here(send(w, peer, **ipv4(peer.mac, v4(vm), vm.mac, v4(vm))))
    # and turning it back on restores the checks
    vm = update(w, vm, port_security_enabled=True)
    assert dropped_here(send(w, vm, **ipv4(vm.mac, v4(peer), peer.mac, v4(peer))))


def test_flows_only_where_the_port_is_plugged() -> None:
    w, vm, _peer = world()
    remote = w.port("remote", "a", "hv2", "10.0.0.7")

    def owned_by(chassis: str, port: Port) -> set[Flow]:
        return owned(w, chassis, port)

    assert owned_by("hv1", vm) and owned_by("hv2", remote)
    assert not owned_by("hv2", vm) and not owned_by("hv1", remote)
    assert all(f.stage == "port_sec_in" for f in owned_by("hv1", vm))
    # unplugged (bound but no VIF): nothing
    w.runtime["hv1"] = dataclasses.replace(
        w.runtime["hv1"], vifs={k: v for k, v in w.runtime["hv1"].vifs.items() if k != vm.id}
    )
    assert not owned_by("hv1", vm)


# --------------------------------------------------------------------------------------- incremental == full

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["security", "pairs", "ips", "move", "unplug", "plug"]),
        st.integers(0, 2),
        st.sampled_from(["hv1", "hv2"]),
    ),
    min_size=1,
    max_size=15,
)
PAIRS = [(), (("10.0.0.100", PAIR_MAC),), (("10.0.1.0/24", ""), ("2001:db8:9::/64", PAIR_MAC))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_incremental_compile_equals_full_compile(steps) -> None:  # type: ignore[no-untyped-def]
    w, _vm, _peer = world()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    for i, (op, n, ch) in enumerate(steps):
        port = w.topo.ports[("vm", "peer", "vm")[n]]
        changes: list[Any] = []
        if op == "security":
            on = not port.port_security_enabled
            fields: dict[str, Any] = {"port_security_enabled": on}
            if not on:
                fields.update(allowed_address_pairs=(), security_groups=())
            changes = w.apply(ops.update_port(w.topo, port, fields, w.rev + 1, 0.0))
        elif op == "pairs" and port.port_security_enabled:
            changes = w.apply(
                ops.update_port(w.topo, port, {"allowed_address_pairs": PAIRS[n]}, w.rev + 1, 0.0)
            )
        elif op == "ips":
            ip = f"10.0.0.{50 + i}"
            changes = w.apply(ops.update_port(w.topo, port, {"fixed_ips": (("", ip),)}, w.rev + 1, 0.0))
        elif op == "move":
            changes = w.apply(ops.update_port(w.topo, port, {"binding_chassis": ch}, w.rev + 1, 0.0))
        elif op in ("plug", "unplug"):
            rt = w.runtime[ch]
            vifs = dict(rt.vifs)
            if op == "plug":
                vifs[port.id] = 60 + n
            else:
                vifs.pop(port.id, None)
            w.runtime[ch] = dataclasses.replace(rt, vifs=vifs)
            comp.on_runtime(w.topo, w.runtime[ch])
        if changes:
            comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c), (i, op, n, ch, c)
