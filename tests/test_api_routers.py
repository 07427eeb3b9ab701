"""Routers, router interfaces, static routes and floating IPs through a real channel: happy paths, every
error code with the field it names, tenant scoping, validate_only, Watch, and reload from the store."""

from __future__ import annotations

from pathlib import Path

import grpc
import netaddr
import pytest
from google.protobuf import field_mask_pb2

from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import Api, InProcessServer
from tests.test_api import expect_error, make_net, make_port, make_subnet
from topology.records import OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE
from topology.state import State

Md = tuple[tuple[str, str], ...]
INVALID, NOT_FOUND, EXISTS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
)
PRECONDITION, EXHAUSTED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def external(api: Api, cidr: str = "203.0.113.0/24", ident: str = "public") -> tuple[pb.Network, pb.Subnet]:
    net = make_net(
        api, api.admin, ident, segment_type=pb.Network.FLAT, physical_network=f"ext-{ident}", external=True
    )
    return net, make_subnet(api, api.admin, net.name, cidr, f"{ident}-sub")


def make_router(
    api: Api, md: Md, ident: str = "", gateway: str = "", validate_only: bool = False, **kw
) -> pb.Router:  # type: ignore[no-untyped-def]
    router = pb.Router(**kw)
    if gateway:
        router.external_gateway.network = gateway
    return api.stub.CreateRouter(
        pb.CreateRouterRequest(router=router, router_id=ident, validate_only=validate_only), metadata=md
    )


def add_iface(
    api: Api, md: Md, router: str, subnet: str = "", port: str = "", validate_only: bool = False
) -> pb.RouterInterface:
    req = pb.AddRouterInterfaceRequest(name=router, validate_only=validate_only)
    if subnet:
        req.subnet = subnet
    if port:
        req.port = port
    return api.stub.AddRouterInterface(req, metadata=md)


def remove_iface(api: Api, md: Md, router: str, subnet: str = "", port: str = "") -> pb.RouterInterface:
    req = pb.RemoveRouterInterfaceRequest(name=router)
    if subnet:
        req.subnet = subnet
    if port:
        req.port = port
    return api.stub.RemoveRouterInterface(req, metadata=md)


def make_fip(
    api: Api, md: Md, network: str, ident: str = "", validate_only: bool = False, **kw
) -> pb.FloatingIp:  # type: ignore[no-untyped-def]
    return api.stub.CreateFloatingIp(
        pb.CreateFloatingIpRequest(
            floating_ip=pb.FloatingIp(floating_network=network, **kw),
            floating_ip_id=ident,
            validate_only=validate_only,
        ),
        metadata=md,
    )


def get_router(api: Api, md: Md, name: str) -> pb.Router:
    return api.stub.GetRouter(pb.GetRouterRequest(name=name), metadata=md)


def get_fip(api: Api, md: Md, name: str) -> pb.FloatingIp:
    return api.stub.GetFloatingIp(pb.GetFloatingIpRequest(name=name), metadata=md)


def update_router(api: Api, md: Md, router: pb.Router, *paths: str, validate_only: bool = False) -> pb.Router:
    return api.stub.UpdateRouter(
        pb.UpdateRouterRequest(router=router, update_mask=mask(*paths), validate_only=validate_only),
        metadata=md,
    )


def update_fip(
    api: Api, md: Md, name: str, port: str = "", fixed_ip: str = "", paths: tuple[str, ...] = ("port",)
) -> pb.FloatingIp:
    return api.stub.UpdateFloatingIp(
        pb.UpdateFloatingIpRequest(
            floating_ip=pb.FloatingIp(name=name, port=port, fixed_ip_address=fixed_ip),
            update_mask=mask(*paths),
        ),
        metadata=md,
    )


def ports_on(api: Api, network: str) -> list[pb.Port]:
    return list(api.stub.ListPorts(pb.ListPortsRequest(network=network), metadata=api.admin).ports)


def revision(api: Api) -> int:
    return int(api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision)


@pytest.fixture
def alice(api: Api) -> Md:
    return api.md(api.tenant_token("alice"))


@pytest.fixture
def bob(api: Api) -> Md:
    return api.md(api.tenant_token("bob"))


def tenant_world(api: Api, md: Md, prefix: str = "") -> tuple[pb.Router, dict[str, pb.Subnet]]:
    """Two tenant networks 10.1.0.0/24 and 10.2.0.0/24, and a router with the gateway on "public"."""
    subs = {}
    for name, cidr in (("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")):
        net = make_net(api, md, f"{prefix}{name}")
        subs[name] = make_subnet(api, md, net.name, cidr, f"{prefix}{name}-sub")
    return make_router(api, md, f"{prefix}r", gateway="networks/public"), subs


# ---------------------------------------------------------------------------------------------- routers


