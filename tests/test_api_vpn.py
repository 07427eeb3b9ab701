"""VPNaaS through the gRPC VpnaasService on a real channel: happy paths, every validation error with the field it
names, in-use refusals (also of the router, its gateway, its interfaces and subnets), tenant scoping, etags,
statuses (the controller's, never a client's), the pre-shared key never coming back (answers, Watch, errors,
logs), and reload from the store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, InProcessServer
from tests.test_api import details, expect_error, make_net, make_subnet
from tests.test_api_routers import add_iface, external, make_router, remove_iface, update_router
from topology import ops_vpn
from topology.state import State

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, ABORTED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED
PSK = "Sup3r-Secret-Key-4711"
CONN = "ipsecSiteConnections/c1"


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


class Vpn:
    """The VpnaasService stub as someone."""

    def __init__(self, api: Api, md: Any) -> None:
        self.api = api
        self.stub = pb_grpc.VpnaasServiceStub(api.channel)
        self.md = md

    def ike(self, ident: str = "ike1", **kw: Any) -> pb.IkePolicy:
        return self.stub.CreateIkePolicy(
            pb.CreateIkePolicyRequest(ike_policy=pb.IkePolicy(**kw), ike_policy_id=ident), metadata=self.md
        )

    def ipsec(self, ident: str = "ipsec1", **kw: Any) -> pb.IpsecPolicy:
        return self.stub.CreateIpsecPolicy(
            pb.CreateIpsecPolicyRequest(ipsec_policy=pb.IpsecPolicy(**kw), ipsec_policy_id=ident),
            metadata=self.md,
        )

    def service(self, ident: str = "vpn1", **kw: Any) -> pb.VpnService:
        kw.setdefault("router", "routers/r1")
        return self.stub.CreateVpnService(
            pb.CreateVpnServiceRequest(vpn_service=pb.VpnService(**kw), vpn_service_id=ident),
            metadata=self.md,
        )

    def group(self, ident: str, kind: str, *endpoints: str, **kw: Any) -> pb.VpnEndpointGroup:
        return self.stub.CreateVpnEndpointGroup(
            pb.CreateVpnEndpointGroupRequest(
                vpn_endpoint_group=pb.VpnEndpointGroup(type=kind, endpoints=list(endpoints), **kw),
                vpn_endpoint_group_id=ident,
            ),
            metadata=self.md,
        )

    def conn(self, ident: str = "c1", validate_only: bool = False, **kw: Any) -> pb.IpsecSiteConnection:
        for k, v in (
            ("vpnservice", "vpnServices/vpn1"),
            ("ikepolicy", "ikePolicies/ike1"),
            ("ipsecpolicy", "ipsecPolicies/ipsec1"),
            ("local_ep_group", "vpnEndpointGroups/local"),
            ("peer_ep_group", "vpnEndpointGroups/peer"),
            ("peer_address", "198.51.100.7"),
            ("psk", PSK),
        ):
            kw.setdefault(k, v)
        return self.stub.CreateIpsecSiteConnection(
            pb.CreateIpsecSiteConnectionRequest(
                ipsec_site_connection=pb.IpsecSiteConnection(**kw),
                ipsec_site_connection_id=ident,
                validate_only=validate_only,
            ),
            metadata=self.md,
        )

    def get_conn(self, name: str = CONN) -> pb.IpsecSiteConnection:
        return self.stub.GetIpsecSiteConnection(pb.GetIpsecSiteConnectionRequest(name=name), metadata=self.md)

    def update_conn(self, *paths: str, etag: str = "", **kw: Any) -> pb.IpsecSiteConnection:
        return self.stub.UpdateIpsecSiteConnection(
            pb.UpdateIpsecSiteConnectionRequest(
                ipsec_site_connection=pb.IpsecSiteConnection(name=kw.pop("name", CONN), etag=etag, **kw),
                update_mask=mask(*paths),
            ),
            metadata=self.md,
        )

    def service_status(self, name: str = "vpnServices/vpn1") -> str:
        return str(self.stub.GetVpnService(pb.GetVpnServiceRequest(name=name), metadata=self.md).status)

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self.stub, method)
        return lambda request: rpc(request, metadata=self.md)


def _site(api: Api, md: Any, prefix: str = "", ext: str = "public") -> None:
    """A tenant's router r1 (gateway on `ext`) with subnets web-v4 10.0.0.0/24 and db-v4 10.0.1.0/24 as
    interfaces, and subnet lone-v4 10.0.2.0/24 on no router."""
    for net, cidr in (("web", "10.0.0.0/24"), ("db", "10.0.1.0/24"), ("lone", "10.0.2.0/24")):
        make_net(api, md, f"{prefix}{net}")
        make_subnet(api, md, f"networks/{prefix}{net}", cidr, f"{prefix}{net}-v4")
    make_router(api, md, f"{prefix}r1", gateway=f"networks/{ext}")
    for net in ("web", "db"):
        add_iface(api, md, f"routers/{prefix}r1", subnet=f"subnets/{prefix}{net}-v4")


@pytest.fixture
def alice(api: Api) -> Vpn:
    external(api)
    vpn = Vpn(api, api.md(api.tenant_token("alice")))
    _site(api, vpn.md)
    return vpn


@pytest.fixture
def bob(api: Api, alice: Vpn) -> Vpn:
    vpn = Vpn(api, api.md(api.tenant_token("bob")))
    _site(api, vpn.md, prefix="b-")
    return vpn


def _world(vpn: Vpn, peer: tuple[str, ...] = ("192.168.0.0/24",)) -> Vpn:
    """Policies ike1 / ipsec1, service vpn1 on r1, groups local (web-v4) and peer, connection c1."""
    vpn.ike()
    vpn.ipsec()
    vpn.service()
    vpn.group("local", "subnet", "subnets/web-v4")
    vpn.group("peer", "cidr", *peer)
    vpn.conn()
    return vpn


# ---------------------------------------------------------------------------------------------- happy paths


def test_vpn_lifecycle_with_defaults_and_derived_values(server: InProcessServer, alice: Vpn) -> None:
    ike = alice.ike(display_name="ike", description="phase 1")
    assert (ike.name, ike.tenant, ike.ike_version, ike.encryption_algorithm, ike.auth_algorithm) == (
        "ikePolicies/ike1",
        "alice",
        "v2",
        "aes-128",
        "sha256",
    )
    assert (ike.pfs, ike.phase1_negotiation_mode, ike.lifetime, ike.etag) == (
        "group14",
        "main",
        3600,
        str(ike.revision),
    )
    ipsec = alice.ipsec(encryption_algorithm="AES-256-GCM-16", pfs="group19", lifetime=1800)
    assert (ipsec.transform_protocol, ipsec.encapsulation_mode, ipsec.encryption_algorithm) == (
        "esp",
        "tunnel",
        "aes-256-gcm-16",
    )
    assert (ipsec.pfs, ipsec.lifetime) == ("group19", 1800)
    router = server.api.stub.GetRouter(pb.GetRouterRequest(name="routers/r1"), metadata=alice.md)
    svc = alice.service(display_name="edge")
    assert (svc.router, svc.status, svc.admin_state_up, svc.tenant) == (
        "routers/r1",
        "PENDING_CREATE",
        True,
        "alice",
    )
    assert svc.external_v4_ip == router.external_gateway.fixed_ip.ip_address != ""
    local = alice.group("local", "subnet", "subnets/web-v4", "subnets/db-v4")
    assert (local.type, list(local.endpoints)) == ("subnet", ["subnets/web-v4", "subnets/db-v4"])
    peer = alice.group("peer", "CIDR", "192.168.0.5/24", "172.16.0.0/16")
    assert (peer.type, list(peer.endpoints)) == ("cidr", ["192.168.0.0/24", "172.16.0.0/16"])
    conn = alice.conn(display_name="to-hq")
    assert (conn.name, conn.tenant, conn.vpnservice, conn.peer_address, conn.peer_id, conn.local_id) == (
        CONN,
        "alice",
        "vpnServices/vpn1",
        "198.51.100.7",
        "198.51.100.7",
        "",
    )
    assert (conn.psk, conn.psk_set, conn.mtu, conn.dpd_action, conn.dpd_interval, conn.dpd_timeout) == (
        "",
        True,
        1500,
        "hold",
        30,
        120,
    )
    assert (conn.initiator, conn.admin_state_up, conn.status, conn.status_reason) == (
        "bi-directional",
        True,
        "PENDING_CREATE",
        "",
    )
    stored = server.state.topology.ipsec_site_connections["c1"]
    assert stored.psk == PSK and stored.local_ep_group_id == "local"
    assert alice.get_conn() == conn
    listed = alice.ListIpsecSiteConnections(pb.ListIpsecSiteConnectionsRequest(vpnservice="vpnServices/vpn1"))
    assert [c.name for c in listed.ipsec_site_connections] == [CONN]
    assert not alice.ListIpsecSiteConnections(
        pb.ListIpsecSiteConnectionsRequest(vpnservice="vpnServices/other")
    ).ipsec_site_connections
    assert [
        s.name for s in alice.ListVpnServices(pb.ListVpnServicesRequest(router="routers/r1")).vpn_services
    ] == ["vpnServices/vpn1"]
    assert len(alice.ListIkePolicies(pb.ListIkePoliciesRequest()).ike_policies) == 1
    assert len(alice.ListIpsecPolicies(pb.ListIpsecPoliciesRequest()).ipsec_policies) == 1
    assert len(alice.ListVpnEndpointGroups(pb.ListVpnEndpointGroupsRequest()).vpn_endpoint_groups) == 2
    # updates: a new PSK (stored, not returned), a new peer (its id follows), DPD, MTU, the peer group
    upd = alice.update_conn("psk", psk="An0ther-Key")
    assert upd.psk == "" and upd.psk_set and upd.revision > conn.revision
    assert server.state.topology.ipsec_site_connections["c1"].psk == "An0ther-Key"
    upd = alice.update_conn("peer_address", "mtu", "dpd_interval", "dpd_timeout", peer_address="198.51.100.9",
                            mtu=1400, dpd_interval=10, dpd_timeout=40)  # fmt: skip
    assert (upd.peer_address, upd.peer_id, upd.mtu, upd.dpd_interval, upd.dpd_timeout) == (
        "198.51.100.9",
        "198.51.100.9",
        1400,
        10,
        40,
    )
    alice.group("peer2", "cidr", "192.168.9.0/24")
    upd = alice.update_conn(peer_ep_group="vpnEndpointGroups/peer2")  # an empty mask: the fields given
    assert upd.peer_ep_group == "vpnEndpointGroups/peer2" and upd.peer_address == "198.51.100.9"
    assert server.state.topology.ipsec_site_connections["c1"].psk == "An0ther-Key"  # not given: kept
    # "*": every mutable field as the message has it, but the key is kept unless given (it is never read back)
    whole = alice.get_conn()
    whole.mtu, whole.peer_id = 1300, "hq.example.com"
    upd = alice.UpdateIpsecSiteConnection(
        pb.UpdateIpsecSiteConnectionRequest(ipsec_site_connection=whole, update_mask=mask("*"))
    )
    assert (upd.mtu, upd.peer_id, upd.peer_ep_group) == (1300, "hq.example.com", "vpnEndpointGroups/peer2")
    assert server.state.topology.ipsec_site_connections["c1"].psk == "An0ther-Key"
    # policies may change while in use (the next SAs use the new values)
    upd_ike = alice.UpdateIkePolicy(
        pb.UpdateIkePolicyRequest(
            ike_policy=pb.IkePolicy(name=ike.name, lifetime=7200, encryption_algorithm="aes-256"),
            update_mask=mask("lifetime", "encryption_algorithm"),
        )
    )
    assert (upd_ike.lifetime, upd_ike.encryption_algorithm) == (7200, "aes-256")
    group = alice.UpdateVpnEndpointGroup(
        pb.UpdateVpnEndpointGroupRequest(
            vpn_endpoint_group=pb.VpnEndpointGroup(name="vpnEndpointGroups/peer", display_name="hq"),
            update_mask=mask("display_name"),
        )
    )
    assert group.display_name == "hq" and list(group.endpoints) == ["192.168.0.0/24", "172.16.0.0/16"]
    # delete in order: the connection, then what it used
    alice.DeleteIpsecSiteConnection(pb.DeleteIpsecSiteConnectionRequest(name=CONN))
    alice.DeleteVpnService(pb.DeleteVpnServiceRequest(name="vpnServices/vpn1"))
    alice.DeleteIkePolicy(pb.DeleteIkePolicyRequest(name="ikePolicies/ike1"))
    alice.DeleteIpsecPolicy(pb.DeleteIpsecPolicyRequest(name="ipsecPolicies/ipsec1"))
    for group in ("local", "peer"):
        alice.DeleteVpnEndpointGroup(pb.DeleteVpnEndpointGroupRequest(name=f"vpnEndpointGroups/{group}"))
    topo = server.state.topology
    assert not topo.ipsec_site_connections and not topo.vpn_services and not topo.ike_policies
    assert not topo.ipsec_policies and set(topo.vpn_endpoint_groups) == {"peer2"}
    # the router can lose its gateway again
    update_router(server.api, alice.md, pb.Router(name="routers/r1"), "external_gateway")


def test_validate_only_checks_and_writes_nothing(server: InProcessServer, alice: Vpn) -> None:
    _world(alice)
    rev = server.state.revision
    alice.group("peer2", "cidr", "10.9.0.0/16")
    got = alice.conn("c2", validate_only=True, peer_ep_group="vpnEndpointGroups/peer2")
    assert got.name == "ipsecSiteConnections/c2" and got.psk == "" and got.psk_set
    assert "c2" not in server.state.topology.ipsec_site_connections and server.state.revision == rev + 1
    code, fields, _ = expect_error(
        alice.conn, "c2", validate_only=True, psk="", peer_ep_group="vpnEndpointGroups/peer2"
    )
    assert (code, fields) == (INVALID, ["ipsec_site_connection.psk"])


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kw,field,reason",
    [
        ({"encryption_algorithm": "3des"}, "encryption_algorithm", "UNSUPPORTED_VALUE"),
        ({"encryption_algorithm": "blowfish"}, "encryption_algorithm", "UNSUPPORTED_VALUE"),
        ({"auth_algorithm": "md5"}, "auth_algorithm", "UNSUPPORTED_VALUE"),
        ({"pfs": "group5"}, "pfs", "UNSUPPORTED_VALUE"),
        ({"pfs": "group2"}, "pfs", "UNSUPPORTED_VALUE"),
        ({"ike_version": "v3"}, "ike_version", "UNSUPPORTED_VALUE"),
        ({"phase1_negotiation_mode": "aggressive"}, "phase1_negotiation_mode", "UNSUPPORTED_VALUE"),
        ({"lifetime": 59}, "lifetime", "INVALID_FIELD"),
        ({"lifetime": 86401}, "lifetime", "INVALID_FIELD"),
        (
            {"ike_version": "v1", "encryption_algorithm": "aes-128-gcm-16"},
            "encryption_algorithm",
            "UNSUPPORTED_VALUE",
        ),
        ({"display_name": "x" * 256}, "display_name", "INVALID_FIELD"),
        ({"description": "x" * 256}, "description", "INVALID_FIELD"),
    ],
)
def test_ike_policy_validation(alice: Vpn, kw: dict[str, Any], field: str, reason: str) -> None:
    code, fields, got = expect_error(alice.ike, **kw)
    assert (code, fields, got) == (INVALID, [f"ike_policy.{field}"], reason)


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"transform_protocol": "ah"}, "transform_protocol"),
        ({"encapsulation_mode": "transport"}, "encapsulation_mode"),
        ({"encryption_algorithm": "3des"}, "encryption_algorithm"),
        ({"auth_algorithm": "md5"}, "auth_algorithm"),
        ({"pfs": "group1"}, "pfs"),
        ({"lifetime": 10}, "lifetime"),
    ],
)
def test_ipsec_policy_validation(alice: Vpn, kw: dict[str, Any], field: str) -> None:
    code, fields, _ = expect_error(alice.ipsec, **kw)
    assert (code, fields) == (INVALID, [f"ipsec_policy.{field}"])


def test_weak_algorithms_are_refused_saying_why(alice: Vpn) -> None:
    for kw, why, offered in (
        ({"encryption_algorithm": "3des"}, "Sweet32", "aes-128"),
        ({"pfs": "group5"}, "2048", "group14"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            alice.ike(**kw)
        assert why in info.value.details() and offered in info.value.details()


def test_a_policy_update_is_checked_like_a_create(alice: Vpn) -> None:
    alice.ike()
    code, fields, _ = expect_error(
        alice.UpdateIkePolicy,
        pb.UpdateIkePolicyRequest(
            ike_policy=pb.IkePolicy(name="ikePolicies/ike1", pfs="group2"), update_mask=mask("pfs")
        ),
    )
    assert (code, fields) == (INVALID, ["ike_policy.pfs"])
    code, fields, reason = expect_error(
        alice.UpdateIkePolicy,
        pb.UpdateIkePolicyRequest(
            ike_policy=pb.IkePolicy(name="ikePolicies/ike1", tenant="bob"), update_mask=mask("tenant")
        ),
    )
    assert (code, fields, reason) == (INVALID, ["update_mask"], "IMMUTABLE_FIELD")


def test_vpn_service_validation(server: InProcessServer, alice: Vpn) -> None:
    code, fields, _ = expect_error(alice.service, router="")
    assert (code, fields) == (INVALID, ["vpn_service.router"])
    code, fields, _ = expect_error(alice.service, router="networks/web")
    assert (code, fields) == (INVALID, ["vpn_service.router"])
    code, _f, _r = expect_error(alice.service, router="routers/nope")
    assert code == NOT_FOUND
    make_router(server.api, alice.md, "bare")
    code, fields, reason = expect_error(alice.service, router="routers/bare")
    assert (code, fields, reason) == (PRECONDITION, ["vpn_service.router"], "ROUTER_NO_GATEWAY")
    alice.service()
    code, fields, reason = expect_error(alice.service, "vpn2")
    assert (code, fields, reason) == (PRECONDITION, ["vpn_service.router"], "ROUTER_HAS_VPN_SERVICE")
    code, fields, reason = expect_error(
        alice.UpdateVpnService,
        pb.UpdateVpnServiceRequest(
            vpn_service=pb.VpnService(name="vpnServices/vpn1", router="routers/bare"),
            update_mask=mask("router"),
        ),
    )
    assert (code, fields, reason) == (INVALID, ["update_mask"], "IMMUTABLE_FIELD")
    code, fields, reason = expect_error(
        alice.UpdateVpnService,
        pb.UpdateVpnServiceRequest(
            vpn_service=pb.VpnService(name="vpnServices/vpn1", status="ACTIVE"), update_mask=mask("status")
        ),
    )
    assert (code, fields, reason) == (INVALID, ["update_mask"], "OUTPUT_ONLY_FIELD")


@pytest.mark.parametrize(
    "kind,endpoints,field,code",
    [
        ("", ("10.9.0.0/16",), "type", INVALID),
        ("network", ("10.9.0.0/16",), "type", INVALID),
        ("cidr", (), "endpoints", INVALID),
        ("cidr", ("10.9.0.0/33",), "endpoints[0]", INVALID),
        ("cidr", ("10.9.0.0/16", "10.9.0.1"), "endpoints[1]", INVALID),
        ("cidr", ("10.9.0.0/16", "10.9.1.0/16"), "endpoints[1]", INVALID),  # repeats once normalized
        ("cidr", ("10.9.0.0/16", "fd00::/64"), "endpoints[1]", INVALID),
        ("subnet", ("10.9.0.0/16",), "endpoints[0]", INVALID),  # not a subnet name
        ("subnet", ("subnets/web-v4", "subnets/nope"), "endpoints[1]", NOT_FOUND),
        ("subnet", ("subnets/web-v4", "subnets/web-v4"), "endpoints[1]", INVALID),
    ],
)
def test_endpoint_group_validation(
    alice: Vpn, kind: str, endpoints: tuple[str, ...], field: str, code: grpc.StatusCode
) -> None:
    got, fields, _ = expect_error(alice.group, "g", kind, *endpoints)
    assert (got, fields) == (code, [f"vpn_endpoint_group.{field}"])


def test_endpoint_groups_are_fixed_but_for_their_name(alice: Vpn) -> None:
    alice.group("peer", "cidr", "10.9.0.0/16")
    for path, kw in (("endpoints", {"endpoints": ["10.8.0.0/16"]}), ("type", {"type": "subnet"})):
        code, fields, reason = expect_error(
            alice.UpdateVpnEndpointGroup,
            pb.UpdateVpnEndpointGroupRequest(
                vpn_endpoint_group=pb.VpnEndpointGroup(name="vpnEndpointGroups/peer", **kw),
                update_mask=mask(path),
            ),
        )
        assert (code, fields, reason) == (INVALID, ["update_mask"], "IMMUTABLE_FIELD")


def _base(alice: Vpn) -> None:
    alice.ike()
    alice.ipsec()
    alice.service()
    alice.group("local", "subnet", "subnets/web-v4")
    alice.group("peer", "cidr", "192.168.0.0/24")


@pytest.mark.parametrize(
    "kw,field,code,reason",
    [
        ({"psk": ""}, "psk", INVALID, "PSK_REQUIRED"),
        ({"psk": "a\nb"}, "psk", INVALID, "PSK_INVALID"),
        ({"psk": "k" * 256}, "psk", INVALID, "PSK_INVALID"),
        ({"peer_address": "gw.example.com"}, "peer_address", INVALID, "INVALID_FIELD"),
        ({"peer_address": ""}, "peer_address", INVALID, "INVALID_FIELD"),
        ({"peer_address": "198.51.100.0/24"}, "peer_address", INVALID, "INVALID_FIELD"),
        ({"peer_address": "127.0.0.1"}, "peer_address", INVALID, "INVALID_FIELD"),
        ({"peer_address": "224.0.0.5"}, "peer_address", INVALID, "INVALID_FIELD"),
        ({"peer_address": "2001:db8::1"}, "peer_address", INVALID, "INVALID_FIELD"),  # no IPv6 gateway
        ({"peer_id": "has space"}, "peer_id", INVALID, "INVALID_FIELD"),
        ({"local_id": "quote'd"}, "local_id", INVALID, "INVALID_FIELD"),
        ({"mtu": 67}, "mtu", INVALID, "INVALID_FIELD"),
        ({"mtu": 70000}, "mtu", INVALID, "INVALID_FIELD"),
        ({"dpd_interval": 30, "dpd_timeout": 30}, "dpd_timeout", INVALID, "INVALID_FIELD"),
        ({"dpd_interval": 60, "dpd_timeout": 30}, "dpd_timeout", INVALID, "INVALID_FIELD"),
        ({"dpd_interval": 0}, "dpd_interval", INVALID, "INVALID_FIELD"),
        ({"dpd_action": "explode"}, "dpd_action", INVALID, "UNSUPPORTED_VALUE"),
        ({"initiator": "start"}, "initiator", INVALID, "UNSUPPORTED_VALUE"),
        ({"vpnservice": ""}, "vpnservice", INVALID, "INVALID_FIELD"),
        ({"vpnservice": "vpnServices/nope"}, "vpnservice", NOT_FOUND, "VPN_SERVICE_NOT_FOUND"),
        ({"ikepolicy": "ikePolicies/nope"}, "ikepolicy", NOT_FOUND, "IKE_POLICY_NOT_FOUND"),
        ({"ipsecpolicy": "ikePolicies/ike1"}, "ipsecpolicy", INVALID, "INVALID_FIELD"),
        ({"local_ep_group": "vpnEndpointGroups/peer"}, "local_ep_group", INVALID, "ENDPOINT_GROUP_TYPE"),
        ({"peer_ep_group": "vpnEndpointGroups/local"}, "peer_ep_group", INVALID, "ENDPOINT_GROUP_TYPE"),
        ({"peer_ep_group": "vpnEndpointGroups/overlap"}, "peer_ep_group", INVALID, "OVERLAPPING_CIDR"),
        ({"peer_ep_group": "vpnEndpointGroups/v6"}, "peer_ep_group", INVALID, "IP_VERSION_MISMATCH"),
        (
            {"local_ep_group": "vpnEndpointGroups/off-router"},
            "local_ep_group",
            PRECONDITION,
            "SUBNET_NOT_ON_ROUTER",
        ),
    ],
)
def test_connection_validation(
    alice: Vpn, kw: dict[str, Any], field: str, code: grpc.StatusCode, reason: str
) -> None:
    _base(alice)
    alice.group("overlap", "cidr", "192.168.0.0/16", "10.0.0.128/25")  # the second overlaps web-v4
    alice.group("v6", "cidr", "fd00::/64")
    alice.group("off-router", "subnet", "subnets/web-v4", "subnets/lone-v4")
    got = expect_error(alice.conn, **kw)
    assert got == (code, [f"ipsec_site_connection.{field}"], reason)


def test_peer_cidrs_of_two_connections_of_a_service_must_not_overlap(alice: Vpn) -> None:
    _world(alice)
    alice.group("wider", "cidr", "192.168.0.0/16")
    code, fields, reason = expect_error(alice.conn, "c2", peer_ep_group="vpnEndpointGroups/wider")
    assert (code, fields, reason) == (INVALID, ["ipsec_site_connection.peer_ep_group"], "OVERLAPPING_CIDR")
    alice.group("other", "cidr", "192.169.0.0/16")
    alice.conn("c2", peer_ep_group="vpnEndpointGroups/other", peer_address="198.51.100.8")
    # an update is checked whole too, without comparing the connection with itself
    alice.update_conn("peer_ep_group", peer_ep_group="vpnEndpointGroups/peer")
    code, fields, _ = expect_error(
        alice.update_conn, "peer_ep_group", peer_ep_group="vpnEndpointGroups/other"
    )
    assert (code, fields) == (INVALID, ["ipsec_site_connection.peer_ep_group"])
    code, fields, _ = expect_error(alice.update_conn, "mtu", mtu=10)
    assert (code, fields) == (INVALID, ["ipsec_site_connection.mtu"])
    code, fields, reason = expect_error(alice.update_conn, "psk", psk="")
    assert (code, fields, reason) == (INVALID, ["ipsec_site_connection.psk"], "PSK_REQUIRED")
    for path, kw in (
        ("ikepolicy", {"ikepolicy": "ikePolicies/ike1"}),
        ("vpnservice", {"vpnservice": "vpnServices/vpn1"}),
    ):
        code, fields, reason = expect_error(alice.update_conn, path, **kw)
        assert (code, fields, reason) == (INVALID, ["update_mask"], "IMMUTABLE_FIELD")
    for path in ("status", "status_reason", "psk_set"):
        code, fields, reason = expect_error(alice.update_conn, path)
        assert (code, fields, reason) == (INVALID, ["update_mask"], "OUTPUT_ONLY_FIELD")


# ---------------------------------------------------------------------------------------------- in use


def test_what_a_connection_uses_cannot_go(alice: Vpn) -> None:
    _world(alice)
    for delete, request, reason in (
        (alice.DeleteIkePolicy, pb.DeleteIkePolicyRequest(name="ikePolicies/ike1"), "IKE_POLICY_IN_USE"),
        (
            alice.DeleteIpsecPolicy,
            pb.DeleteIpsecPolicyRequest(name="ipsecPolicies/ipsec1"),
            "IPSEC_POLICY_IN_USE",
        ),
        (alice.DeleteVpnService, pb.DeleteVpnServiceRequest(name="vpnServices/vpn1"), "VPN_SERVICE_IN_USE"),
        (
            alice.DeleteVpnEndpointGroup,
            pb.DeleteVpnEndpointGroupRequest(name="vpnEndpointGroups/local"),
            "VPN_ENDPOINT_GROUP_IN_USE",
        ),
        (
            alice.DeleteVpnEndpointGroup,
            pb.DeleteVpnEndpointGroupRequest(name="vpnEndpointGroups/peer"),
            "VPN_ENDPOINT_GROUP_IN_USE",
        ),
    ):
        code, _f, got = expect_error(delete, request)
        assert (code, got) == (PRECONDITION, reason)


def test_a_vpn_service_keeps_its_router_gateway_and_local_interfaces(
    server: InProcessServer, alice: Vpn
) -> None:
    api = server.api
    _world(alice)
    code, fields, reason = expect_error(
        update_router, api, alice.md, pb.Router(name="routers/r1"), "external_gateway"
    )
    assert (code, fields, reason) == (PRECONDITION, ["router.external_gateway"], "ROUTER_GATEWAY_IN_USE")
    external(api, "198.51.100.0/25", "public2")
    moved = pb.Router(name="routers/r1", external_gateway=pb.ExternalGateway(network="networks/public2"))
    code, _f, reason = expect_error(update_router, api, alice.md, moved, "external_gateway")
    assert (code, reason) == (PRECONDITION, "ROUTER_GATEWAY_IN_USE")
    readdress = pb.Router(
        name="routers/r1",
        external_gateway=pb.ExternalGateway(
            network="networks/public", fixed_ip=pb.FixedIp(ip_address="203.0.113.77")
        ),
    )
    code, _f, reason = expect_error(update_router, api, alice.md, readdress, "external_gateway")
    assert (code, reason) == (PRECONDITION, "ROUTER_GATEWAY_IN_USE")
    for force in (False, True):
        code, _f, reason = expect_error(
            api.stub.DeleteRouter, pb.DeleteRouterRequest(name="routers/r1", force=force), metadata=alice.md
        )
        assert (code, reason) == (PRECONDITION, "ROUTER_IN_USE")
    # web-v4 is a local subnet of c1: its interface stays; db-v4 is in no connection's group: it may go
    code, _f, reason = expect_error(remove_iface, api, alice.md, "routers/r1", subnet="subnets/web-v4")
    assert (code, reason) == (PRECONDITION, "ROUTER_INTERFACE_IN_USE")
    remove_iface(api, alice.md, "routers/r1", subnet="subnets/db-v4")
    # a subnet named by an endpoint group cannot be deleted (nor its network), even unused by connections
    alice.group("lonely", "subnet", "subnets/lone-v4")
    code, _f, reason = expect_error(
        api.stub.DeleteSubnet, pb.DeleteSubnetRequest(name="subnets/lone-v4", force=True), metadata=alice.md
    )
    assert (code, reason) == (PRECONDITION, "SUBNET_IN_USE")
    code, _f, reason = expect_error(
        api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name="networks/lone", force=True), metadata=alice.md
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    # with the connection and service gone, all of it may go
    alice.DeleteIpsecSiteConnection(pb.DeleteIpsecSiteConnectionRequest(name=CONN))
    remove_iface(api, alice.md, "routers/r1", subnet="subnets/web-v4")
    alice.DeleteVpnService(pb.DeleteVpnServiceRequest(name="vpnServices/vpn1"))
    update_router(api, alice.md, pb.Router(name="routers/r1"), "external_gateway")
    alice.DeleteVpnEndpointGroup(pb.DeleteVpnEndpointGroupRequest(name="vpnEndpointGroups/lonely"))
    api.stub.DeleteSubnet(pb.DeleteSubnetRequest(name="subnets/lone-v4"), metadata=alice.md)


# ---------------------------------------------------------------------------------------------- tenants


def test_tenants_see_and_reference_only_their_own(server: InProcessServer, alice: Vpn, bob: Vpn) -> None:
    _world(alice)
    for get, name in (
        (bob.GetIkePolicy, "ikePolicies/ike1"),
        (bob.GetIpsecPolicy, "ipsecPolicies/ipsec1"),
        (bob.GetVpnService, "vpnServices/vpn1"),
        (bob.GetVpnEndpointGroup, "vpnEndpointGroups/local"),
        (bob.GetIpsecSiteConnection, CONN),
    ):
        request_cls = {
            "ikePolicies": pb.GetIkePolicyRequest,
            "ipsecPolicies": pb.GetIpsecPolicyRequest,
            "vpnServices": pb.GetVpnServiceRequest,
            "vpnEndpointGroups": pb.GetVpnEndpointGroupRequest,
            "ipsecSiteConnections": pb.GetIpsecSiteConnectionRequest,
        }[name.split("/")[0]]
        code, _f, _r = expect_error(get, request_cls(name=name))
        assert code == NOT_FOUND
    assert not bob.ListIpsecSiteConnections(pb.ListIpsecSiteConnectionsRequest()).ipsec_site_connections
    assert not bob.ListVpnServices(pb.ListVpnServicesRequest()).vpn_services
    assert not bob.ListIkePolicies(pb.ListIkePoliciesRequest()).ike_policies
    # bob cannot change or delete alice's, and cannot name them
    code, _f, _r = expect_error(bob.DeleteIkePolicy, pb.DeleteIkePolicyRequest(name="ikePolicies/ike1"))
    assert code == NOT_FOUND
    code, _f, _r = expect_error(bob.update_conn, "psk", psk="stolen-key")
    assert code == NOT_FOUND
    assert server.state.topology.ipsec_site_connections["c1"].psk == PSK
    code, fields, _ = expect_error(bob.service, "bvpn", router="routers/r1")
    assert (code, fields) == (NOT_FOUND, ["vpn_service.router"])
    code, fields, _ = expect_error(bob.group, "bg", "subnet", "subnets/web-v4")
    assert (code, fields) == (NOT_FOUND, ["vpn_endpoint_group.endpoints[0]"])
    bob.ike("b-ike")
    bob.ipsec("b-ipsec")
    bob.service("b-vpn", router="routers/b-r1")
    bob.group("b-local", "subnet", "subnets/b-web-v4")
    bob.group("b-peer", "cidr", "192.168.0.0/24")  # the same CIDR as alice's peer: tenants are apart
    mine = {
        "vpnservice": "vpnServices/b-vpn",
        "ikepolicy": "ikePolicies/b-ike",
        "ipsecpolicy": "ipsecPolicies/b-ipsec",
        "local_ep_group": "vpnEndpointGroups/b-local",
        "peer_ep_group": "vpnEndpointGroups/b-peer",
    }
    for field, theirs in (
        ("vpnservice", "vpnServices/vpn1"),
        ("ikepolicy", "ikePolicies/ike1"),
        ("ipsecpolicy", "ipsecPolicies/ipsec1"),
        ("local_ep_group", "vpnEndpointGroups/local"),
        ("peer_ep_group", "vpnEndpointGroups/peer"),
    ):
        code, fields, _ = expect_error(bob.conn, "bc", **{**mine, field: theirs})
        assert (code, fields) == (NOT_FOUND, [f"ipsec_site_connection.{field}"]), field
    got = bob.conn("bc", **mine)
    assert got.tenant == "bob" and got.status == "PENDING_CREATE"
    # alice's in-use refusal never names bob's objects (and bob's never alice's)
    with pytest.raises(grpc.RpcError) as info:
        alice.DeleteIkePolicy(pb.DeleteIkePolicyRequest(name="ikePolicies/ike1"))
    assert "bc" not in info.value.details() and "b-" not in info.value.details()
    # the operator sees both and may act for a tenant
    admin = Vpn(server.api, server.api.admin)
    names = {
        c.name
        for c in admin.ListIpsecSiteConnections(pb.ListIpsecSiteConnectionsRequest()).ipsec_site_connections
    }
    assert names == {CONN, "ipsecSiteConnections/bc"}
    made = admin.ike("for-bob", tenant="bob")
    assert made.tenant == "bob"
    # acting for bob, the operator's references are checked against bob's records
    code, fields, _ = expect_error(admin.conn, "bc2", **{**mine, "ikepolicy": "ikePolicies/ike1"})
    assert (code, fields) == (NOT_FOUND, ["ipsec_site_connection.ikepolicy"])
    # Watch: bob's stream carries none of alice's VPN objects (snapshot and replay)
    names = {
        getattr(e, e.WhichOneof("resource")).name
        for e in _watch(server.api, bob.md, 0) + _watch(server.api, bob.md, 1)
        if e.WhichOneof("resource")
    }
    assert "ipsecSiteConnections/bc" in names and "vpnServices/b-vpn" in names
    assert not names & {CONN, "vpnServices/vpn1", "ikePolicies/ike1", "vpnEndpointGroups/local"}
    code, fields, _ = expect_error(alice.ike, "x", tenant="bob")
    assert (code, fields) == (grpc.StatusCode.PERMISSION_DENIED, ["ike_policy.tenant"])


# ---------------------------------------------------------------------------------------------- etags, statuses


def test_etags_guard_updates_and_deletes(alice: Vpn) -> None:
    _world(alice)
    conn = alice.get_conn()
    alice.update_conn("mtu", mtu=1400, etag=conn.etag)
    code, fields, reason = expect_error(alice.update_conn, "mtu", mtu=1300, etag=conn.etag)
    assert (code, fields, reason) == (ABORTED, ["ipsec_site_connection.etag"], "ETAG_MISMATCH")
    code, _f, reason = expect_error(
        alice.DeleteIpsecSiteConnection, pb.DeleteIpsecSiteConnectionRequest(name=CONN, etag=conn.etag)
    )
    assert (code, reason) == (ABORTED, "ETAG_MISMATCH")
    now = alice.get_conn()
    alice.DeleteIpsecSiteConnection(pb.DeleteIpsecSiteConnectionRequest(name=CONN, etag=now.etag))
    ike = alice.GetIkePolicy(pb.GetIkePolicyRequest(name="ikePolicies/ike1"))
    code, _f, reason = expect_error(
        alice.DeleteIkePolicy, pb.DeleteIkePolicyRequest(name="ikePolicies/ike1", etag=str(ike.revision + 1))
    )
    assert (code, reason) == (ABORTED, "ETAG_MISMATCH")


def test_statuses_are_the_controllers(server: InProcessServer, alice: Vpn) -> None:
    _world(alice)
    state = server.state
    state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ACTIVE", "", r, n))
    conn = alice.get_conn()
    assert (conn.status, conn.status_reason, alice.service_status()) == ("ACTIVE", "", "ACTIVE")
    state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "DOWN", "authentication failed", r, n))
    conn = alice.get_conn()
    assert (conn.status, conn.status_reason, alice.service_status()) == (
        "DOWN",
        "authentication failed",
        "DOWN",
    )
    # a connection taken down by its owner is DOWN at once, whatever the daemon says after
    conn = alice.update_conn("admin_state_up", admin_state_up=False)
    assert (conn.status, conn.status_reason) == ("DOWN", ops_vpn.ADMIN_DOWN_REASON)
    state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ACTIVE", "", r, n))
    assert alice.get_conn().status == "DOWN"
    conn = alice.update_conn("admin_state_up", admin_state_up=True)
    assert (conn.status, alice.service_status()) == ("PENDING_CREATE", "PENDING_CREATE")
    # the service's admin state takes its connections down with it
    state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ACTIVE", "", r, n))
    svc = alice.UpdateVpnService(
        pb.UpdateVpnServiceRequest(
            vpn_service=pb.VpnService(name="vpnServices/vpn1", admin_state_up=False),
            update_mask=mask("admin_state_up"),
        )
    )
    assert svc.status == "DOWN" and alice.get_conn().status == "DOWN"
    svc = alice.UpdateVpnService(
        pb.UpdateVpnServiceRequest(
            vpn_service=pb.VpnService(name="vpnServices/vpn1", admin_state_up=True),
            update_mask=mask("admin_state_up"),
        )
    )
    assert svc.status == "PENDING_CREATE" and alice.get_conn().status == "PENDING_CREATE"
    # a connection made administratively down starts DOWN; ERROR is reported as such
    alice.group("peer2", "cidr", "10.77.0.0/16")
    c2 = alice.conn("c2", peer_ep_group="vpnEndpointGroups/peer2", admin_state_up=False)
    assert (c2.status, c2.status_reason) == ("DOWN", ops_vpn.ADMIN_DOWN_REASON)
    state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ERROR", "charon failed", r, n))
    assert alice.service_status() == "ERROR"
    # deleting the connections leaves the service waiting for one
    for name in (CONN, "ipsecSiteConnections/c2"):
        alice.DeleteIpsecSiteConnection(pb.DeleteIpsecSiteConnectionRequest(name=name))
    assert alice.service_status() == "PENDING_CREATE"


# ---------------------------------------------------------------------------------------------- the PSK


def _watch(api: Api, md: Any, start: int) -> list[pb.WatchEvent]:
    events = []
    stream = api.stub.Watch(pb.WatchRequest(start_revision=start), metadata=md)
    for event in stream:
        if event.type == pb.WatchEvent.SYNCED:
            break
        events.append(event)
    stream.cancel()
    return events


def test_the_psk_is_never_returned_watched_logged_or_echoed(
    server: InProcessServer, alice: Vpn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = server.api
    head = server.state.revision
    _world(alice)
    seen: list[bytes] = []
    seen.append(alice.get_conn().SerializeToString())
    seen.append(alice.update_conn("psk", psk=PSK + "-2").SerializeToString())
    seen += [
        c.SerializeToString()
        for c in alice.ListIpsecSiteConnections(pb.ListIpsecSiteConnectionsRequest()).ipsec_site_connections
    ]
    alice.group("peer3", "cidr", "10.33.0.0/16")
    seen.append(
        alice.conn("c3", validate_only=True, peer_ep_group="vpnEndpointGroups/peer3").SerializeToString()
    )
    server.state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ACTIVE", "", r, n))
    # every refusal of a request carrying the key: none echoes it, in the message or the details
    for kw, field in (
        ({"mtu": 1}, "mtu"),
        ({"psk": PSK + "\x01"}, "psk"),
        ({"psk": PSK * 20}, "psk"),
        ({"peer_address": "not-an-ip"}, "peer_address"),
        ({"peer_ep_group": "vpnEndpointGroups/peer"}, "peer_ep_group"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            alice.conn("c9", **{"psk": PSK, "peer_ep_group": "vpnEndpointGroups/peer3", **kw})
        err = info.value
        text = err.details() + repr(err.trailing_metadata())  # type: ignore[attr-defined]
        assert PSK not in text and PSK[:8] not in text, kw
        assert details(err)[1] == [f"ipsec_site_connection.{field}"]
    with pytest.raises(grpc.RpcError) as info:
        alice.update_conn("peer_id", "psk", peer_id="bad id", psk=PSK)
    assert PSK not in info.value.details() and details(info.value)[1] == ["ipsec_site_connection.peer_id"]
    # Watch: replayed changes and a snapshot, as the owner and as the operator
    for md in (alice.md, api.admin):
        for event in _watch(api, md, head) + _watch(api, md, 0):
            seen.append(event.SerializeToString())
            if event.WhichOneof("resource") == "ipsec_site_connection":
                assert event.ipsec_site_connection.psk == "" and event.ipsec_site_connection.psk_set
    blob = b"".join(seen)
    assert b"ipsecSiteConnections/c1" in blob
    assert PSK.encode() not in blob
    assert PSK not in caplog.text and PSK[:8] not in caplog.text
    assert PSK not in repr(server.state.topology.ipsec_site_connections["c1"])
    assert server.state.topology.ipsec_site_connections["c1"].psk == PSK + "-2"  # the realization's to use


def test_watch_carries_every_vpn_kind(server: InProcessServer, alice: Vpn) -> None:
    head = server.state.revision
    _world(alice)
    server.state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "ACTIVE", "", r, n))
    kinds = [(e.type, e.WhichOneof("resource")) for e in _watch(server.api, alice.md, head)]
    created, updated = pb.WatchEvent.CREATED, pb.WatchEvent.UPDATED
    assert kinds == [
        (created, "ike_policy"),
        (created, "ipsec_policy"),
        (created, "vpn_service"),
        (created, "vpn_endpoint_group"),
        (created, "vpn_endpoint_group"),
        (created, "ipsec_site_connection"),
        (updated, "ipsec_site_connection"),
        (updated, "vpn_service"),
    ]
    existing = {e.WhichOneof("resource") for e in _watch(server.api, alice.md, 0)}
    assert {
        "ike_policy",
        "ipsec_policy",
        "vpn_service",
        "vpn_endpoint_group",
        "ipsec_site_connection",
    } <= existing


# ---------------------------------------------------------------------------------------------- the store


def test_vpn_objects_survive_a_reload(server: InProcessServer, alice: Vpn) -> None:
    _world(alice)
    server.state.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "c1", "DOWN", "peer unreachable", r, n))
    before = server.state.topology
    again = State(Path(server.data_dir) / "topology.sqlite")
    try:
        after = again.topology
        assert after.revision == before.revision
        for table in (
            "ike_policies",
            "ipsec_policies",
            "vpn_services",
            "vpn_endpoint_groups",
            "ipsec_site_connections",
        ):
            assert getattr(after, table) == getattr(before, table), table
        assert after.ipsec_site_connections["c1"].status_reason == "peer unreachable"
        assert after.ipsec_site_connections["c1"].psk == PSK
        assert after.router_vpn == before.router_vpn == {"r1": "vpn1"}
        assert after.vpn_users == before.vpn_users and after.subnet_epgs == before.subnet_epgs
        assert set(after.graph.edges) == set(before.graph.edges)
    finally:
        again.close()


# ---------------------------------------------------------------------------------------------- in an Apply


def test_a_vpn_in_an_apply_document(server: InProcessServer, alice: Vpn) -> None:
    """The VPN kinds go through Apply like every table (after the router they use): one write, the same
    document again is an empty plan, an update of one field is one change, and the PSK is never exported."""
    from proto.sdn.v1 import apply_pb2 as apb
    from tests.test_api_apply import applier
    from tests.test_api_apply import apply as apply_doc

    api = server.api
    doc = {
        "ipsec_site_connections": [
            {
                "name": "hq",
                "vpnservice": "vpnServices/edge",
                "ikepolicy": "ikePolicies/ike",
                "ipsecpolicy": "ipsecPolicies/esp",
                "local_ep_group": "vpnEndpointGroups/here",
                "peer_ep_group": "vpnEndpointGroups/there",
                "peer_address": "198.51.100.7",
                "psk": "s3cret-key",
            }
        ],
        "vpn_endpoint_groups": [
            {"name": "here", "type": "subnet", "endpoints": ["subnets/web-v4"]},
            {"name": "there", "type": "cidr", "endpoints": ["192.168.0.0/24"]},
        ],
        "vpn_services": [{"name": "edge", "router": "routers/r1"}],
        "ike_policies": [{"name": "ike"}],
        "ipsec_policies": [{"name": "esp"}],
    }
    before = revision_of(api, alice.md)
    out = apply_doc(api, alice.md, doc)
    assert len(out.changes) == 6 and revision_of(api, alice.md) == before + 1
    conn = alice.get_conn("ipsecSiteConnections/hq")
    assert conn.psk == "" and conn.psk_set and conn.peer_address == "198.51.100.7"
    assert not apply_doc(api, alice.md, doc).changes  # the PSK it gives is not a change (write-only)
    doc["ipsec_site_connections"][0]["mtu"] = 1400
    assert [c.name for c in apply_doc(api, alice.md, doc).changes] == ["ipsecSiteConnections/hq"]
    assert "s3cret" not in str(out)
    # a new key is a change, shown as <secret> (never the key), and stored
    doc["ipsec_site_connections"][0]["psk"] = "another-key"
    out = apply_doc(api, alice.md, doc)
    ((change,),) = [list(c.fields) for c in out.changes]
    assert (change.field, change.before, change.after) == ("psk", '"<secret>"', '"<secret>"')
    assert "another-key" not in str(out)
    assert server.state.topology.ipsec_site_connections["hq"].psk == "another-key"
    # export leaves the key out, and applying the export changes nothing
    exported = applier(api).Export(apb.ExportRequest(), metadata=alice.md)
    assert "another-key" not in str(exported) and "psk" not in str(exported.document)
    again = applier(api).Apply(apb.ApplyRequest(document=exported.document), metadata=alice.md)
    assert not again.changes


def revision_of(api: Api, md: Any) -> int:
    return int(api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision)


def test_ipv6_endpoints_are_refused_not_left_pending(api: Api, alice: Vpn) -> None:
    """Tunnels are realized for IPv4 subnets only: IPv6 local subnets and peer CIDRs are refused with
    FAILED_PRECONDITION naming the group, never accepted and left PENDING_CREATE."""
    _base(alice)
    make_subnet(api, alice.md, "networks/web", "2001:db8:5::/64", "web-v6")
    add_iface(api, alice.md, "routers/r1", subnet="subnets/web-v6")
    alice.group("local6", "subnet", "subnets/web-v6")
    alice.group("peer6", "cidr", "2001:db8:99::/64")
    got = expect_error(
        alice.conn, local_ep_group="vpnEndpointGroups/local6", peer_ep_group="vpnEndpointGroups/peer6"
    )
    assert got == (PRECONDITION, ["ipsec_site_connection.peer_ep_group"], "IPV6_VPN_NOT_SUPPORTED")
    assert (
        list(alice.ListIpsecSiteConnections(pb.ListIpsecSiteConnectionsRequest()).ipsec_site_connections)
        == []
    )
