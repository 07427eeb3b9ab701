"""The gRPC API through a real channel: happy paths, error codes with their details, tenant scoping."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import Api, InProcessServer


def details(err: grpc.RpcError) -> tuple[grpc.StatusCode, list[str], str]:
    """(code, field violation paths, ErrorInfo reason) of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "error without google.rpc.Status details"
    fields, reason = [], ""
    for d in status.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            fields += [v.field for v in br.field_violations]
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            d.Unpack(ei)
            reason = ei.reason
            assert ei.domain == "sdn.v1"
    assert reason, "every error carries an ErrorInfo reason"
    return err.code(), fields, reason  # type: ignore[attr-defined]


def expect_error(fn, *args, **kwargs) -> tuple[grpc.StatusCode, list[str], str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return details(info.value)


def make_net(api: Api, md, ident: str = "", **kw) -> pb.Network:  # type: ignore[no-untyped-def]
    return api.stub.CreateNetwork(
        pb.CreateNetworkRequest(network=pb.Network(**kw), network_id=ident), metadata=md
    )


def make_subnet(api: Api, md, net: str, cidr: str, ident: str = "", **kw) -> pb.Subnet:  # type: ignore[no-untyped-def]
    return api.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net, cidr=cidr, **kw), subnet_id=ident), metadata=md
    )


def make_port(api: Api, md, net: str, ident: str = "", **kw) -> pb.Port:  # type: ignore[no-untyped-def]
    return api.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net, **kw), port_id=ident), metadata=md
    )


# ---------------------------------------------------------------------------------------------- happy paths


def test_network_lifecycle(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md, "web", display_name="web")
    assert net.name == "networks/web" and net.tenant == "alice"
    assert net.segment_type == pb.Network.VXLAN and net.segment_id >= 1000
    assert net.mtu == 1450 and net.admin_state_up and net.revision > 0
    gre = make_net(api, md, segment_type=pb.Network.GRE)
    assert gre.mtu == 1458 and gre.name.startswith("networks/")
    assert api.stub.GetNetwork(pb.GetNetworkRequest(name="networks/web"), metadata=md) == net
    listed = api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=md)
    assert {n.name for n in listed.networks} == {net.name, gre.name}
    upd = api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, display_name="frontend", mtu=1400),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "mtu"]),
        ),
        metadata=md,
    )
    assert (upd.display_name, upd.mtu, upd.segment_id) == ("frontend", 1400, net.segment_id)
    assert upd.revision > net.revision
    # an empty mask updates the populated fields and ignores unchanged immutable ones (AIP-134)
    upd2 = api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, segment_id=net.segment_id, admin_state_up=False)
        ),
        metadata=md,
    )
    assert upd2.admin_state_up is False and upd2.display_name == "frontend"
    api.stub.DeleteNetwork(pb.DeleteNetworkRequest(name=net.name), metadata=md)
    code, _, reason = expect_error(api.stub.GetNetwork, pb.GetNetworkRequest(name=net.name), metadata=md)
    assert code == grpc.StatusCode.NOT_FOUND and reason == "NETWORK_NOT_FOUND"


