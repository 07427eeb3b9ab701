"""VPNaaS in any order (the model, no flows): a stateful property test interleaving writes of every VPN kind
with what they depend on (router interfaces, the router's gateway, subnets, the router itself), admin state
flips and status reports, and after every step asserts the invariants the API promises:

- every connection's references exist, are its tenant's and of the right type; its local subnets are
  interfaces of its service's router; its peer CIDRs overlap neither its local subnets nor a sibling's;
- every VPN service's router exists and has its external gateway, at the address the service shows;
- every endpoint group's subnets exist;
- statuses: a connection (or service) administratively down is DOWN; a service's status is the one derived
  from its connections';
- the derived indices are exactly those a reload from the records rebuilds.

Writes go through topology.ops / ops_vpn as the API's handlers call them; a refused write (ApiError) changes
nothing, as through the API.
"""

from __future__ import annotations

from collections.abc import Callable

import netaddr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from topology import ops, ops_vpn
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import (
    VPN_STATUSES,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Network,
    Router,
    Subnet,
    VpnEndpointGroup,
    VpnService,
)

SUBNETS = {"web": "10.0.0.0/24", "db": "10.0.1.0/24", "lone": "10.0.2.0/24"}
GROUPS = {
    "l-web": ("subnet", ("web-sub",)),
    "l-both": ("subnet", ("web-sub", "db-sub")),
    "l-lone": ("subnet", ("lone-sub",)),
    "p-a": ("cidr", ("192.168.0.0/24",)),
    "p-b": ("cidr", ("192.168.0.0/16",)),
    "p-c": ("cidr", ("172.16.0.0/12",)),
    "p-bad": ("cidr", ("10.0.0.0/8",)),  # overlaps every local subnet
}
CONNS = ("c1", "c2", "c3")
PEERS = ("198.51.100.7", "198.51.100.8")

group_st = st.sampled_from(sorted(GROUPS))
conn_st = st.sampled_from(CONNS)


