"""VPNaaS flows by behaviour: walk packets through the gateway chassis's (hv1, where the router's VPN namespace
is plugged) and another chassis's tables; the namespace is a port of br-int like a VM."""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr

from apps import ids, vpn
from apps.compiler import Compiler, desired_from_scratch
from apps.owners import model_owners
from apps.view import View
from flows.flow import Flow
from tests.test_apps_l2 import PATCH, TUN
from tests.test_apps_nat import EXT_HOST, GC, NatWorld, gw_port, nat_world, out_of_vm
from topology import ops, ops_security
from topology.records import (
    EP_CIDR,
    EP_SUBNET,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Router,
    SecurityGroupRule,
    VpnEndpointGroup,
    VpnService,
)

PEER = "10.9.0.0/24"
REMOTE_HOST = "10.9.0.5"
NS_OFPORT = 50


def vpn_records(tenant: str, router: str, subnet: str, peer_address: str, n: str = "") -> list[Any]:
    return [
        IkePolicy(id=f"ike{n}", tenant=tenant),
        IpsecPolicy(id=f"esp{n}", tenant=tenant),
        VpnService(id=f"svc{n}", tenant=tenant, router_id=router),
        VpnEndpointGroup(id=f"local{n}", tenant=tenant, type=EP_SUBNET, endpoints=(subnet,)),
        VpnEndpointGroup(id=f"peer{n}", tenant=tenant, type=EP_CIDR, endpoints=(PEER,)),
        IpsecSiteConnection(
            id=f"conn{n}",
            tenant=tenant,
            vpnservice_id=f"svc{n}",
            ikepolicy_id=f"ike{n}",
            ipsecpolicy_id=f"esp{n}",
            local_ep_group_id=f"local{n}",
            peer_ep_group_id=f"peer{n}",
            peer_address=peer_address,
            psk="k",
        ),
    ]


def add_vpn(
    w: NatWorld, n: str = "", tenant: str = "alice", router: str = "r", subnet: str = "a-sub"
) -> list[Any]:
    """The VPN records written (as the API would), and the namespace's port plugged on hv1."""
    changes = [(r.KIND, r.id, None, r) for r in vpn_records(tenant, router, subnet, EXT_HOST[0], n)]
    w.apply(changes)
    plug_ns(w, f"svc{n}", NS_OFPORT + len(n))
    return changes


def plug_ns(w: NatWorld, service: str, ofport: int) -> None:
    rt = w.runtime["hv1"]
    w.runtime["hv1"] = dataclasses.replace(rt, vifs={**rt.vifs, vpn.iface_id(service): ofport})


def allow_from_peer(w: NatWorld, tenant: str = "alice") -> None:
    group, made = ops_security.ensure_default_group(w.topo, tenant, w.rev + 1, 0.0)
    if made:
        w.apply(made)
    w.apply(
        ops_security.create_security_group_rule(
            w.topo,
            SecurityGroupRule(
                id=f"peer-in-{tenant}",
                tenant=tenant,
                security_group_id=group,
                direction="ingress",
                ethertype="IPv4",
                remote_ip_prefix=PEER,
            ),
            True,
            w.rev + 1,
            0.0,
        )
    )


def from_ns(
    w: NatWorld, service: str, dst: str, src: str = REMOTE_HOST, ofport: int = NS_OFPORT, **l4: Any
) -> dict:  # type: ignore[type-arg]
    """A packet the namespace sends: its own (src = the gateway IP, to the gateway MAC) or decrypted (to INT)."""
    own = src == gw_port(w).fixed_ips[0][1]
    l4 = l4 or {"ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0}
    return {
        "in_port": ofport,
        "eth_src": vpn.ns_mac(service),
        "eth_dst": gw_port(w).mac if own else vpn.int_mac(service),
        "eth_type": 0x0800,
        "ipv4_src": src,
        "ipv4_dst": dst,
        "nw_ttl": 64,
        **l4,
    }


def ike_from_outside(w: NatWorld, **l4: Any) -> dict:  # type: ignore[type-arg]
    return {
        "in_port": PATCH,
        "eth_src": EXT_HOST[1],
        "eth_dst": gw_port(w).mac,
        "eth_type": 0x0800,
        "ipv4_src": EXT_HOST[0],
        "ipv4_dst": gw_port(w).fixed_ips[0][1],
        "nw_ttl": 64,
        **l4,
    }


def test_vm_to_a_peer_cidr_goes_to_the_vpn_namespace_unnatted() -> None:
    w, p = nat_world()
    add_vpn(w)
    res = w.switch("hv1").walk(out_of_vm(w, p["a1"], REMOTE_HOST))
    assert res.ports == [NS_OFPORT], res.format()
    h = res.outputs[0].headers
    assert h["ipv4_src"] == "10.0.0.10" and h["ipv4_dst"] == REMOTE_HOST, "never SNAT'ed"
    assert (h["eth_dst"], h["eth_src"], h["nw_ttl"]) == (vpn.ns_mac("svc"), vpn.int_mac("svc"), 63)
    # an address outside the peer CIDR still leaves through SNAT
    assert w.switch("hv1").walk(out_of_vm(w, p["a1"], EXT_HOST[0])).ports == [PATCH]


def test_from_another_chassis_the_packet_is_redirected_to_the_gateway_chassis() -> None:
    w, p = nat_world()
    add_vpn(w)
    res = w.switch("hv2").walk(out_of_vm(w, p["a2"], REMOTE_HOST))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert h["tun_ipv4_dst"] == "192.0.2.1"
    on_gc = w.switch("hv1").walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": h["tunnel_id"],
            **{k: v for k, v in h.items() if k.startswith(("eth", "ipv4", "nw_", "ip_", "tcp"))},
        }
    )
    assert on_gc.ports == [NS_OFPORT], on_gc.format()
    assert on_gc.outputs[0].headers["ipv4_src"] == "10.0.0.20"