def test_segment_ids_unique_per_type_and_provider_networks(api: Api) -> None:
    a = make_net(api, api.admin, segment_type=pb.Network.VXLAN)
    b = make_net(api, api.admin, segment_type=pb.Network.VXLAN)
    c = make_net(api, api.admin, segment_type=pb.Network.GENEVE)
    assert a.segment_id != b.segment_id
    assert c.segment_id == a.segment_id  # unique per type, not across types
    vlan = make_net(api, api.admin, segment_type=pb.Network.VLAN, physical_network="physnet1", segment_id=100)
    assert (vlan.segment_id, vlan.mtu, vlan.physical_network) == (100, 1500, "physnet1")
    other = make_net(
        api, api.admin, segment_type=pb.Network.VLAN, physical_network="physnet2", segment_id=100
    )
    assert other.segment_id == 100  # same tag, other physical network
    code, fields, reason = expect_error(
        make_net, api, api.admin, segment_type=pb.Network.VLAN, physical_network="physnet1", segment_id=100
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and reason == "SEGMENT_IN_USE"
    flat = make_net(api, api.admin, segment_type=pb.Network.FLAT, physical_network="ext", external=True)
    assert flat.external and flat.segment_id == 0
    code, fields, reason = expect_error(
        make_net, api, api.admin, segment_type=pb.Network.VLAN, physical_network="physnet3"
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "SEGMENT_POOL_EXHAUSTED"


def test_subnet_defaults_and_update(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    sub = make_subnet(
        api,
        md,
        net.name,
        "10.1.0.0/24",
        dns_servers=["10.1.0.2"],
        host_routes=[pb.HostRoute(destination="192.168.0.0/16", nexthop="10.1.0.254")],
    )
    assert sub.gateway_ip == "10.1.0.1" and sub.ip_version == 4 and sub.enable_dhcp
    assert [(p.start, p.end) for p in sub.allocation_pools] == [("10.1.0.2", "10.1.0.254")]
    nogw = make_subnet(api, md, net.name, "10.2.0.0/24", gateway_ip="")
    assert nogw.gateway_ip == "" and nogw.allocation_pools[0].start == "10.2.0.1"
    pools = make_subnet(
        api,
        md,
        net.name,
        "10.3.0.0/24",
        gateway_ip="10.3.0.254",
        allocation_pools=[
            pb.AllocationPool(start="10.3.0.100", end="10.3.0.199"),
            pb.AllocationPool(start="10.3.0.10", end="10.3.0.19"),
        ],
    )
    assert [(p.start, p.end) for p in pools.allocation_pools] == [
        ("10.3.0.10", "10.3.0.19"),
        ("10.3.0.100", "10.3.0.199"),
    ]
    upd = api.stub.UpdateSubnet(
        pb.UpdateSubnetRequest(
            subnet=pb.Subnet(name=sub.name, enable_dhcp=False, dns_servers=["1.1.1.1", "9.9.9.9"]),
            update_mask=field_mask_pb2.FieldMask(paths=["enable_dhcp", "dns_servers"]),
        ),
        metadata=md,
    )
    assert not upd.enable_dhcp and list(upd.dns_servers) == ["1.1.1.1", "9.9.9.9"]
    listed = api.stub.ListSubnets(pb.ListSubnetsRequest(network=net.name), metadata=md)
    assert len(listed.subnets) == 3


def test_overlapping_cidrs_across_networks_and_tenants(api: Api) -> None:
    alice, bob = api.md(api.tenant_token("alice")), api.md(api.tenant_token("bob"))
    for md in (alice, alice, bob):
        net = make_net(api, md)
        sub = make_subnet(api, md, net.name, "10.0.0.0/24")
        port = make_port(api, md, net.name, fixed_ips=[pb.FixedIp(ip_address="10.0.0.5")])
        assert port.fixed_ips[0].subnet == sub.name
    # but not twice on one network
    code, fields, _ = expect_error(make_subnet, api, alice, net.name, "10.0.0.128/25")
    assert code == grpc.StatusCode.NOT_FOUND and fields == []  # net is bob's
    code, fields, reason = expect_error(make_subnet, api, bob, net.name, "10.0.0.128/25")
    assert (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and fields == ["subnet.cidr"]
        and reason == "OVERLAPPING_CIDR"
    )


def test_port_lifecycle(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    sub = make_subnet(api, md, net.name, "10.0.0.0/24")
    port = make_port(
        api,
        md,
        net.name,
        "vm1",
        display_name="vm1",
        device_id="inst-1",
        allowed_address_pairs=[pb.AddressPair(ip_address="10.0.0.200")],
        security_groups=["securityGroups/default"],
    )
    assert port.name == "ports/vm1" and port.status == pb.Port.DOWN
    assert port.mac_address.startswith("fa:16:3e:")
    assert [(f.subnet, f.ip_address) for f in port.fixed_ips] == [(sub.name, "10.0.0.2")]
    assert port.allowed_address_pairs[0].mac_address == port.mac_address
    given = make_port(
        api,
        md,
        net.name,
        mac_address="02:00:00:00:00:01",
        fixed_ips=[pb.FixedIp(subnet=sub.name, ip_address="10.0.0.50"), pb.FixedIp(subnet=sub.name)],
    )
    assert given.mac_address == "02:00:00:00:00:01"
    assert [f.ip_address for f in given.fixed_ips] == ["10.0.0.50", "10.0.0.3"]
    upd = api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(
                name=port.name, fixed_ips=[pb.FixedIp(ip_address="10.0.0.77")], device_owner="compute:nova"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["fixed_ips", "device_owner"]),
        ),
        metadata=md,
    )
    assert [f.ip_address for f in upd.fixed_ips] == ["10.0.0.77"] and upd.device_owner == "compute:nova"
    # the released address is free again
    again = make_port(api, md, net.name, fixed_ips=[pb.FixedIp(ip_address="10.0.0.2")])
    assert again.fixed_ips[0].ip_address == "10.0.0.2"
    listed = api.stub.ListPorts(pb.ListPortsRequest(network=net.name, device_id="inst-1"), metadata=md)
    assert [p.name for p in listed.ports] == ["ports/vm1"]
    api.stub.DeletePort(pb.DeletePortRequest(name=port.name), metadata=md)
    assert len(api.stub.ListPorts(pb.ListPortsRequest(network=net.name), metadata=md).ports) == 2


def test_chassis_lifecycle_and_binding(api: Api) -> None:
    ch = api.stub.CreateChassis(
        pb.CreateChassisRequest(
            chassis=pb.Chassis(
                datapath_id=0xA1,
                tunnel_ip="192.0.2.11",
                ovsdb_address="unix:/run/ovs/db.sock",
                bridge_mappings={"physnet1": "br-prov"},
            ),
            chassis_id="hv1",
        ),
        metadata=api.admin,
    )
    assert ch.name == "chassis/hv1" and dict(ch.bridge_mappings) == {"physnet1": "br-prov"}
    net = make_net(api, api.admin)
    make_subnet(api, api.admin, net.name, "10.0.0.0/24")
    port = make_port(api, api.admin, net.name, binding_chassis="chassis/hv1")
    assert port.binding_chassis == "chassis/hv1" and port.status == pb.Port.DOWN
    listed = api.stub.ListPorts(pb.ListPortsRequest(binding_chassis="chassis/hv1"), metadata=api.admin)
    assert [p.name for p in listed.ports] == [port.name]
    upd = api.stub.UpdateChassis(
        pb.UpdateChassisRequest(
            chassis=pb.Chassis(name=ch.name, tunnel_ip="192.0.2.12"),
            update_mask=field_mask_pb2.FieldMask(paths=["tunnel_ip"]),
        ),
        metadata=api.admin,
    )
    assert upd.tunnel_ip == "192.0.2.12" and upd.datapath_id == 0xA1
    code, _, reason = expect_error(
        api.stub.DeleteChassis, pb.DeleteChassisRequest(name=ch.name), metadata=api.admin
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "CHASSIS_IN_USE"
    api.stub.DeleteChassis(pb.DeleteChassisRequest(name=ch.name, force=True), metadata=api.admin)
    unbound = api.stub.GetPort(pb.GetPortRequest(name=port.name), metadata=api.admin)
    assert unbound.binding_chassis == "" and unbound.status == pb.Port.DOWN
    assert not api.stub.ListChassis(pb.ListChassisRequest(), metadata=api.admin).chassis


def test_pagination(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    names = {make_net(api, md, f"n{i:02d}").name for i in range(23)}
    seen, token, pages = [], "", 0
    while True:
        resp = api.stub.ListNetworks(pb.ListNetworksRequest(page_size=10, page_token=token), metadata=md)
        seen += [n.name for n in resp.networks]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3 and len(seen) == 23 and set(seen) == names
    code, fields, _ = expect_error(
        api.stub.ListNetworks, pb.ListNetworksRequest(page_token="garbage"), metadata=md
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["page_token"]


def test_delete_children_need_force(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    sub = make_subnet(api, md, net.name, "10.0.0.0/24")
    port = make_port(api, md, net.name)
    code, _, reason = expect_error(api.stub.DeleteSubnet, pb.DeleteSubnetRequest(name=sub.name), metadata=md)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "SUBNET_IN_USE"
    code, _, reason = expect_error(
        api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name=net.name), metadata=md
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "NETWORK_IN_USE"
    api.stub.GetPort(pb.GetPortRequest(name=port.name), metadata=md)  # nothing was deleted
    api.stub.DeleteNetwork(pb.DeleteNetworkRequest(name=net.name, force=True), metadata=md)
    for get, name in ((api.stub.GetPort, port.name), (api.stub.GetSubnet, sub.name)):
        code, _, _ = expect_error(get, type(get).__name__ and _req(name), metadata=md)
        assert code == grpc.StatusCode.NOT_FOUND


def _req(name: str):  # type: ignore[no-untyped-def]
    return pb.GetPortRequest(name=name) if name.startswith("ports/") else pb.GetSubnetRequest(name=name)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"cidr": "10.0.0.0/33"}, "subnet.cidr"),
        ({"cidr": "10.0.0.5/24"}, "subnet.cidr"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.9.0.1"}, "subnet.gateway_ip"),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [pb.AllocationPool(start="10.0.1.1", end="10.0.1.9")],
            },
            "subnet.allocation_pools[0].start",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    pb.AllocationPool(start="10.0.0.10", end="10.0.0.20"),
                    pb.AllocationPool(start="10.0.0.20", end="10.0.0.30"),
                ],
            },
            "subnet.allocation_pools[1]",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [pb.AllocationPool(start="10.0.0.1", end="10.0.0.9")],
            },
            "subnet.allocation_pools[0]",
        ),  # contains the default gateway 10.0.0.1
        ({"cidr": "10.0.0.0/24", "dns_servers": ["not-an-ip"]}, "subnet.dns_servers[0]"),
        (
            {"cidr": "10.0.0.0/24", "host_routes": [pb.HostRoute(destination="x", nexthop="10.0.0.1")]},
            "subnet.host_routes[0].destination",
        ),
    ],
)
def test_invalid_subnets_name_the_field(api: Api, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    net = make_net(api, api.admin)
    before = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision
    code, fields, reason = expect_error(make_subnet, api, api.admin, net.name, **kwargs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field] and reason
    assert api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision == before
    assert not api.stub.ListSubnets(pb.ListSubnetsRequest(), metadata=api.admin).subnets


def test_port_errors(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    sub = make_subnet(api, md, net.name, "10.0.0.0/29")  # .2 - .6 allocatable
    first = make_port(api, md, net.name, fixed_ips=[pb.FixedIp(ip_address="10.0.0.3")])
    cases = [
        (
            {"fixed_ips": [pb.FixedIp(ip_address="10.0.0.3")]},
            grpc.StatusCode.ALREADY_EXISTS,
            ["port.fixed_ips[0].ip_address"],
            "IP_ADDRESS_IN_USE",
        ),
        (
            {"fixed_ips": [pb.FixedIp(ip_address="10.9.9.9")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.fixed_ips[0].ip_address"],
            "INVALID_FIELD",
        ),
        (
            {"fixed_ips": [pb.FixedIp(ip_address="10.0.0.7")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.fixed_ips[0].ip_address"],
            "INVALID_FIELD",
        ),  # broadcast
        (
            {"fixed_ips": [pb.FixedIp(subnet="subnets/nope")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.fixed_ips[0].subnet"],
            "INVALID_FIELD",
        ),
        (
            {"fixed_ips": [pb.FixedIp(subnet="bad name")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.fixed_ips[0].subnet"],
            "INVALID_FIELD",
        ),
        (
            {"mac_address": first.mac_address},
            grpc.StatusCode.ALREADY_EXISTS,
            ["port.mac_address"],
            "MAC_ADDRESS_IN_USE",
        ),
        (
            {"mac_address": "01:00:5e:00:00:01"},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.mac_address"],
            "INVALID_FIELD",
        ),
        (
            {"allowed_address_pairs": [pb.AddressPair(ip_address="zz")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.allowed_address_pairs[0].ip_address"],
            "INVALID_FIELD",
        ),
        (
            {"security_groups": ["securityGroups/Bad_Id"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["port.security_groups[0]"],
            "INVALID_FIELD",
        ),
        (
            {"port_security_enabled": False, "security_groups": ["securityGroups/default"]},
            grpc.StatusCode.FAILED_PRECONDITION,
            [],
            "PORT_SECURITY_REQUIRED",
        ),
        (
            {"binding_chassis": "chassis/hv1"},
            grpc.StatusCode.PERMISSION_DENIED,
            ["port.binding_chassis"],
            "ADMIN_ONLY",
        ),
    ]
    for kwargs, code, fields, reason in cases:
        got = expect_error(make_port, api, md, net.name, **kwargs)
        assert got == (code, fields, reason), kwargs
    code, fields, _ = expect_error(make_port, api, md, "networks/nope")
    assert code == grpc.StatusCode.NOT_FOUND
    code, fields, _ = expect_error(make_port, api, md, net.name, "Bad_ID")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["port_id"]
    code, _, reason = expect_error(make_port, api, md, net.name, first.name.split("/")[1])
    assert code == grpc.StatusCode.ALREADY_EXISTS and reason == "PORT_EXISTS"
    for _ in range(4):
        make_port(api, md, net.name)
    code, _, reason = expect_error(make_port, api, md, net.name, fixed_ips=[pb.FixedIp(subnet=sub.name)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "IP_POOL_EXHAUSTED"
    assert len(api.stub.ListPorts(pb.ListPortsRequest(), metadata=md).ports) == 5


def test_update_mask_errors(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    make_subnet(api, md, net.name, "10.0.0.0/24")
    port = make_port(api, md, net.name)
    for req, paths, reason in [
        (
            pb.UpdateNetworkRequest(network=pb.Network(name=net.name, segment_id=7)),
            ["segment_id"],
            "IMMUTABLE_FIELD",
        ),
        (pb.UpdateNetworkRequest(network=pb.Network(name=net.name)), ["revision"], "OUTPUT_ONLY_FIELD"),
        (pb.UpdateNetworkRequest(network=pb.Network(name=net.name)), ["colour"], "UNKNOWN_FIELD"),
    ]:
        req.update_mask.paths.extend(paths)
        code, fields, got_reason = expect_error(api.stub.UpdateNetwork, req, metadata=md)
        assert (code, fields, got_reason) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"], reason)
    code, fields, reason = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, mac_address="02:00:00:00:00:09"),
            update_mask=field_mask_pb2.FieldMask(paths=["mac_address"]),
        ),
        metadata=md,
    )
    assert (code, fields, reason) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"], "IMMUTABLE_FIELD")
    code, fields, _ = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, mtu=9000), update_mask=field_mask_pb2.FieldMask(paths=["mtu"])
        ),
        metadata=md,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["network.mtu"]
    assert api.stub.GetNetwork(pb.GetNetworkRequest(name=net.name), metadata=md) == net


def test_authentication(api: Api) -> None:
    for md in ((), (("authorization", "Bearer nope"),), (("authorization", "Basic abc"),)):
        code, _, reason = expect_error(api.stub.ListNetworks, pb.ListNetworksRequest(), metadata=md)
        assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "INVALID_TOKEN"
    token = api.tenant_token("carol")
    api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=api.md(token))
    api.stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=api.admin)
    code, _, _ = expect_error(api.stub.ListNetworks, pb.ListNetworksRequest(), metadata=api.md(token))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_tenant_scoping_both_ways(api: Api) -> None:
    alice, bob = api.md(api.tenant_token("alice")), api.md(api.tenant_token("bob"))
    a_net = make_net(api, alice, "a-net")
    a_sub = make_subnet(api, alice, a_net.name, "10.0.0.0/24")
    a_port = make_port(api, alice, a_net.name)
    b_net = make_net(api, bob, "b-net")
    for md, own, foreign in ((alice, a_net, b_net), (bob, b_net, a_net)):
        names = {n.name for n in api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=md).networks}
        assert names == {own.name}
        code, _, _ = expect_error(api.stub.GetNetwork, pb.GetNetworkRequest(name=foreign.name), metadata=md)
        assert code == grpc.StatusCode.NOT_FOUND
    for call, req in [
        (api.stub.GetSubnet, pb.GetSubnetRequest(name=a_sub.name)),
        (api.stub.GetPort, pb.GetPortRequest(name=a_port.name)),
        (api.stub.DeletePort, pb.DeletePortRequest(name=a_port.name)),
        (api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name=a_net.name, force=True)),
        (
            api.stub.UpdateNetwork,
            pb.UpdateNetworkRequest(network=pb.Network(name=a_net.name, display_name="x")),
        ),
        (
            api.stub.CreateSubnet,
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=a_net.name, cidr="10.1.0.0/24")),
        ),
        (api.stub.CreatePort, pb.CreatePortRequest(port=pb.Port(network=a_net.name))),
    ]:
        code, _, _ = expect_error(call, req, metadata=bob)
        assert code == grpc.StatusCode.NOT_FOUND, call
    assert not api.stub.ListPorts(pb.ListPortsRequest(), metadata=bob).ports
    assert api.stub.GetPort(pb.GetPortRequest(name=a_port.name), metadata=alice) == a_port
    # the admin sees both and can filter by tenant; a tenant cannot filter by another tenant
    both = api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=api.admin)
    assert {n.name for n in both.networks} == {a_net.name, b_net.name}
    only_bob = api.stub.ListNetworks(pb.ListNetworksRequest(tenant="bob"), metadata=api.admin)
    assert [n.name for n in only_bob.networks] == [b_net.name]
    code, _, _ = expect_error(api.stub.ListNetworks, pb.ListNetworksRequest(tenant="alice"), metadata=bob)
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_admin_only_resources(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    for kwargs, field in [
        ({"segment_type": pb.Network.VLAN, "physical_network": "physnet1"}, "network.segment_type"),
        ({"segment_type": pb.Network.FLAT, "physical_network": "physnet1"}, "network.segment_type"),
        ({"external": True}, "network.external"),
        ({"segment_id": 4242}, "network.segment_id"),
        ({"tenant": "bob"}, "network.tenant"),
    ]:
        code, fields, reason = expect_error(make_net, api, md, **kwargs)
        assert (code, fields, reason) == (grpc.StatusCode.PERMISSION_DENIED, [field], "ADMIN_ONLY"), kwargs
    code, _, _ = expect_error(api.stub.CreateChassis, pb.CreateChassisRequest(chassis_id="hv9"), metadata=md)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = expect_error(api.stub.ListChassis, pb.ListChassisRequest(), metadata=md)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = expect_error(api.stub.CreateToken, pb.CreateTokenRequest(tenant="x"), metadata=md)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # external networks are readable by tenants (to use as router gateways) but not theirs to change
    ext = make_net(
        api, api.admin, "public", segment_type=pb.Network.FLAT, physical_network="ext", external=True
    )
    assert ext.name in {n.name for n in api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=md).networks}
    code, _, _ = expect_error(api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name=ext.name), metadata=md)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = expect_error(make_port, api, md, ext.name)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # admin acting for a tenant
    net = make_net(api, api.admin, tenant="alice")
    assert net.tenant == "alice"
    assert api.stub.GetNetwork(pb.GetNetworkRequest(name=net.name), metadata=md).tenant == "alice"


def test_health_and_reflection(server: InProcessServer) -> None:
    api = server.api
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "sdn.v1.TopologyService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    services = {s.name for s in resp.list_services_response.service}
    assert {"sdn.v1.TopologyService", "grpc.health.v1.Health"} <= services
    # shutdown: a health watcher sees NOT_SERVING before the server goes away
    stream = health.Watch(health_pb2.HealthCheckRequest(service="sdn.v1.TopologyService"))
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stopper = threading.Thread(target=server.server.stop, args=(2,))
    stopper.start()
    assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
    stopper.join()


def test_last_admin_token_cannot_be_revoked_and_tokens_are_cli_safe(api: Api) -> None:
    code, _, reason = expect_error(
        api.stub.RevokeToken, pb.RevokeTokenRequest(token=api.admin_token), metadata=api.admin
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "LAST_ADMIN_TOKEN"
    second = api.stub.CreateToken(pb.CreateTokenRequest(tenant="ops", admin=True), metadata=api.admin).token
    assert not second.startswith("-")
    api.stub.RevokeToken(pb.RevokeTokenRequest(token=api.admin_token), metadata=api.md(second))
    code, _, _ = expect_error(api.stub.ListNetworks, pb.ListNetworksRequest(), metadata=api.admin)
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_tenant_star_mask_leaves_admin_fields_alone(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md)
    upd = api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, display_name="all", mtu=1400, admin_state_up=True),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        ),
        metadata=md,
    )
    assert (upd.display_name, upd.mtu, upd.external) == ("all", 1400, False)


def test_validate_only_checks_and_stores_nothing(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    before = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    net, call = api.stub.CreateNetwork.with_call(
        pb.CreateNetworkRequest(network=pb.Network(display_name="dry"), network_id="dry", validate_only=True),
        metadata=md,
    )
    assert net.name == "networks/dry" and net.segment_id >= 1000  # the resource as it would be
    plan = pb.Plan.FromString(dict(call.trailing_metadata())["sdn-plan-bin"])
    assert plan.revision == before + 1 and not plan.chassis  # no chassis: nothing to program
    code, _, _ = expect_error(api.stub.GetNetwork, pb.GetNetworkRequest(name="networks/dry"), metadata=md)
    assert code == grpc.StatusCode.NOT_FOUND
    assert api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision == before
    # errors are the same as for a real write
    code, fields, _ = expect_error(
        api.stub.CreateNetwork,
        pb.CreateNetworkRequest(network=pb.Network(mtu=9000), validate_only=True),
        metadata=md,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["network.mtu"]
    real = make_net(api, md, "real")
    make_subnet(api, md, real.name, "10.0.0.0/24")
    port = api.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=real.name), validate_only=True), metadata=md
    )
    # a dry run allocates nothing: the real create gets the same address
    assert make_port(api, md, real.name).fixed_ips[0].ip_address == port.fixed_ips[0].ip_address
    api.stub.DeleteNetwork(
        pb.DeleteNetworkRequest(name=real.name, force=True, validate_only=True), metadata=md
    )
    assert api.stub.GetNetwork(pb.GetNetworkRequest(name=real.name), metadata=md) == real