class VpnAnyOrder(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.topo = Topology()
        self.rev = 0

    def write(self, fn: Callable[[Topology, int, float], list[Change]]) -> bool:
        try:
            changes = fn(self.topo, self.rev + 1, float(self.rev + 1))
        except ApiError:
            return False
        self.rev += 1
        self.topo.apply(changes, self.rev)
        return True

    @initialize()
    def build(self) -> None:
        self.write(lambda t, r, n: ops.create_network(t, Network(id="ext", tenant="admin", segment_type="flat",
                                                                  physical_network="ext", external=True), r, n))  # fmt: skip
        self.write(lambda t, r, n: ops.create_subnet(
            t, Subnet(id="ext-sub", tenant="admin", network_id="ext", cidr="203.0.113.0/24"), False, r, n))  # fmt: skip
        for name, cidr in SUBNETS.items():
            self._make_subnet(name, cidr)
        self._make_router()
        self.write(lambda t, r, n: ops_vpn.create_ike_policy(t, IkePolicy(id="ike", tenant="alice"), r, n))
        self.write(
            lambda t, r, n: ops_vpn.create_ipsec_policy(t, IpsecPolicy(id="ipsec", tenant="alice"), r, n)
        )
        # a working VPN to start from (random steps alone seldom build one): interfaces web and db, service vpn,
        # groups l-web, l-both, p-a, p-c, connection c1 (l-web -> p-a)
        for name in ("web", "db"):
            self.toggle_interface(name)
        self.toggle_service(True)
        for gid in ("l-web", "l-both", "p-a", "p-c"):
            self.toggle_group(gid)
        self.toggle_connection("c1", "l-web", "p-a", PEERS[0], True)
        assert "c1" in self.topo.ipsec_site_connections

    def _make_subnet(self, name: str, cidr: str) -> None:
        if name not in self.topo.networks:
            self.write(lambda t, r, n: ops.create_network(t, Network(id=name, tenant="alice"), r, n))
        sub = Subnet(id=f"{name}-sub", tenant="alice", network_id=name, cidr=cidr)
        self.write(lambda t, r, n: ops.create_subnet(t, sub, False, r, n))

    def _make_router(self) -> None:
        self.write(
            lambda t, r, n: ops.create_router(
                t, Router(id="r1", tenant="alice"), ops.GatewayRequest("ext"), r, n
            )
        )

    # ------------------------------------------------------------------------------------------ what VPNs use

    @rule(name=st.sampled_from(sorted(SUBNETS)))
    def toggle_interface(self, name: str) -> None:
        sub = f"{name}-sub"
        if "r1" not in self.topo.routers or sub not in self.topo.subnets:
            return
        if any(s == sub for _p, s, _a in ops.router_interfaces(self.topo, "r1")):
            self.write(lambda t, r, n: ops.remove_router_interface(t, t.routers["r1"], sub, "", r, n))
        else:
            self.write(
                lambda t, r, n: ops.add_router_interface(t, t.routers["r1"], sub, "", f"if-{name}", r, n)
            )

    @rule(address=st.sampled_from(("", "203.0.113.50")))
    def toggle_gateway(self, address: str) -> None:
        router = self.topo.routers.get("r1")
        if router is None:
            return
        gw = (
            None
            if router.gateway_network_id and not address
            else ops.GatewayRequest("ext", ip_address=address)
        )
        self.write(lambda t, r, n: ops.update_router(t, t.routers["r1"], {"external_gateway": gw}, r, n))

    @rule(force=st.booleans())
    def toggle_router(self, force: bool) -> None:
        if "r1" in self.topo.routers:
            self.write(lambda t, r, n: ops.delete_router(t, t.routers["r1"], force, r, n))
        else:
            self._make_router()

    @rule(name=st.sampled_from(sorted(SUBNETS)), force=st.booleans())
    def toggle_subnet(self, name: str, force: bool) -> None:
        sub = f"{name}-sub"
        if sub in self.topo.subnets:
            self.write(lambda t, r, n: ops.delete_subnet(t, t.subnets[sub], force, r, n))
        else:
            self._make_subnet(name, SUBNETS[name])

    # ------------------------------------------------------------------------------------------ VPN kinds

    @rule(up=st.booleans())
    def toggle_service(self, up: bool) -> None:
        if "vpn" in self.topo.vpn_services:
            self.write(lambda t, r, n: ops_vpn.delete_vpn_service(t, t.vpn_services["vpn"]))
        else:
            svc = VpnService(id="vpn", tenant="alice", router_id="r1", admin_state_up=up)
            self.write(lambda t, r, n: ops_vpn.create_vpn_service(t, svc, r, n))

    @rule(up=st.booleans())
    def service_admin(self, up: bool) -> None:
        if "vpn" in self.topo.vpn_services:
            self.write(
                lambda t, r, n: ops_vpn.update_vpn_service(
                    t, t.vpn_services["vpn"], {"admin_state_up": up}, r, n
                )
            )

    @rule(kind=st.sampled_from(("ike", "ipsec")))
    def toggle_policy(self, kind: str) -> None:
        if kind == "ike":
            if "ike" in self.topo.ike_policies:
                self.write(lambda t, r, n: ops_vpn.delete_ike_policy(t, t.ike_policies["ike"]))
            else:
                self.write(
                    lambda t, r, n: ops_vpn.create_ike_policy(t, IkePolicy(id="ike", tenant="alice"), r, n)
                )
        elif "ipsec" in self.topo.ipsec_policies:
            self.write(lambda t, r, n: ops_vpn.delete_ipsec_policy(t, t.ipsec_policies["ipsec"]))
        else:
            self.write(
                lambda t, r, n: ops_vpn.create_ipsec_policy(t, IpsecPolicy(id="ipsec", tenant="alice"), r, n)
            )

    @rule(gid=group_st)
    def toggle_group(self, gid: str) -> None:
        if gid in self.topo.vpn_endpoint_groups:
            self.write(lambda t, r, n: ops_vpn.delete_endpoint_group(t, t.vpn_endpoint_groups[gid]))
        else:
            kind, endpoints = GROUPS[gid]
            group = VpnEndpointGroup(id=gid, tenant="alice", type=kind, endpoints=endpoints)
            self.write(lambda t, r, n: ops_vpn.create_endpoint_group(t, group, r, n))

    @rule(cid=conn_st, local=group_st, peer=group_st, address=st.sampled_from(PEERS), up=st.booleans())
    def toggle_connection(self, cid: str, local: str, peer: str, address: str, up: bool) -> None:
        if cid in self.topo.ipsec_site_connections:
            self.write(
                lambda t, r, n: ops_vpn.delete_ipsec_site_connection(t, t.ipsec_site_connections[cid], r, n)
            )
            return
        conn = IpsecSiteConnection(
            id=cid,
            tenant="alice",
            vpnservice_id="vpn",
            ikepolicy_id="ike",
            ipsecpolicy_id="ipsec",
            local_ep_group_id=local,
            peer_ep_group_id=peer,
            peer_address=address,
            psk="k",
            admin_state_up=up,
        )
        self.write(lambda t, r, n: ops_vpn.create_ipsec_site_connection(t, conn, r, n))

    @rule(cid=conn_st, local=group_st, peer=group_st, up=st.booleans())
    def update_connection(self, cid: str, local: str, peer: str, up: bool) -> None:
        if cid in self.topo.ipsec_site_connections:
            fields = {"local_ep_group": local, "peer_ep_group": peer, "admin_state_up": up}
            self.write(
                lambda t, r, n: ops_vpn.update_ipsec_site_connection(
                    t, t.ipsec_site_connections[cid], fields, r, n
                )
            )

    @rule(cid=conn_st, status=st.sampled_from(VPN_STATUSES))
    def report(self, cid: str, status: str) -> None:
        """The IKE daemon reports (the realization's call)."""
        self.write(
            lambda t, r, n: ops_vpn.set_vpn_status(t, cid, status, "" if status == "ACTIVE" else "x", r, n)
        )

    # ------------------------------------------------------------------------------------------ invariants

    @invariant()
    def references_hold(self) -> None:
        t = self.topo
        for conn in t.ipsec_site_connections.values():
            svc = t.vpn_services[conn.vpnservice_id]
            local, peer = (
                t.vpn_endpoint_groups[conn.local_ep_group_id],
                t.vpn_endpoint_groups[conn.peer_ep_group_id],
            )
            assert conn.ikepolicy_id in t.ike_policies and conn.ipsecpolicy_id in t.ipsec_policies
            assert (local.type, peer.type) == ("subnet", "cidr")
            assert {svc.tenant, local.tenant, peer.tenant, conn.tenant} == {"alice"}
            on_router = {s for _p, s, _a in ops.router_interfaces(t, svc.router_id)}
            assert set(local.endpoints) <= on_router, (conn.id, local.endpoints, on_router)
            nets = [netaddr.IPNetwork(t.subnets[s].cidr) for s in local.endpoints]
            for c in peer.endpoints:
                pnet = netaddr.IPNetwork(c)
                assert not any(pnet in n or n in pnet for n in nets)
                for other in t.ipsec_site_connections.values():
                    if other.id != conn.id and other.vpnservice_id == conn.vpnservice_id:
                        for o in t.vpn_endpoint_groups[other.peer_ep_group_id].endpoints:
                            onet = netaddr.IPNetwork(o)
                            assert not (pnet in onet or onet in pnet)
        for svc in t.vpn_services.values():
            router = t.routers[svc.router_id]
            gw = ops.gateway_port(t, router.id)
            assert router.gateway_network_id and gw is not None
            assert svc.external_v4_ip == gw.fixed_ips[0][1]
        for group in t.vpn_endpoint_groups.values():
            if group.type == "subnet":
                assert set(group.endpoints) <= set(t.subnets)

    @invariant()
    def statuses_follow(self) -> None:
        t = self.topo
        for conn in t.ipsec_site_connections.values():
            if not conn.admin_state_up or not t.vpn_services[conn.vpnservice_id].admin_state_up:
                assert (conn.status, conn.status_reason) == ("DOWN", ops_vpn.ADMIN_DOWN_REASON)
        for svc in t.vpn_services.values():
            conns = [c for c in t.ipsec_site_connections.values() if c.vpnservice_id == svc.id]
            assert svc.status == ops_vpn.service_status(svc, conns)

    @invariant()
    def indices_are_a_reloads(self) -> None:
        again = Topology()
        again.load(self.topo.all_records(), self.topo.revision)
        assert again.router_vpn == self.topo.router_vpn
        assert again.vpn_users == self.topo.vpn_users
        assert again.subnet_epgs == self.topo.subnet_epgs
        assert set(again.graph.edges) == set(self.topo.graph.edges)


VpnAnyOrder.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_vpn_in_any_order = VpnAnyOrder.TestCase