def test_without_the_namespace_port_peer_traffic_is_dropped_not_snatted() -> None:
    w, p = nat_world()
    add_vpn(w)
    rt = w.runtime["hv1"]
    w.runtime["hv1"] = dataclasses.replace(
        rt, vifs={k: v for k, v in rt.vifs.items() if not k.startswith("vpn-")}
    )
    assert w.switch("hv1").walk(out_of_vm(w, p["a1"], REMOTE_HOST)).ports == []


def test_ike_natt_and_esp_to_the_gateway_ip_reach_the_namespace_only() -> None:
    w, _p = nat_world()
    add_vpn(w)
    sw = w.switch("hv1")
    for l4 in (
        {"ip_proto": 17, "udp_src": 500, "udp_dst": 500},
        {"ip_proto": 17, "udp_src": 4500, "udp_dst": 4500},
        {"ip_proto": 50},
    ):
        res = sw.walk(ike_from_outside(w, **l4))
        assert res.ports == [NS_OFPORT], (l4, res.format())
        assert res.outputs[0].headers["eth_dst"] == vpn.ns_mac("svc")
    # any other UDP port to the gateway address is a new connection from outside: dropped
    assert sw.walk(ike_from_outside(w, ip_proto=17, udp_src=4500, udp_dst=4501)).ports == []


def test_the_namespaces_own_packets_leave_as_the_routers() -> None:
    w, _p = nat_world()
    add_vpn(w)
    gw_ip = gw_port(w).fixed_ips[0][1]
    res = w.switch("hv1").walk(
        from_ns(w, "svc", EXT_HOST[0], src=gw_ip, ip_proto=17, udp_src=4500, udp_dst=4500)
    )
    assert res.ports == [PATCH], res.format()
    h = res.outputs[0].headers
    assert (h["eth_src"], h["eth_dst"], h["ipv4_src"], h["udp_src"]) == (
        gw_port(w).mac,
        EXT_HOST[1],
        gw_ip,
        4500,
    )
    assert h["nw_ttl"] == 64, "the router's own packet: no TTL decrement"
    # nothing else the namespace sends to the gateway MAC leaves as the router (another source)
    spoof = {**from_ns(w, "svc", EXT_HOST[0], src="10.0.0.99"), "eth_dst": gw_port(w).mac}
    assert w.switch("hv1").walk(spoof).ports == []


def test_decrypted_packets_enter_the_router_and_reach_the_vms() -> None:
    w, p = nat_world()
    allow_from_peer(w)
    add_vpn(w)
    sw = w.switch("hv1")
    res = sw.walk(from_ns(w, "svc", "10.0.0.10"))
    assert res.ports == [w.ofport(p["a1"])], res.format()
    assert res.outputs[0].headers["ipv4_src"] == REMOTE_HOST and res.outputs[0].headers["nw_ttl"] == 63
    res = sw.walk(from_ns(w, "svc", "10.0.0.20"))
    assert res.ports == [TUN["vxlan"]], res.format()  # a2 lives on hv2
    assert res.outputs[0].headers["tun_ipv4_dst"] == "192.0.2.2"


def test_two_tenants_with_the_same_cidrs_never_mix() -> None:
    w, p = nat_world()
    allow_from_peer(w)
    add_vpn(w)
    # bob: the same private CIDR behind his own router, with a VPN to the same peer CIDR
    w.network("b", "bob", "10.0.0.0/24")
    w.apply(
        ops.create_router(w.topo, Router(id="rb", tenant="bob"), ops.GatewayRequest("ext"), w.rev + 1, 0.0)
    )
    w.apply(ops.add_router_interface(w.topo, w.topo.routers["rb"], "b-sub", "", "rb-b", w.rev + 1, 0.0))
    b1 = w.port("b1", "b", "hv1", "10.0.0.10")
    allow_from_peer(w, "bob")
    add_vpn(w, n="b", tenant="bob", router="rb", subnet="b-sub")
    sw = w.switch("hv1")
    assert sw.walk(out_of_vm(w, p["a1"], REMOTE_HOST)).ports == [NS_OFPORT]
    bob_out = {**out_of_vm(w, p["a1"], REMOTE_HOST), "in_port": w.ofport(b1), "eth_src": b1.mac}
    bob_out["eth_dst"] = w.topo.ports["rb-b"].mac
    assert sw.walk(bob_out).ports == [NS_OFPORT + 1]
    # decrypted packets of each namespace reach only their own tenant's VM (both are 10.0.0.10)
    assert sw.walk(from_ns(w, "svc", "10.0.0.10")).ports == [w.ofport(p["a1"])]
    assert sw.walk(from_ns(w, "svcb", "10.0.0.10", ofport=NS_OFPORT + 1)).ports == [w.ofport(b1)]