def test_router_lifecycle_and_gateway(api: Api, alice: Md) -> None:
    ext, ext_sub = external(api)
    net = make_net(api, alice, "web")
    router = make_router(api, alice, "r1", gateway=ext.name, display_name="edge")
    assert router.name == "routers/r1" and router.tenant == "alice" and router.display_name == "edge"
    assert router.admin_state_up and not router.interfaces and not router.routes and router.revision > 0
    assert router.tunnel_key and router.tunnel_key != net.tunnel_key and router.tunnel_key != ext.tunnel_key
    gw = router.external_gateway
    assert gw.network == ext.name and gw.enable_snat and gw.port.startswith("ports/")
    assert (gw.fixed_ip.subnet, gw.fixed_ip.ip_address) == (ext_sub.name, "203.0.113.2")
    assert get_router(api, alice, router.name) == router
    assert [r.name for r in api.stub.ListRouters(pb.ListRoutersRequest(), metadata=alice).routers] == [
        router.name
    ]
    # the gateway port: on the external network, owned by the router, the operator's (not the tenant's) to see
    port = api.stub.GetPort(pb.GetPortRequest(name=gw.port), metadata=api.admin)
    assert (port.network, port.device_owner, port.device_id) == (ext.name, OWNER_ROUTER_GATEWAY, "r1")
    code, _, _ = expect_error(api.stub.GetPort, pb.GetPortRequest(name=gw.port), metadata=alice)
    assert code == NOT_FOUND

    # AIP-134: what Get returned, sent back with an empty mask, changes nothing but the revision
    same_again = api.stub.UpdateRouter(pb.UpdateRouterRequest(router=router), metadata=alice)
    assert same_again.external_gateway == router.external_gateway and same_again.revision > router.revision
    router = same_again
    upd = update_router(
        api,
        alice,
        pb.Router(name=router.name, display_name="core", admin_state_up=False),
        "display_name",
        "admin_state_up",
    )
    assert (upd.display_name, upd.admin_state_up, upd.revision > router.revision) == ("core", False, True)
    # same network: SNAT off keeps the port and its address; another address moves it
    same = pb.Router(name=router.name)
    same.external_gateway.network = ext.name
    same.external_gateway.enable_snat = False
    upd = update_router(api, alice, same, "external_gateway")
    assert not upd.external_gateway.enable_snat and upd.external_gateway.port == gw.port
    assert upd.external_gateway.fixed_ip.ip_address == "203.0.113.2"
    same.external_gateway.fixed_ip.ip_address = "203.0.113.50"
    upd = update_router(api, alice, same, "external_gateway")
    assert upd.external_gateway.port == gw.port and upd.external_gateway.fixed_ip.ip_address == "203.0.113.50"
    # clear: the port goes; set again: a new one
    upd = update_router(api, alice, pb.Router(name=router.name), "external_gateway")
    assert not upd.HasField("external_gateway") and not ports_on(api, ext.name)
    upd = update_router(
        api,
        alice,
        pb.Router(
            name=router.name,
            external_gateway=pb.ExternalGateway(
                network=ext.name, fixed_ip=pb.FixedIp(ip_address="203.0.113.9")
            ),
        ),
        "external_gateway",
    )
    assert upd.external_gateway.fixed_ip.ip_address == "203.0.113.9" and upd.external_gateway.enable_snat
    # change: to another external network, a new gateway port there, none left on the first
    other, other_sub = external(api, "198.51.100.0/24", "public2")
    moved = update_router(
        api,
        alice,
        pb.Router(name=router.name, external_gateway=pb.ExternalGateway(network=other.name)),
        "external_gateway",
    )
    assert (
        moved.external_gateway.network == other.name
        and moved.external_gateway.port != upd.external_gateway.port
    )
    assert (moved.external_gateway.fixed_ip.subnet, moved.external_gateway.fixed_ip.ip_address) == (
        other_sub.name,
        "198.51.100.2",
    )
    assert not ports_on(api, ext.name) and [p.device_id for p in ports_on(api, other.name)] == ["r1"]
    # a router without a gateway
    plain = make_router(api, alice)
    assert not plain.HasField("external_gateway") and plain.name.startswith("routers/")
    api.stub.DeleteRouter(pb.DeleteRouterRequest(name=router.name), metadata=alice)
    code, _, reason = expect_error(get_router, api, alice, router.name)
    assert (code, reason) == (NOT_FOUND, "ROUTER_NOT_FOUND")
    assert not ports_on(api, ext.name)  # the gateway port went with it


def test_router_errors_name_the_field(api: Api, alice: Md, bob: Md) -> None:
    ext, _ = external(api, "203.0.113.0/29")  # .2-.6 allocatable
    own = make_net(api, alice, "own")
    bobs = make_net(api, bob, "bobs")
    make_router(api, alice, "taken")
    cases = [
        ({"gateway": own.name}, INVALID, ["router.external_gateway.network"], "NOT_EXTERNAL_NETWORK"),
        ({"gateway": "bad name"}, INVALID, ["router.external_gateway.network"], "INVALID_FIELD"),
        (
            {"routes": [pb.HostRoute(destination="10.9.0.0/16", nexthop="10.0.0.1")]},
            INVALID,
            ["router.routes[0].nexthop"],
            "NEXTHOP_NOT_CONNECTED",
        ),  # a new router has no interface subnet yet
        ({"display_name": "x" * 300}, INVALID, ["router.display_name"], "INVALID_FIELD"),
        ({"ident": "Bad_Id"}, INVALID, ["router_id"], "INVALID_FIELD"),
        ({"ident": "taken"}, EXISTS, [], "ROUTER_EXISTS"),
        ({"tenant": "bob"}, grpc.StatusCode.PERMISSION_DENIED, ["router.tenant"], "ADMIN_ONLY"),
    ]
    for kwargs, code, fields, reason in cases:
        assert expect_error(make_router, api, alice, **kwargs) == (code, fields, reason), kwargs
    code, _, reason = expect_error(make_router, api, alice, gateway=bobs.name)
    assert (code, reason) == (NOT_FOUND, "NETWORK_NOT_FOUND")
    for ip, code, reason in [
        ("198.51.100.1", INVALID, "INVALID_FIELD"),
        ("203.0.113.1", INVALID, "INVALID_FIELD"),
        ("nope", INVALID, "INVALID_FIELD"),
    ]:
        got = expect_error(
            api.stub.CreateRouter,
            pb.CreateRouterRequest(
                router=pb.Router(
                    external_gateway=pb.ExternalGateway(network=ext.name, fixed_ip=pb.FixedIp(ip_address=ip))
                )
            ),
            metadata=alice,
        )
        assert got == (code, ["router.external_gateway.fixed_ip.ip_address"], reason), ip
    first = make_router(api, alice, gateway=ext.name)
    used = first.external_gateway.fixed_ip.ip_address
    got = expect_error(
        api.stub.CreateRouter,
        pb.CreateRouterRequest(
            router=pb.Router(
                external_gateway=pb.ExternalGateway(network=ext.name, fixed_ip=pb.FixedIp(ip_address=used))
            )
        ),
        metadata=alice,
    )
    assert got == (EXISTS, ["router.external_gateway.fixed_ip.ip_address"], "IP_ADDRESS_IN_USE")
    for _ in range(4):
        make_router(api, alice, gateway=ext.name)
    assert expect_error(make_router, api, alice, gateway=ext.name) == (EXHAUSTED, [], "IP_POOL_EXHAUSTED")
    # update masks
    for paths, reason in [
        (["tenant"], "IMMUTABLE_FIELD"),
        (["tunnel_key"], "OUTPUT_ONLY_FIELD"),
        (["interfaces"], "OUTPUT_ONLY_FIELD"),
        (["colour"], "UNKNOWN_FIELD"),
    ]:
        got = expect_error(update_router, api, alice, pb.Router(name=first.name), *paths)
        assert got == (INVALID, ["update_mask"], reason), paths
    bad = pb.Router(name=first.name, external_gateway=pb.ExternalGateway(network=own.name))
    assert expect_error(update_router, api, alice, bad, "external_gateway") == (
        INVALID,
        ["router.external_gateway.network"],
        "NOT_EXTERNAL_NETWORK",
    )
    code, _, _ = expect_error(get_router, api, alice, "routers/nope")
    assert code == NOT_FOUND
    code, fields, _ = expect_error(get_router, api, alice, "networks/x")
    assert (code, fields) == (INVALID, ["name"])
    assert len(api.stub.ListRouters(pb.ListRoutersRequest(), metadata=alice).routers) == 6


