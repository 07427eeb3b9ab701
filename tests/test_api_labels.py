"""Neutron's description and tags on networks and ports (List filtered by tags), shared networks (an admin
shares; every tenant sees it and attaches ports; unsharing waits for them to go) and the network status;
through the API and through sdnctl."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import Api
from tests.test_api import expect_error
from tests.test_cli import Cli
from tests.test_cli_osc import rows
from tests.test_cli_osc import sdnctl as sdnctl
from tests.test_neutron_api import Rest
from tests.test_neutron_api import rest as rest


def _net(api: Api, md: tuple[tuple[str, str], ...], **fields: object) -> pb.Network:
    return api.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(**fields)), metadata=md)


def test_description_tags_and_tag_filters(api: Api) -> None:
    alice = api.md(api.tenant_token("alice"))
    web = _net(api, alice, display_name="web", description="front end", tags=["prod", "web", "prod"])
    assert web.description == "front end" and list(web.tags) == ["prod", "web"]  # a set, sorted
    assert web.status == pb.Network.ACTIVE and not web.shared
    db = _net(api, alice, display_name="db", tags=["prod"], admin_state_up=False)
    assert db.status == pb.Network.DOWN

    def listed(*tags: str) -> list[str]:
        resp = api.stub.ListNetworks(pb.ListNetworksRequest(tags=list(tags)), metadata=alice)
        return sorted(n.display_name for n in resp.networks)

    assert listed("prod") == ["db", "web"] and listed("prod", "web") == ["web"] and listed("nope") == []
    # the page token binds the tags: not replayable on another filter
    first = api.stub.ListNetworks(pb.ListNetworksRequest(tags=["prod"], page_size=1), metadata=alice)
    code, fields, _ = expect_error(
        api.stub.ListNetworks,
        pb.ListNetworksRequest(tags=["web"], page_size=1, page_token=first.next_page_token),
        metadata=alice,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["page_token"]

    upd = api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(
            network=pb.Network(name=web.name, tags=["staging"], description="moved"),
            update_mask=field_mask_pb2.FieldMask(paths=["tags", "description"]),
        ),
        metadata=alice,
    )
    assert list(upd.tags) == ["staging"] and upd.description == "moved"
    for bad, path in (
        (["a,b"], "network.tags[0]"),
        ([""], "network.tags[0]"),
        (["x" * 61], "network.tags[0]"),
    ):
        code, fields, _ = expect_error(_net, api, alice, tags=bad)
        assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [path])
    code, fields, _ = expect_error(_net, api, alice, description="d" * 256)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["network.description"])

    port = api.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=web.name, tags=["vm"], description="a VM")), metadata=alice
    )
    assert list(port.tags) == ["vm"] and port.description == "a VM"
    api.stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=web.name)), metadata=alice)
    tagged = api.stub.ListPorts(pb.ListPortsRequest(tags=["vm"]), metadata=alice).ports
    assert [p.name for p in tagged] == [port.name]


def test_shared_network_takes_every_tenants_ports(api: Api) -> None:
    alice, bob = api.md(api.tenant_token("alice")), api.md(api.tenant_token("bob"))
    code, fields, _ = expect_error(_net, api, alice, shared=True)
    assert (code, fields) == (grpc.StatusCode.PERMISSION_DENIED, ["network.shared"])
    net = _net(api, api.admin, display_name="common", tenant="alice")
    api.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.9.0.0/24")), metadata=alice
    )
    # not shared: bob neither sees it nor attaches to it
    code, _, _ = expect_error(
        api.stub.CreatePort, pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=bob
    )
    assert code == grpc.StatusCode.NOT_FOUND
    mask = field_mask_pb2.FieldMask(paths=["shared"])
    code, fields, _ = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(network=pb.Network(name=net.name, shared=True), update_mask=mask),
        metadata=alice,
    )
    assert (code, fields) == (grpc.StatusCode.PERMISSION_DENIED, ["network.shared"])
    api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(network=pb.Network(name=net.name, shared=True), update_mask=mask),
        metadata=api.admin,
    )
    assert [n.name for n in api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=bob).networks] == [
        net.name
    ]
    port = api.stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=bob)
    assert port.tenant == "bob" and port.fixed_ips[0].ip_address.startswith("10.9.0.")
    # the shared network's subnets are bob's to see (and to pick an address in), not to change
    (sub,) = api.stub.ListSubnets(pb.ListSubnetsRequest(), metadata=bob).subnets
    assert (
        sub.cidr == "10.9.0.0/24"
        and api.stub.GetSubnet(pb.GetSubnetRequest(name=sub.name), metadata=bob) == sub
    )
    picked = api.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(network=net.name, fixed_ips=[pb.FixedIp(subnet=sub.name, ip_address="10.9.0.50")])
        ),
        metadata=bob,
    )
    assert picked.fixed_ips[0].ip_address == "10.9.0.50"
    api.stub.DeletePort(pb.DeletePortRequest(name=picked.name), metadata=bob)
    code, _, _ = expect_error(
        api.stub.UpdateSubnet,
        pb.UpdateSubnetRequest(
            subnet=pb.Subnet(name=sub.name, display_name="mine"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=bob,
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    carol = api.md(api.tenant_token("carol"))  # shared with every tenant, as Neutron's shared=True
    assert [s.name for s in api.stub.ListSubnets(pb.ListSubnetsRequest(), metadata=carol).subnets] == [
        sub.name
    ]
    # bob may not change the network itself, nor see alice's ports
    code, _, _ = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, display_name="mine"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=bob,
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert [p.name for p in api.stub.ListPorts(pb.ListPortsRequest(), metadata=bob).ports] == [port.name]
    # unsharing waits for bob's port
    code, _, reason = expect_error(
        api.stub.UpdateNetwork,
        pb.UpdateNetworkRequest(network=pb.Network(name=net.name, shared=False), update_mask=mask),
        metadata=api.admin,
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NETWORK_IN_USE")
    api.stub.DeletePort(pb.DeletePortRequest(name=port.name), metadata=bob)
    api.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(network=pb.Network(name=net.name, shared=False), update_mask=mask),
        metadata=api.admin,
    )
    assert list(api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=bob).networks) == []
    assert list(api.stub.ListSubnets(pb.ListSubnetsRequest(), metadata=bob).subnets) == []


def test_cli_tags_description_share(sdnctl: Cli) -> None:
    sdnctl("network", "create", "web", "--tag", "prod", "--tag", "web", "--description", "front", "--share")
    sdnctl("network", "create", "db", "--tag", "prod")
    listed = rows(sdnctl("network", "list", "--long", "-f", "csv", "--tag", "web").out)
    assert [(r["Name"], r["Tags"], r["Shared"], r["Status"], r["Description"]) for r in listed] == [
        ("web", "prod, web", "true", "ACTIVE", "front")
    ]
    got = sdnctl("network", "set", "web", "--no-tag", "--no-share", "--disable", "-f", "json").json()
    assert (got["tags"], got["shared"], got["status"]) == ([], False, "DOWN")
    port = sdnctl("port", "create", "vm", "--network", "db", "--tag", "x", "-f", "json").json()
    assert port["tags"] == ["x"]
    assert sdnctl("port", "list", "--tag", "x", "-f", "value", "-c", "name").lines == [port["name"]]
    assert sdnctl("port", "list", "--tag", "y", "-f", "value", "-c", "name").lines == []
    res = sdnctl("network", "create", "bad", "--tag", "a,b", code=4)
    assert "network.tags[0]" in res.err


def test_export_then_apply_keeps_tags_description_share(sdnctl: Cli, tmp_path: Path) -> None:
    sdnctl("network", "create", "web", "--id", "web", "--tag", "prod", "--description", "front", "--share")
    sdnctl("port", "create", "vm", "--id", "vm", "--network", "web", "--tag", "x", "--description", "a VM")
    exported = sdnctl("export", "-f", "json").json()  # -f json: the document as JSON
    net = next(n for n in exported["networks"] if n["name"] == "networks/web")
    assert (net["tags"], net["description"], net["shared"]) == (["prod"], "front", True)
    (tmp_path / "doc.json").write_text(json.dumps(exported))
    assert "No changes" in sdnctl("apply", "-f", str(tmp_path / "doc.json"), "--plan").out


def test_neutron_rest_shows_and_sets_them(rest: Rest) -> None:
    """The Neutron API maps the fields where the messages have them: shared, tags, description, status."""
    body = {"network": {"name": "common", "shared": True, "description": "for all", "tags": ["b", "a"]}}
    net = rest.ok("POST", "/v2.0/networks", body, status=201)["network"]
    assert (net["shared"], net["description"], sorted(net["tags"]), net["status"]) == (
        True,
        "for all",
        ["a", "b"],
        "ACTIVE",
    )
    assert net["id"] in {n["id"] for n in rest.ok("GET", "/v2.0/networks", token="bob")["networks"]}
    got, _ = rest.call("POST", "/v2.0/networks", {"network": {"shared": True}}, "alice")
    assert got == 403  # sharing is the admin's, as Neutron's default policy has it