def test_incremental_compile_follows_vpn_changes_and_deleting_removes_the_flows() -> None:
    w, p = nat_world()
    comp = Compiler(GC)
    comp.neighbors = w.neighbors
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    before = {c: comp.desired(c) for c in ("hv1", "hv2")}
    changes = add_vpn(w)
    comp.on_changes(w.topo, changes)
    comp.on_runtime(w.topo, w.runtime["hv1"])  # the namespace's port appears
    for c in ("hv1", "hv2"):
        assert not comp.check(w.topo, c), c
        assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c, GC, w.neighbors)
    assert any(
        isinstance(f, Flow) and f.owner is not None and f.owner.app == ids.VPN for f in comp.desired("hv2")
    )
    # a status report changes no flow and recompiles nothing
    conn = w.topo.ipsec_site_connections["conn"]
    up = dataclasses.replace(conn, status="ACTIVE")
    w.apply([("ipsec_site_connection", "conn", conn, up)])
    assert not any(comp.on_changes(w.topo, [("ipsec_site_connection", "conn", conn, up)]).values())
    # deleting the connection removes every VPN flow (the service alone routes nothing)
    gone = [("ipsec_site_connection", "conn", up, None)]
    w.apply(gone)
    comp.on_changes(w.topo, gone)
    assert {c: comp.desired(c) for c in ("hv1", "hv2")} == before
    # the peer CIDR follows the default route again (its next hop, the external subnet's gateway, to resolve)
    res = w.switch("hv1").walk(out_of_vm(w, p["a1"], REMOTE_HOST))
    assert res.ports == ["CONTROLLER"] and res.outputs[0].headers["reg0"] == int(
        netaddr.IPAddress("172.24.4.1")
    )


def test_plan_follows_the_gateway_chassis_and_carries_the_connection() -> None:
    w, _p = nat_world()
    add_vpn(w)
    sp = vpn.plan(View(w.topo, w.runtime, GC), w.topo.vpn_services["svc"])
    assert sp is not None and sp.chassis_id == "hv1" and sp.gateway_ip == gw_port(w).fixed_ips[0][1]
    (cp,) = sp.connections
    assert cp.local_cidrs == ("10.0.0.0/24",) and cp.peer_cidrs == (PEER,) and cp.local_id == sp.gateway_ip
    assert cp.ike_proposal == "aes128-sha256-modp2048" and "k" not in repr(cp)
    assert sp.local_addresses == (w.topo.ports["r-a"].fixed_ips[0][1],)
    # hv1 held down: the service moves with the router to the next gateway chassis
    moved = vpn.plan(
        View(w.topo, w.runtime, ("hv1", "hv2"), down=frozenset({"hv1"})), w.topo.vpn_services["svc"]
    )
    assert moved is not None and moved.chassis_id == "hv2" and moved.connections == sp.connections
    # administratively down: it runs nowhere
    svc = w.topo.vpn_services["svc"]
    w.apply([("vpn_service", "svc", svc, dataclasses.replace(svc, admin_state_up=False))])
    assert vpn.plan(View(w.topo, w.runtime, GC), w.topo.vpn_services["svc"]) is None


def test_proposals() -> None:
    assert vpn.proposal("aes-256", "sha512", "group19", ike=True) == "aes256-sha512-ecp256"
    assert vpn.proposal("aes-128-gcm-16", "sha256", "group14", ike=True) == "aes128gcm16-prfsha256-modp2048"
    assert vpn.proposal("aes-128-gcm-16", "sha256", "group14", ike=False) == "aes128gcm16-modp2048"


def test_vpn_flows_name_their_service_in_dumps() -> None:
    w, _p = nat_world()
    add_vpn(w)
    reg = ids.registry_for(model_owners(w.topo))
    flows = [
        f for f in desired_from_scratch(w.topo, w.runtime, "hv1", GC, w.neighbors) if isinstance(f, Flow)
    ]
    mine = [f for f in flows if f.owner is not None and f.owner.app == ids.VPN]
    assert mine and all(reg.lookup(f.cookie) == ("vpn", "svc") for f in mine), reg.lookup(mine[0].cookie)