# ---------------------------------------------------------------------------------------------- interfaces


def test_interfaces_by_subnet_and_by_port(server: InProcessServer, alice: Md) -> None:
    api = server.api
    external(api)
    router, subs = tenant_world(api, alice)
    iface = add_iface(api, alice, router.name, subnet=subs["a"].name)
    assert (iface.router, iface.subnet, iface.network, iface.ip_address) == (
        router.name,
        subs["a"].name,
        "networks/a",
        "10.1.0.1",
    )
    port = api.stub.GetPort(pb.GetPortRequest(name=iface.port), metadata=alice)
    assert (port.device_owner, port.device_id, port.tenant) == (OWNER_ROUTER_INTERFACE, "r", "alice")
    assert [(f.subnet, f.ip_address) for f in port.fixed_ips] == [(subs["a"].name, "10.1.0.1")]
    # by port: an unused port of the tenant becomes the interface, with its own address
    mine = make_port(api, alice, "networks/b", "b-router", fixed_ips=[pb.FixedIp(ip_address="10.2.0.254")])
    by_port = add_iface(api, alice, router.name, port=mine.name)
    assert (by_port.port, by_port.subnet, by_port.ip_address) == (mine.name, subs["b"].name, "10.2.0.254")
    got = get_router(api, alice, router.name)
    assert {(i.subnet, i.ip_address, i.port) for i in got.interfaces} == {
        (subs["a"].name, "10.1.0.1", iface.port),
        (subs["b"].name, "10.2.0.254", mine.name),
    }
    assert got.revision > router.revision
    topo = server.state.topology
    assert topo.routers_of("a") == {"r"} and topo.routers_of("b") == {"r"}
    assert {p.id for p in topo.router_ports("r")} >= {iface.port.split("/")[1], "b-router"}
    # remove (by subnet, by port): the interface ports are deleted
    removed = remove_iface(api, alice, router.name, subnet=subs["a"].name)
    assert removed.port == iface.port
    remove_iface(api, alice, router.name, port=mine.name)
    for name in (iface.port, mine.name):
        code, _, _ = expect_error(api.stub.GetPort, pb.GetPortRequest(name=name), metadata=alice)
        assert code == NOT_FOUND
    assert not get_router(api, alice, router.name).interfaces and not topo.routers_of("a")
    # the gateway address is free again: a second add takes it once more
    assert add_iface(api, alice, router.name, subnet=subs["a"].name).ip_address == "10.1.0.1"


def test_interface_errors_name_the_field(api: Api, alice: Md) -> None:
    _, ext_sub = external(api)
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    wide = make_net(api, alice, "wide")
    wide_sub = make_subnet(api, alice, wide.name, "10.0.0.0/8")
    nogw = make_subnet(api, alice, wide.name.replace("wide", "wide"), "192.168.0.0/24", gateway_ip="")
    c = make_net(api, alice, "c")
    c_sub = make_subnet(api, alice, c.name, "10.3.0.0/24")
    squatter = make_port(api, alice, c.name, fixed_ips=[pb.FixedIp(ip_address="10.3.0.1")])
    used = make_port(api, alice, "networks/b", device_owner="compute:nova", device_id="vm-1")
    bare = make_port(api, alice, make_net(api, alice, "bare").name)  # no subnet: no address
    two = make_port(
        api,
        alice,
        "networks/b",
        fixed_ips=[pb.FixedIp(subnet=subs["b"].name), pb.FixedIp(subnet=subs["b"].name)],
    )
    cases = [
        ({"subnet": subs["a"].name}, EXISTS, ["subnet"], "ROUTER_INTERFACE_EXISTS"),
        ({"subnet": wide_sub.name}, INVALID, ["subnet"], "OVERLAPPING_CIDR"),
        ({"subnet": nogw.name}, INVALID, ["subnet"], "NO_GATEWAY_IP"),
        ({"subnet": c_sub.name}, EXISTS, ["subnet"], "IP_ADDRESS_IN_USE"),
        # the operator's external subnet: alice reads it (as Neutron shows it), may not attach it
        ({"subnet": ext_sub.name}, grpc.StatusCode.PERMISSION_DENIED, ["subnet"], "ADMIN_ONLY"),
        ({"subnet": "nope"}, INVALID, ["subnet"], "INVALID_FIELD"),
        ({"port": used.name}, PRECONDITION, [], "PORT_IN_USE"),
        ({"port": two.name}, INVALID, ["port"], "MULTIPLE_IPV4_ADDRESSES"),
        ({}, INVALID, ["subnet"], "INVALID_FIELD"),
    ]
    for kwargs, code, fields, reason in cases:
        assert expect_error(add_iface, api, alice, router.name, **kwargs) == (code, fields, reason), kwargs
    assert expect_error(add_iface, api, alice, router.name, port=bare.name) == (
        INVALID,
        ["port"],
        "NO_FIXED_IP",
    )
    # the operator sees the external subnet, and is told it cannot be an interface
    assert expect_error(add_iface, api, api.admin, router.name, subnet=ext_sub.name) == (
        INVALID,
        ["subnet"],
        "EXTERNAL_NETWORK",
    )
    assert expect_error(add_iface, api, alice, "routers/nope", subnet=subs["b"].name)[2] == "ROUTER_NOT_FOUND"
    assert expect_error(remove_iface, api, alice, router.name, subnet=subs["b"].name) == (
        NOT_FOUND,
        [],
        "ROUTER_INTERFACE_NOT_FOUND",
    )
    assert expect_error(remove_iface, api, alice, router.name, port=squatter.name) == (
        NOT_FOUND,
        [],
        "ROUTER_INTERFACE_NOT_FOUND",
    )
    assert [i.subnet for i in get_router(api, alice, router.name).interfaces] == [subs["a"].name]


def test_router_ports_cannot_be_changed_through_port_calls(api: Api, alice: Md) -> None:
    ext, _ = external(api)
    router, subs = tenant_world(api, alice)
    iface = add_iface(api, alice, router.name, subnet=subs["a"].name)
    code, _, reason = expect_error(api.stub.DeletePort, pb.DeletePortRequest(name=iface.port), metadata=alice)
    assert (code, reason) == (PRECONDITION, "PORT_OWNED_BY_ROUTER")
    for paths, port, field in [
        (
            ["fixed_ips"],
            pb.Port(name=iface.port, fixed_ips=[pb.FixedIp(ip_address="10.1.0.9")]),
            "port.fixed_ips",
        ),
        (["device_owner"], pb.Port(name=iface.port, device_owner="compute:nova"), "port.device_owner"),
        (["device_id"], pb.Port(name=iface.port, device_id="other"), "port.device_id"),
    ]:
        got = expect_error(
            api.stub.UpdatePort, pb.UpdatePortRequest(port=port, update_mask=mask(*paths)), metadata=alice
        )
        assert got == (PRECONDITION, [field], "PORT_OWNED_BY_ROUTER"), paths
    code, _, reason = expect_error(
        api.stub.UpdateSubnet,
        pb.UpdateSubnetRequest(
            subnet=pb.Subnet(name=subs["a"].name, gateway_ip="10.1.0.254"), update_mask=mask("gateway_ip")
        ),
        metadata=alice,
    )
    assert (code, reason) == (PRECONDITION, "GATEWAY_IN_USE")
    renamed = api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=iface.port, display_name="gw"), update_mask=mask("display_name")
        ),
        metadata=alice,
    )
    assert renamed.display_name == "gw" and renamed.device_owner == OWNER_ROUTER_INTERFACE
    # nobody plugs a port into a router by naming it
    for owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY, OWNER_FLOATING_IP):
        assert expect_error(make_port, api, alice, "networks/b", device_owner=owner, device_id="r") == (
            INVALID,
            ["port.device_owner"],
            "RESERVED_DEVICE_OWNER",
        )
    plain = make_port(api, alice, "networks/b")
    got = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=plain.name, device_owner=OWNER_ROUTER_INTERFACE, device_id="r"),
            update_mask=mask("device_owner", "device_id"),
        ),
        metadata=alice,
    )
    assert got == (INVALID, ["port.device_owner"], "RESERVED_DEVICE_OWNER")
    # even force does not delete an interface with its subnet or network (Neutron refuses too)
    code, _, reason = expect_error(
        api.stub.DeleteSubnet, pb.DeleteSubnetRequest(name=subs["a"].name, force=True), metadata=alice
    )
    assert (code, reason) == (PRECONDITION, "SUBNET_IN_USE")
    code, _, reason = expect_error(
        api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name="networks/a", force=True), metadata=alice
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    api.stub.GetPort(pb.GetPortRequest(name=iface.port), metadata=alice)
    # the external network: its gateway port is the router's; the network stays while in use
    gw_port = router.external_gateway.port
    code, _, reason = expect_error(
        api.stub.DeletePort, pb.DeletePortRequest(name=gw_port), metadata=api.admin
    )
    assert (code, reason) == (PRECONDITION, "PORT_OWNED_BY_ROUTER")
    code, _, reason = expect_error(
        api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name=ext.name, force=True), metadata=api.admin
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    code, _, reason = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(
            network=pb.Network(name=ext.name, external=False), update_mask=mask("external")
        ),
        metadata=api.admin,
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    code, _, reason = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(
            network=pb.Network(name="networks/a", external=True), update_mask=mask("external")
        ),
        metadata=api.admin,
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    # once the interface is removed, the network goes as before
    remove_iface(api, alice, router.name, subnet=subs["a"].name)
    api.stub.DeleteNetwork(pb.DeleteNetworkRequest(name="networks/a", force=True), metadata=alice)


def test_delete_router_needs_force_while_it_has_interfaces_or_floating_ips(api: Api, alice: Md) -> None:
    ext, _ = external(api)
    router, subs = tenant_world(api, alice)
    iface = add_iface(api, alice, router.name, subnet=subs["a"].name)
    vm = make_port(api, alice, "networks/a")
    fip = make_fip(api, alice, ext.name, port=vm.name)
    assert fip.router == router.name
    code, _, reason = expect_error(
        api.stub.DeleteRouter, pb.DeleteRouterRequest(name=router.name), metadata=alice
    )
    assert (code, reason) == (PRECONDITION, "ROUTER_IN_USE")
    api.stub.DeleteRouter(pb.DeleteRouterRequest(name=router.name, force=True), metadata=alice)
    code, _, _ = expect_error(api.stub.GetPort, pb.GetPortRequest(name=iface.port), metadata=alice)
    assert code == NOT_FOUND
    after = get_fip(api, alice, fip.name)
    assert (after.port, after.fixed_ip_address, after.router) == ("", "", "")
    assert after.floating_ip_address == fip.floating_ip_address  # still reserved, just not associated
    assert {p.device_owner for p in ports_on(api, ext.name)} == {OWNER_FLOATING_IP}


def test_static_routes(api: Api, alice: Md) -> None:
    external(api)
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    add_iface(api, alice, router.name, subnet=subs["b"].name)
    routes = [
        pb.HostRoute(destination="192.168.0.0/16", nexthop="10.1.0.10"),
        pb.HostRoute(destination="0.0.0.0/0", nexthop="10.2.0.20"),
    ]
    upd = update_router(api, alice, pb.Router(name=router.name, routes=routes), "routes")
    assert [(r.destination, r.nexthop) for r in upd.routes] == [
        ("192.168.0.0/16", "10.1.0.10"),
        ("0.0.0.0/0", "10.2.0.20"),
    ]
    for route, field, reason in [
        (
            pb.HostRoute(destination="192.168.0.0/16", nexthop="10.9.0.1"),
            "router.routes[0].nexthop",
            "NEXTHOP_NOT_CONNECTED",
        ),
        (
            pb.HostRoute(destination="192.168.0.0/16", nexthop="10.1.0.1"),
            "router.routes[0].nexthop",
            "INVALID_FIELD",
        ),  # the router's own address
        (
            pb.HostRoute(destination="192.168.0.0", nexthop="10.1.0.5"),
            "router.routes[0].destination",
            "INVALID_FIELD",
        ),
        (
            pb.HostRoute(destination="192.168.0.0/16", nexthop="nope"),
            "router.routes[0].nexthop",
            "INVALID_FIELD",
        ),
    ]:
        got = expect_error(update_router, api, alice, pb.Router(name=router.name, routes=[route]), "routes")
        assert got == (INVALID, [field], reason), route
    twice = [routes[0], routes[0]]
    assert expect_error(update_router, api, alice, pb.Router(name=router.name, routes=twice), "routes") == (
        INVALID,
        ["router.routes[1]"],
        "INVALID_FIELD",
    )
    # an interface a route's nexthop needs cannot be removed
    code, _, reason = expect_error(remove_iface, api, alice, router.name, subnet=subs["a"].name)
    assert (code, reason) == (PRECONDITION, "ROUTER_INTERFACE_IN_USE")
    update_router(api, alice, pb.Router(name=router.name, routes=routes[1:]), "routes")
    remove_iface(api, alice, router.name, subnet=subs["a"].name)
    assert [(r.destination, r.nexthop) for r in get_router(api, alice, router.name).routes] == [
        ("0.0.0.0/0", "10.2.0.20")
    ]


# ---------------------------------------------------------------------------------------------- floating IPs


def test_floating_ip_lifecycle(api: Api, alice: Md) -> None:
    ext, ext_sub = external(api)
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    vm = make_port(api, alice, "networks/a", "vm")
    fip = make_fip(api, alice, ext.name, "f1")
    assert fip.name == "floatingIps/f1" and fip.tenant == "alice" and fip.floating_network == ext.name
    assert fip.floating_ip_address == "203.0.113.3" and not fip.port and not fip.router  # .2: the gateway
    reserved = [p for p in ports_on(api, ext.name) if p.device_owner == OWNER_FLOATING_IP]
    assert [(p.device_id, p.fixed_ips[0].ip_address, p.tenant) for p in reserved] == [
        ("f1", "203.0.113.3", "")
    ]
    assert get_fip(api, alice, fip.name) == fip
    assoc = update_fip(api, alice, fip.name, port=vm.name)
    again = api.stub.UpdateFloatingIp(
        pb.UpdateFloatingIpRequest(floating_ip=assoc), metadata=alice
    )  # empty mask
    assert (again.port, again.fixed_ip_address, again.router) == (
        assoc.port,
        assoc.fixed_ip_address,
        assoc.router,
    )
    assert (assoc.port, assoc.fixed_ip_address, assoc.router) == (
        vm.name,
        vm.fixed_ips[0].ip_address,
        router.name,
    )
    assert assoc.revision > fip.revision
    listed = api.stub.ListFloatingIps(pb.ListFloatingIpsRequest(port=vm.name), metadata=alice).floating_ips
    assert [f.name for f in listed] == [fip.name]
    gone = update_fip(api, alice, fip.name)
    assert (gone.port, gone.fixed_ip_address, gone.router) == ("", "", "")
    # an address asked for, associated at once, with the fixed IP named
    other = make_fip(
        api,
        alice,
        ext.name,
        floating_ip_address="203.0.113.77",
        port=vm.name,
        fixed_ip_address=vm.fixed_ips[0].ip_address,
    )
    assert (other.floating_ip_address, other.port, other.router) == ("203.0.113.77", vm.name, router.name)
    assert (
        len(
            api.stub.ListFloatingIps(
                pb.ListFloatingIpsRequest(floating_network=ext.name), metadata=alice
            ).floating_ips
        )
        == 2
    )
    api.stub.DeleteFloatingIp(pb.DeleteFloatingIpRequest(name=fip.name), metadata=alice)
    assert expect_error(get_fip, api, alice, fip.name)[::2] == (NOT_FOUND, "FLOATING_IP_NOT_FOUND")
    # its address is free again
    assert make_fip(api, alice, ext.name).floating_ip_address == "203.0.113.3"
    assert ext_sub.name  # (the external subnet is the operator's: tenants never see it)
    # deleting the associated port dissociates its floating IP (as Neutron does)
    api.stub.DeletePort(pb.DeletePortRequest(name=vm.name), metadata=alice)
    after = get_fip(api, alice, other.name)
    assert (after.port, after.router, after.floating_ip_address) == ("", "", "203.0.113.77")


def test_floating_ip_errors_name_the_field(api: Api, alice: Md) -> None:
    ext, _ = external(api, "203.0.113.0/29")  # .2-.6 allocatable; the router's gateway takes .2
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    vm = make_port(api, alice, "networks/a")
    lonely = make_port(api, alice, "networks/b")  # subnet b is on no router
    nogw = make_router(api, alice, "nogw")
    c = make_net(api, alice, "c")
    c_sub = make_subnet(api, alice, c.name, "10.3.0.0/24")
    add_iface(api, alice, nogw.name, subnet=c_sub.name)
    behind_nogw = make_port(api, alice, c.name)
    taken = make_fip(api, alice, ext.name, port=vm.name)
    iface_port = get_router(api, alice, router.name).interfaces[0].port
    cases = [
        ({"network": "networks/a"}, INVALID, ["floating_ip.floating_network"], "NOT_EXTERNAL_NETWORK"),
        ({"network": "networks/nope"}, NOT_FOUND, [], "NETWORK_NOT_FOUND"),
        ({"port": lonely.name}, PRECONDITION, [], "EXTERNAL_GATEWAY_UNREACHABLE"),
        ({"port": behind_nogw.name}, PRECONDITION, [], "EXTERNAL_GATEWAY_UNREACHABLE"),
        ({"port": vm.name}, EXISTS, ["floating_ip.fixed_ip_address"], "FIXED_IP_IN_USE"),
        (
            {"port": vm.name, "fixed_ip_address": "10.1.0.200"},
            INVALID,
            ["floating_ip.fixed_ip_address"],
            "INVALID_FIELD",
        ),
        ({"port": iface_port}, INVALID, ["floating_ip.port"], "INVALID_FIELD"),
        ({"port": "ports/nope"}, NOT_FOUND, [], "PORT_NOT_FOUND"),
        ({"fixed_ip_address": "10.1.0.5"}, INVALID, ["floating_ip.fixed_ip_address"], "INVALID_FIELD"),
        (
            {"floating_ip_address": taken.floating_ip_address},
            EXISTS,
            ["floating_ip.floating_ip_address"],
            "IP_ADDRESS_IN_USE",
        ),
        (
            {"floating_ip_address": "198.51.100.7"},
            INVALID,
            ["floating_ip.floating_ip_address"],
            "INVALID_FIELD",
        ),
        (
            {"floating_ip_address": "203.0.113.1"},
            INVALID,
            ["floating_ip.floating_ip_address"],
            "INVALID_FIELD",
        ),
        (
            {"floating_ip_address": "2001:db8::5"},
            INVALID,
            ["floating_ip.floating_ip_address"],
            "INVALID_FIELD",
        ),
        ({"ident": "Bad_Id"}, INVALID, ["floating_ip_id"], "INVALID_FIELD"),
    ]
    before = revision(api)
    for kwargs, code, fields, reason in cases:
        network = kwargs.pop("network", ext.name)
        assert expect_error(make_fip, api, alice, network, **kwargs) == (code, fields, reason), kwargs
    assert revision(api) == before
    for _ in range(3):
        make_fip(api, alice, ext.name)
    assert expect_error(make_fip, api, alice, ext.name) == (EXHAUSTED, [], "IP_POOL_EXHAUSTED")
    # update masks and dissociation rules
    for paths, reason in [
        (["floating_ip_address"], "IMMUTABLE_FIELD"),
        (["router"], "OUTPUT_ONLY_FIELD"),
        (["colour"], "UNKNOWN_FIELD"),
    ]:
        assert expect_error(update_fip, api, alice, taken.name, paths=tuple(paths)) == (
            INVALID,
            ["update_mask"],
            reason,
        )
    assert expect_error(
        update_fip, api, alice, taken.name, fixed_ip="10.1.0.2", paths=("port", "fixed_ip_address")
    ) == (INVALID, ["floating_ip.fixed_ip_address"], "INVALID_FIELD")
    # what the floating IP needs stays: the gateway, the interface, the fixed IP on the port
    code, _, reason = expect_error(update_router, api, alice, pb.Router(name=router.name), "external_gateway")
    assert (code, reason) == (PRECONDITION, "ROUTER_GATEWAY_IN_USE")
    code, _, reason = expect_error(remove_iface, api, alice, router.name, subnet=subs["a"].name)
    assert (code, reason) == (PRECONDITION, "ROUTER_INTERFACE_IN_USE")
    code, _, reason = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=vm.name, fixed_ips=[pb.FixedIp(ip_address="10.1.0.99")]),
            update_mask=mask("fixed_ips"),
        ),
        metadata=alice,
    )
    assert (code, reason) == (PRECONDITION, "FLOATING_IP_ASSOCIATED")
    reserved = next(p for p in ports_on(api, ext.name) if p.device_id == taken.name.split("/")[1])
    code, _, reason = expect_error(
        api.stub.DeletePort, pb.DeletePortRequest(name=reserved.name), metadata=api.admin
    )
    assert (code, reason) == (PRECONDITION, "PORT_OWNED_BY_FLOATING_IP")
    update_fip(api, alice, taken.name)  # dissociated: now all of them may go
    update_router(api, alice, pb.Router(name=router.name), "external_gateway")


# ---------------------------------------------------------------------------------------------- scoping


def test_tenant_scoping_both_ways(api: Api, alice: Md, bob: Md) -> None:
    ext, _ = external(api)
    a_router, a_subs = tenant_world(api, alice, "a-")
    b_router, b_subs = tenant_world(api, bob, "b-")
    add_iface(api, alice, a_router.name, subnet=a_subs["a"].name)
    add_iface(api, bob, b_router.name, subnet=b_subs["a"].name)
    a_vm, b_vm = make_port(api, alice, "networks/a-a"), make_port(api, bob, "networks/b-a")
    a_fip = make_fip(api, alice, ext.name, port=a_vm.name)
    b_fip = make_fip(api, bob, ext.name, port=b_vm.name)
    for md, own_r, own_f, foreign_r, foreign_f, foreign_sub, foreign_vm in (
        (alice, a_router, a_fip, b_router, b_fip, b_subs["b"], b_vm),
        (bob, b_router, b_fip, a_router, a_fip, a_subs["b"], a_vm),
    ):
        assert [r.name for r in api.stub.ListRouters(pb.ListRoutersRequest(), metadata=md).routers] == [
            own_r.name
        ]
        assert [
            f.name for f in api.stub.ListFloatingIps(pb.ListFloatingIpsRequest(), metadata=md).floating_ips
        ] == [own_f.name]
        for call, req in [
            (api.stub.GetRouter, pb.GetRouterRequest(name=foreign_r.name)),
            (
                api.stub.UpdateRouter,
                pb.UpdateRouterRequest(
                    router=pb.Router(name=foreign_r.name, display_name="x"), update_mask=mask("display_name")
                ),
            ),
            (api.stub.DeleteRouter, pb.DeleteRouterRequest(name=foreign_r.name, force=True)),
            (
                api.stub.AddRouterInterface,
                pb.AddRouterInterfaceRequest(name=foreign_r.name, subnet=foreign_sub.name),
            ),
            (
                api.stub.AddRouterInterface,
                pb.AddRouterInterfaceRequest(name=own_r.name, subnet=foreign_sub.name),
            ),
            (
                api.stub.AddRouterInterface,
                pb.AddRouterInterfaceRequest(name=own_r.name, port=foreign_vm.name),
            ),
            (
                api.stub.RemoveRouterInterface,
                pb.RemoveRouterInterfaceRequest(name=foreign_r.name, port=foreign_vm.name),
            ),
            (api.stub.GetFloatingIp, pb.GetFloatingIpRequest(name=foreign_f.name)),
            (
                api.stub.UpdateFloatingIp,
                pb.UpdateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(name=foreign_f.name), update_mask=mask("port")
                ),
            ),
            (api.stub.DeleteFloatingIp, pb.DeleteFloatingIpRequest(name=foreign_f.name)),
            (
                api.stub.CreateFloatingIp,
                pb.CreateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(floating_network=ext.name, port=foreign_vm.name)
                ),
            ),
            (
                api.stub.UpdateFloatingIp,
                pb.UpdateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(name=own_f.name, port=foreign_vm.name), update_mask=mask("port")
                ),
            ),
        ]:
            code, _, _ = expect_error(call, req, metadata=md)
            assert code == NOT_FOUND, (call, req)
        code, _, _ = expect_error(api.stub.ListRouters, pb.ListRoutersRequest(tenant="x"), metadata=md)
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # nothing of the other tenant's changed; the operator sees both and filters by tenant
    assert get_router(api, alice, a_router.name).display_name == ""
    assert get_fip(api, bob, b_fip.name).port == b_vm.name
    assert len(api.stub.ListRouters(pb.ListRoutersRequest(), metadata=api.admin).routers) == 2
    only = api.stub.ListFloatingIps(pb.ListFloatingIpsRequest(tenant="bob"), metadata=api.admin).floating_ips
    assert [f.name for f in only] == [b_fip.name]
    # the operator may act for a tenant
    assert make_router(api, api.admin, tenant="alice").tenant == "alice"


def test_pagination(api: Api, alice: Md) -> None:
    ext, _ = external(api)
    names = {make_router(api, alice, f"r{i:02d}").name for i in range(7)}
    fips = {make_fip(api, alice, ext.name, f"f{i:02d}").name for i in range(7)}
    for list_call, request_cls, field, expected in (
        (api.stub.ListRouters, pb.ListRoutersRequest, "routers", names),
        (api.stub.ListFloatingIps, pb.ListFloatingIpsRequest, "floating_ips", fips),
    ):
        seen, token = [], ""
        while True:
            resp = list_call(request_cls(page_size=3, page_token=token), metadata=alice)
            seen += [x.name for x in getattr(resp, field)]
            token = resp.next_page_token
            if not token:
                break
        assert len(seen) == 7 and set(seen) == expected
        assert expect_error(list_call, request_cls(page_token="garbage"), metadata=alice)[:2] == (
            INVALID,
            ["page_token"],
        )


# ---------------------------------------------------------------------------------------------- validate_only


def test_validate_only_stores_nothing(api: Api, alice: Md) -> None:
    ext, _ = external(api)
    router, subs = tenant_world(api, alice)
    vm = make_port(api, alice, "networks/a")
    before, ports_before = revision(api), len(ports_on(api, ext.name))
    dry, call = api.stub.CreateRouter.with_call(
        pb.CreateRouterRequest(
            router=pb.Router(external_gateway=pb.ExternalGateway(network=ext.name)),
            router_id="dry",
            validate_only=True,
        ),
        metadata=alice,
    )
    assert dry.name == "routers/dry" and dry.external_gateway.fixed_ip.ip_address == "203.0.113.3"
    plan = pb.Plan.FromString(dict(call.trailing_metadata())["sdn-plan-bin"])
    assert plan.revision == before + 1
    iface = add_iface(api, alice, router.name, subnet=subs["a"].name, validate_only=True)
    assert iface.ip_address == "10.1.0.1" and iface.port.startswith("ports/")
    fip = make_fip(api, alice, ext.name, validate_only=True)
    assert fip.floating_ip_address == "203.0.113.3"
    upd = update_router(api, alice, pb.Router(name=router.name), "external_gateway", validate_only=True)
    assert not upd.HasField("external_gateway")
    api.stub.DeleteRouter(pb.DeleteRouterRequest(name=router.name, validate_only=True), metadata=alice)
    assert revision(api) == before and len(ports_on(api, ext.name)) == ports_before
    assert expect_error(get_router, api, alice, "routers/dry")[0] == NOT_FOUND
    assert get_router(api, alice, router.name) == router
    assert not api.stub.ListFloatingIps(pb.ListFloatingIpsRequest(), metadata=alice).floating_ips
    # the real writes get what the dry runs showed
    assert add_iface(api, alice, router.name, subnet=subs["a"].name).ip_address == "10.1.0.1"
    add_iface(api, alice, router.name, subnet=subs["b"].name)
    real = make_fip(api, alice, ext.name, port=vm.name)
    assert real.floating_ip_address == "203.0.113.3"
    before = revision(api)
    api.stub.UpdateFloatingIp(
        pb.UpdateFloatingIpRequest(
            floating_ip=pb.FloatingIp(name=real.name), update_mask=mask("port"), validate_only=True
        ),
        metadata=alice,
    )
    api.stub.DeleteFloatingIp(pb.DeleteFloatingIpRequest(name=real.name, validate_only=True), metadata=alice)
    api.stub.RemoveRouterInterface(
        pb.RemoveRouterInterfaceRequest(name=router.name, subnet=subs["b"].name, validate_only=True),
        metadata=alice,
    )
    assert revision(api) == before and get_fip(api, alice, real.name).port == vm.name
    # errors are the same as for real writes
    assert expect_error(add_iface, api, alice, router.name, subnet=subs["a"].name, validate_only=True)[2] == (
        "ROUTER_INTERFACE_EXISTS"
    )


# ---------------------------------------------------------------------------------------------- watch


def test_watch_carries_routers_and_floating_ips(api: Api, alice: Md, bob: Md) -> None:
    ext, _ = external(api)
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    vm = make_port(api, alice, "networks/a")
    start = revision(api)
    fip = make_fip(api, alice, ext.name, port=vm.name)
    make_router(api, bob, "bobs")
    stream = api.stub.Watch(pb.WatchRequest(start_revision=0), metadata=alice)
    snapshot = []
    for ev in stream:
        if ev.type == pb.WatchEvent.SYNCED:
            break
        snapshot.append((ev.WhichOneof("resource"), getattr(ev, ev.WhichOneof("resource")).name))
    stream.cancel()
    assert ("router", router.name) in snapshot and ("floating_ip", fip.name) in snapshot
    assert ("router", "routers/bobs") not in snapshot
    stream = api.stub.Watch(pb.WatchRequest(start_revision=start), metadata=alice)
    events = []
    for ev in stream:
        if ev.type == pb.WatchEvent.SYNCED:
            break
        events.append((pb.WatchEvent.Type.Name(ev.type), ev.WhichOneof("resource")))
    stream.cancel()
    assert events == [
        ("CREATED", "floating_ip")
    ]  # the reservation port is the operator's; bob's router is bob's


# ---------------------------------------------------------------------------------------------- durability


def test_routers_and_floating_ips_survive_a_reload(server: InProcessServer, alice: Md) -> None:
    api = server.api
    ext, ext_sub = external(api)
    router, subs = tenant_world(api, alice)
    add_iface(api, alice, router.name, subnet=subs["a"].name)
    mine = make_port(api, alice, "networks/b", "bport", fixed_ips=[pb.FixedIp(ip_address="10.2.0.254")])
    add_iface(api, alice, router.name, port=mine.name)
    update_router(
        api,
        alice,
        pb.Router(name=router.name, routes=[pb.HostRoute(destination="0.0.0.0/0", nexthop="10.2.0.20")]),
        "routes",
    )
    vm = make_port(api, alice, "networks/a")
    fip = make_fip(api, alice, ext.name, port=vm.name)
    loose = make_fip(api, alice, ext.name, floating_ip_address="203.0.113.200")
    api.stub.DeleteFloatingIp(
        pb.DeleteFloatingIpRequest(name=make_fip(api, alice, ext.name).name), metadata=alice
    )
    before = server.state.topology
    again = State(Path(server.data_dir) / "topology.sqlite")
    try:
        after = again.topology
        assert after.revision == before.revision
        assert after.routers == before.routers and after.floatingips == before.floatingips
        assert after.ports == before.ports and after.ip_owner == before.ip_owner and after.macs == before.macs
        routed = {(("network", "a"), ("router", "r"), 1), (("network", "b"), ("router", "r"), 1)}
        assert {tuple(sorted(e[:2])) + (e[2],) for e in after.routed.edges(data="interfaces")} == routed
        assert {tuple(sorted(e[:2])) + (e[2],) for e in before.routed.edges(data="interfaces")} == routed
        assert set(after.graph.edges) == set(before.graph.edges)
        assert after.datapath_keys.allocated == before.datapath_keys.allocated
        assert after.port_keys.allocated == before.port_keys.allocated
        ext_id = ext_sub.name.split("/")[1]
        assert after.ipam[ext_id].allocated == before.ipam[ext_id].allocated
        held = {
            int(netaddr.IPAddress(a))
            for a in ("203.0.113.2", fip.floating_ip_address, loose.floating_ip_address)
        }
        assert held <= after.ipam[ext_id].allocated
        # the next floating IP after a reload does not reuse a reserved address
        n = after.ipam[ext_id].choose()
        assert n is not None and n not in held
        assert after.routers["r"].routes == (("0.0.0.0/0", "10.2.0.20"),)
        assert after.floatingips[fip.name.split("/")[1]].router_id == "r"
    finally:
        again.close()
