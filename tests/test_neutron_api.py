"""The Neutron REST API over a real in-process server and store, spoken as plain HTTP: discovery, tokens,
Neutron's shapes (fields, filters, sorting, pagination links), status codes and NeutronError bodies, tenant
scope, and that REST and gRPC are the same tables (a write through one is read through the other)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controller.api.auth import Principal
from controller.neutron import extensions
from controller.neutron.kinds import ALL
from controller.neutron.mapping import View
from controller.neutron.rest import NeutronServer, listen
from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import InProcessServer


@dataclass
class Rest:
    url: str
    admin: str
    alice: str
    bob: str
    server: NeutronServer

    def call(self, method: str, path: str, body: Any = None, token: str | None = "admin") -> tuple[int, Any]:
        """(status, JSON answer or None); `token`: "admin", "alice", "bob", a raw token, or None."""
        tok = getattr(self, token, token) if token in ("admin", "alice", "bob") else token
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if tok is not None:
            req.add_header("X-Auth-Token", tok)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, token: str = "admin", status: int = 200) -> Any:
        got, answer = self.call(method, path, body, token)
        assert got == status, (got, answer)
        return answer


@pytest.fixture
def rest(server: InProcessServer) -> Iterator[Rest]:
    tokens = server.server.tokens
    srv = listen(server.server.topology, tokens, ALL, "127.0.0.1", 0)
    try:
        yield Rest(
            f"http://127.0.0.1:{srv.port}",
            server.api.admin_token,
            tokens.create("alice", False),
            tokens.create("bob", False),
            srv,
        )
    finally:
        srv.stop()


def error(answer: Any) -> tuple[str, str]:
    return answer["NeutronError"]["type"], answer["NeutronError"]["message"]


def public(rest: Rest) -> tuple[str, str]:
    net = rest.ok(
        "POST",
        "/v2.0/networks",
        {
            "network": {
                "name": "public",
                "router:external": True,
                "provider:network_type": "flat",
                "provider:physical_network": "ext",
            }
        },
        status=201,
    )["network"]
    sub = rest.ok(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "cidr": "203.0.113.0/24",
                "ip_version": 4,
                "enable_dhcp": False,
            }
        },
        status=201,
    )["subnet"]
    return net["id"], sub["id"]


def tenant_net(rest: Rest, token: str, name: str, cidr: str) -> tuple[str, str]:
    net = rest.ok("POST", "/v2.0/networks", {"network": {"name": name}}, token, 201)["network"]
    sub = rest.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": cidr, "ip_version": 4, "name": name + "-sub"}},
        token,
        201,
    )["subnet"]
    return net["id"], sub["id"]


# ------------------------------------------------------------------------------------------ discovery, auth


def test_discovery_is_open_everything_else_needs_a_token(
    rest: Rest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sdn.access")
    status, versions = rest.call("GET", "/", token=None)
    assert status == 200
    assert versions["versions"][0]["id"] == "v2.0"
    assert versions["versions"][0]["links"][0]["href"] == rest.url + "/v2.0/"
    status, v2 = rest.call("GET", "/v2.0/", token=None)
    assert status == 200
    assert {"networks", "subnets", "ports", "routers", "floatingips", "security-groups"} <= {
        r["collection"] for r in v2["resources"]
    }
    for token in (None, "sdn_not-a-token"):
        status, answer = rest.call("GET", "/v2.0/networks", token=token)
        assert status == 401 and error(answer)[0] == "HTTPUnauthorized"
    status, answer = rest.call("GET", "/v2.0/no-such-things")
    assert status == 404 and error(answer)[0] == "HTTPNotFound"
    rest.ok("GET", "/v2.0/networks", token="alice")
    # the access log has each request with its caller and status
    lines = [r.getMessage() for r in caplog.records if r.name == "sdn.access"]
    assert any(ln.startswith("GET /v2.0/networks tenant=- code=401 ") for ln in lines), lines
    assert any(ln.startswith("GET /v2.0/networks tenant=alice code=200 ") for ln in lines), lines


def test_extensions_list_only_what_is_served(rest: Rest) -> None:
    aliases = {e["alias"] for e in rest.ok("GET", "/v2.0/extensions")["extensions"]}
    assert {
        "router",
        "external-net",
        "provider",
        "security-group",
        "extraroute",
        "fwaas_v2",
        "vpnaas",
    } <= aliases
    assert "qos" not in aliases  # the plug-in is not loaded here
    assert ("standard-attr-description" in aliases) == ("description" in pb.Network.DESCRIPTOR.fields_by_name)
    assert "dvr" not in aliases and "l3-ha" not in aliases and "trunk" not in aliases
    assert rest.ok("GET", "/v2.0/extensions/router")["extension"]["alias"] == "router"
    status, answer = rest.call("GET", "/v2.0/extensions/trunk")
    assert status == 404 and error(answer)[0] == "ExtensionNotFound"
    served = frozenset(k.spec for k in rest.server.server.wsgi_app.kinds)
    assert aliases == {e["alias"] for e in extensions.supported(served)}


def test_every_kind_renders_every_message(rest: Rest) -> None:
    check_renders(rest)


def check_renders(rest: Rest) -> None:
    """Each served mapping's attributes read fields its message has (an empty message, for a tenant and an
    admin): a mapping naming a field its message lacks fails here, not on a client's request."""
    app = rest.server.server.wsgi_app
    for p in (Principal("alice", False), Principal("admin", True)):
        for kind in app.kinds:
            spec = app.tables.specs[kind.spec]
            module = spec.pb_module or pb
            message = type(getattr(getattr(module, f"Create{spec.rpc}Request")(), spec.kind))
            shown = app.render(kind, message(name="things/x"), View(p, app.tables))
            assert shown["id"] == "x" and "tenant_id" in shown and "project_id" in shown, kind


# ------------------------------------------------------------------------------------------ the core resources


def test_network_subnet_port_as_neutron_shows_them(rest: Rest, api: Any) -> None:
    net_id, sub_id = tenant_net(rest, "alice", "web", "10.0.0.0/24")
    net = rest.ok("GET", f"/v2.0/networks/{net_id}", token="alice")["network"]
    assert net["subnets"] == [sub_id] and net["status"] == "ACTIVE" and net["tenant_id"] == "alice"
    assert net["project_id"] == "alice" and net["router:external"] is False and net["shared"] is False
    assert "provider:network_type" not in net  # admin only, as Neutron's policy
    assert rest.ok("GET", f"/v2.0/networks/{net_id}")["network"]["provider:network_type"] == "vxlan"
    sub = rest.ok("GET", f"/v2.0/subnets/{sub_id}", token="alice")["subnet"]
    assert sub["gateway_ip"] == "10.0.0.1" and sub["allocation_pools"] == [
        {"start": "10.0.0.2", "end": "10.0.0.254"}
    ]
    assert sub["ip_version"] == 4 and sub["enable_dhcp"] is True and sub["dns_nameservers"] == []
    sub2 = rest.ok(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                "network_id": net_id,
                "cidr": "10.9.0.0/24",
                "ip_version": 4,
                "gateway_ip": None,
                "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.20"}],
                "dns_nameservers": ["10.9.0.53"],
                "host_routes": [{"destination": "192.0.2.0/24", "nexthop": "10.9.0.254"}],
            }
        },
        "alice",
        201,
    )["subnet"]
    assert sub2["gateway_ip"] is None and sub2["dns_nameservers"] == ["10.9.0.53"]
    assert sub2["host_routes"] == [{"destination": "192.0.2.0/24", "nexthop": "10.9.0.254"}]
    port = rest.ok(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": net_id,
                "name": "vm1",
                "fixed_ips": [{"subnet_id": sub_id, "ip_address": "10.0.0.10"}],
                "allowed_address_pairs": [{"ip_address": "10.0.0.200"}],
                "device_owner": "compute:nova",
                "device_id": "vm-1",
            }
        },
        "alice",
        201,
    )["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub_id, "ip_address": "10.0.0.10"}]
    assert port["port_security_enabled"] is True and len(port["security_groups"]) == 1  # the default group
    assert port["allowed_address_pairs"][0]["ip_address"] == "10.0.0.200"
    assert "binding:host_id" not in port
    # the same record through gRPC
    got = api.stub.GetPort(pb.GetPortRequest(name=f"ports/{port['id']}"), metadata=api.md(rest.alice))
    assert got.display_name == "vm1" and got.fixed_ips[0].ip_address == "10.0.0.10"
    updated = rest.ok(
        "PUT", f"/v2.0/ports/{port['id']}", {"port": {"name": "vm1b", "admin_state_up": False}}, "alice"
    )
    assert updated["port"]["name"] == "vm1b" and updated["port"]["admin_state_up"] is False
    assert updated["port"]["revision_number"] > port["revision_number"]
    rest.ok("DELETE", f"/v2.0/ports/{port['id']}", token="alice", status=204)
    status, answer = rest.call("GET", f"/v2.0/ports/{port['id']}", token="alice")
    assert status == 404 and error(answer) == ("PortNotFound", f"Port {port['id']} could not be found.")


def test_errors_as_neutron_answers_them(rest: Rest) -> None:
    net_id, sub_id = tenant_net(rest, "alice", "a", "10.0.0.0/24")
    cases = [
        # (method, path, body, token, status, type, words in the message)
        (
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": net_id, "cidr": "10.0.0.0/33", "ip_version": 4}},
            "alice",
            400,
            "HTTPBadRequest",
            "Invalid input for cidr",
        ),
        (
            "POST",
            "/v2.0/networks",
            {"network": {"name": "x", "flavor": "gold"}},
            "alice",
            400,
            "HTTPBadRequest",
            "Unrecognized attribute(s) 'flavor'",
        ),
        (
            "POST",
            "/v2.0/networks",
            {"network": {"admin_state_up": "maybe"}},
            "alice",
            400,
            "HTTPBadRequest",
            "'maybe' is not a valid boolean value",
        ),
        (
            "POST",
            "/v2.0/networks",
            {"network": {"provider:network_type": "vlan", "provider:physical_network": "p"}},
            "alice",
            403,
            "PolicyNotAuthorized",
            "admin only",
        ),
        (
            "POST",
            "/v2.0/networks",
            {"network": {"router:external": True}},
            "alice",
            403,
            "PolicyNotAuthorized",
            "admin only",
        ),
        (
            "POST",
            "/v2.0/networks",
            {"networks": [{}]},
            "alice",
            400,
            "HTTPBadRequest",
            "Resource body required",
        ),
        (
            "PUT",
            f"/v2.0/subnets/{sub_id}",
            {"subnet": {"cidr": "10.1.0.0/24"}},
            "alice",
            400,
            "HTTPBadRequest",
            "Cannot update read-only attribute cidr",
        ),
        (
            "PUT",
            f"/v2.0/networks/{net_id}",
            {"network": {"subnets": []}},
            "alice",
            400,
            "HTTPBadRequest",
            "Cannot update read-only attribute subnets",
        ),
        (
            "GET",
            f"/v2.0/networks/{net_id}",
            None,
            "bob",
            404,
            "NetworkNotFound",
            f"Network {net_id} could not be found",
        ),
        ("POST", "/v2.0/ports", {"port": {"network_id": net_id}}, "bob", 404, "NetworkNotFound", net_id),
        ("GET", "/v2.0/networks/no-such/thing", None, "alice", 404, "HTTPNotFound", "could not be found"),
        ("GET", "/v2.0/networks/not%20an%20id", None, "alice", 404, "NetworkNotFound", "could not be found"),
        ("DELETE", f"/v2.0/networks/{net_id}", None, "bob", 404, "NetworkNotFound", net_id),
        ("GET", "/v2.0/networks?sort_key=colour", None, "alice", 400, "HTTPBadRequest", "colour"),
        ("GET", "/v2.0/networks?limit=-1", None, "alice", 400, "HTTPBadRequest", "limit"),
        ("PATCH", f"/v2.0/networks/{net_id}", {}, "alice", 405, "HTTPMethodNotAllowed", "PATCH"),
    ]
    for method, path, body, token, status, etype, words in cases:
        got, answer = rest.call(method, path, body, token)
        assert got == status, (method, path, got, answer)
        assert error(answer)[0] == etype and words in error(answer)[1], (method, path, answer)
    rest.ok(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.0.0.7"}]}},
        "alice",
        201,
    )
    got, answer = rest.call(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.0.0.7"}]}},
        "alice",
    )
    assert got == 409 and error(answer) == (
        "IpAddressAlreadyAllocated",
        f"IP address 10.0.0.7 already allocated in subnet {sub_id}",
    )
    got, answer = rest.call("DELETE", f"/v2.0/networks/{net_id}", token="alice")
    assert got == 409, answer  # it has a port: Neutron's NetworkInUse is a 409 too
    got, answer = rest.call("POST", "/v2.0/networks", b"{not json", "alice")
    assert got == 400


def test_tenants_see_their_own_and_external_networks(rest: Rest) -> None:
    ext, _ = public(rest)
    a, _ = tenant_net(rest, "alice", "a", "10.0.0.0/24")
    b, _ = tenant_net(rest, "bob", "b", "10.0.0.0/24")  # overlapping: another tenant
    ids = lambda token, q="": {n["id"] for n in rest.ok("GET", "/v2.0/networks" + q, token=token)["networks"]}
    assert ids("alice") == {ext, a} and ids("bob") == {ext, b} and ids("admin") == {ext, a, b}
    assert ids("admin", "?tenant_id=bob") == {b} and ids("admin", "?project_id=alice") == {a}
    assert ids("alice", "?router:external=True") == {ext} and ids("alice", "?router:external=false") == {a}
    # the admin creates for a tenant
    made = rest.ok("POST", "/v2.0/networks", {"network": {"name": "for-bob", "tenant_id": "bob"}}, status=201)
    assert made["network"]["tenant_id"] == "bob" and made["network"]["id"] in ids("bob")
    got, answer = rest.call("POST", "/v2.0/networks", {"network": {"project_id": "bob"}}, "alice")
    assert got == 403 and error(answer)[0] == "PolicyNotAuthorized"


def test_fields_filters_sorting_and_pagination(rest: Rest) -> None:
    made = {}
    for i, name in enumerate(["e", "c", "a", "d", "b"]):
        net = rest.ok(
            "POST", "/v2.0/networks", {"network": {"name": name, "admin_state_up": i % 2 == 0}}, "alice", 201
        )
        made[name] = net["network"]["id"]
    listed = rest.ok("GET", "/v2.0/networks?fields=id&fields=name", token="alice")["networks"]
    assert all(set(n) == {"id", "name"} for n in listed) and len(listed) == 5
    assert rest.ok("GET", "/v2.0/networks?fields=id,status", token="alice")["networks"][0].keys() == {
        "id",
        "status",
    }
    names = lambda q: [n["name"] for n in rest.ok("GET", "/v2.0/networks" + q, token="alice")["networks"]]
    assert names("?sort_key=name&sort_dir=asc") == ["a", "b", "c", "d", "e"]
    assert names("?sort_key=name&sort_dir=desc") == ["e", "d", "c", "b", "a"]
    assert names("?sort_key=admin_state_up&sort_dir=desc&sort_key=name&sort_dir=asc") == [
        "a",
        "b",
        "e",
        "c",
        "d",
    ]
    assert sorted(names("?name=a&name=b")) == ["a", "b"] and names("?admin_state_up=False&sort_key=name") == [
        "c",
        "d",
    ]
    assert names(f"?id={made['d']}") == ["d"] and names("?name=zzz") == []
    # walk the pages by their links: every network once, in order, 2 at a time
    seen: list[str] = []
    path = "/v2.0/networks?sort_key=name&limit=2"
    pages = 0
    while path:
        answer = rest.ok("GET", path, token="alice")
        pages += 1
        seen += [n["name"] for n in answer["networks"]]
        nexts = [link["href"] for link in answer.get("networks_links", []) if link["rel"] == "next"]
        path = nexts[0].removeprefix(rest.url) if nexts else ""
        assert pages < 10
    assert seen == ["a", "b", "c", "d", "e"] and pages == 3
    # backwards from the last: page_reverse gives the rows before the marker, in the sort order
    back = rest.ok(
        "GET", f"/v2.0/networks?sort_key=name&limit=2&marker={made['e']}&page_reverse=True", token="alice"
    )
    assert [n["name"] for n in back["networks"]] == ["c", "d"]
    rels = {link["rel"] for link in back["networks_links"]}
    assert rels == {"next", "previous"}
    first = rest.ok("GET", "/v2.0/networks?sort_key=name&limit=2", token="alice")
    assert {link["rel"] for link in first["networks_links"]} == {"next"}  # nothing before the first page
    status, answer = rest.call("GET", "/v2.0/networks?marker=nope&limit=1", token="alice")
    assert status == 400


def test_routers_interfaces_floating_ips(rest: Rest, api: Any) -> None:
    ext, ext_sub = public(rest)
    net, sub = tenant_net(rest, "alice", "a", "10.0.0.0/24")
    router = rest.ok(
        "POST",
        "/v2.0/routers",
        {"router": {"name": "r", "external_gateway_info": {"network_id": ext}}},
        "alice",
        201,
    )["router"]
    gw = router["external_gateway_info"]
    assert gw["network_id"] == ext and gw["enable_snat"] is True
    assert gw["external_fixed_ips"][0]["subnet_id"] == ext_sub
    added = rest.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub}, "alice")
    assert added["subnet_id"] == sub and added["network_id"] == net and added["id"] == router["id"]
    iface = rest.ok("GET", f"/v2.0/ports/{added['port_id']}", token="alice")["port"]
    assert iface["device_owner"] == "network:router_interface" and iface["device_id"] == router["id"]
    assert iface["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.1"}]
    owned = rest.ok(
        "GET", f"/v2.0/ports?device_id={router['id']}&device_owner=network:router_interface", token="alice"
    )
    assert [p["id"] for p in owned["ports"]] == [added["port_id"]]
    routes = [{"destination": "192.0.2.0/24", "nexthop": "10.0.0.254"}]
    assert (
        rest.ok("PUT", f"/v2.0/routers/{router['id']}", {"router": {"routes": routes}}, "alice")["router"][
            "routes"
        ]
        == routes
    )
    port = rest.ok("POST", "/v2.0/ports", {"port": {"network_id": net}}, "alice", 201)["port"]
    fip = rest.ok(
        "POST",
        "/v2.0/floatingips",
        {"floatingip": {"floating_network_id": ext, "port_id": port["id"]}},
        "alice",
        201,
    )["floatingip"]
    assert fip["router_id"] == router["id"] and fip["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    assert fip["status"] == "ACTIVE" and fip["floating_ip_address"].startswith("203.0.113.")
    assert (
        rest.ok("GET", f"/v2.0/floatingips?port_id={port['id']}", token="alice")["floatingips"][0]["id"]
        == fip["id"]
    )
    # gRPC sees the association
    got = api.stub.GetFloatingIp(
        pb.GetFloatingIpRequest(name=f"floatingIps/{fip['id']}"), metadata=api.md(rest.alice)
    )
    assert got.port == f"ports/{port['id']}"
    off = rest.ok("PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}}, "alice")[
        "floatingip"
    ]
    assert off["port_id"] is None and off["status"] == "DOWN" and off["router_id"] is None
    status, answer = rest.call("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {}, "alice")
    assert status == 400 and "subnet_id or port_id" in error(answer)[1]
    status, answer = rest.call(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub}, "bob"
    )
    assert status == 404 and error(answer)[0] == "RouterNotFound"
    status, answer = rest.call(
        "PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub}, "alice"
    )
    assert status == 409 and error(answer)[0] == "RouterInterfaceInUse"  # a route's nexthop is behind it
    rest.ok("PUT", f"/v2.0/routers/{router['id']}", {"router": {"routes": []}}, "alice")
    rest.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub}, "alice")
    status, _ = rest.call("GET", f"/v2.0/ports/{added['port_id']}", token="alice")
    assert status == 404
    cleared = rest.ok(
        "PUT", f"/v2.0/routers/{router['id']}", {"router": {"external_gateway_info": {}}}, "alice"
    )
    assert cleared["router"]["external_gateway_info"] is None


def test_security_groups_and_rules(rest: Rest) -> None:
    group = rest.ok(
        "POST", "/v2.0/security-groups", {"security_group": {"name": "web", "description": "w"}}, "alice", 201
    )
    sg = group["security_group"]
    assert sg["name"] == "web" and sg["description"] == "w" and sg["stateful"] is True
    assert {r["direction"] for r in sg["security_group_rules"]} == {"egress"}  # Neutron's two egress rules
    tcp = rest.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": sg["id"],
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 81,
                "remote_ip_prefix": "0.0.0.0/0",
                "ethertype": "IPv4",
            }
        },
        "alice",
        201,
    )["security_group_rule"]
    assert (tcp["port_range_min"], tcp["port_range_max"], tcp["protocol"]) == (80, 81, "tcp")
    icmp = rest.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": sg["id"],
                "direction": "ingress",
                "protocol": "icmp",
                "port_range_min": 8,
                "port_range_max": 0,
            }
        },
        "alice",
        201,
    )["security_group_rule"]
    assert (icmp["port_range_min"], icmp["port_range_max"]) == (8, 0) and "icmp_type" not in icmp
    any_rule = rest.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": sg["id"],
                "direction": "ingress",
                "remote_group_id": sg["id"],
            }
        },
        "alice",
        201,
    )["security_group_rule"]
    assert (
        any_rule["protocol"] is None
        and any_rule["remote_group_id"] == sg["id"]
        and any_rule["port_range_min"] is None
    )
    listed = rest.ok(
        "GET", f"/v2.0/security-group-rules?security_group_id={sg['id']}&direction=ingress", token="alice"
    )
    assert {r["id"] for r in listed["security_group_rules"]} == {tcp["id"], icmp["id"], any_rule["id"]}
    status, answer = rest.call(
        "PUT", f"/v2.0/security-group-rules/{tcp['id']}", {"security_group_rule": {}}, "alice"
    )
    assert status == 405
    status, answer = rest.call(
        "POST",
        "/v2.0/security-group-rules",
        {"security_group_rule": {"security_group_id": sg["id"], "direction": "sideways"}},
        "alice",
    )
    assert status == 400 and "direction" in error(answer)[1]
    rest.ok("DELETE", f"/v2.0/security-group-rules/{icmp['id']}", token="alice", status=204)
    status, _ = rest.call("DELETE", f"/v2.0/security-groups/{sg['id']}", token="bob")
    assert status == 404
    rest.ok("DELETE", f"/v2.0/security-groups/{sg['id']}", token="alice", status=204)


def test_octavia_shapes_and_cascade_delete(rest: Rest) -> None:
    _, sub = tenant_net(rest, "alice", "a", "10.0.0.0/24")
    for prefix in ("/v2/lbaas", "/v2.0/lbaas"):  # Octavia answers both; python-octaviaclient asks the second
        lb = rest.ok(
            "POST", f"{prefix}/loadbalancers", {"loadbalancer": {"vip_subnet_id": sub}}, "alice", 201
        )
        lb = lb["loadbalancer"]
        assert (
            lb["provisioning_status"] == "ACTIVE"
            and lb["vip_port_id"]
            and lb["vip_address"].startswith("10.0.0.")
        )
        listener = rest.ok(
            "POST", f"{prefix}/listeners", {"listener": {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}},
            "alice", 201,
        )["listener"]  # fmt: skip
        pool = rest.ok(
            "POST", f"{prefix}/pools", {"pool": {"listener_id": listener["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}},
            "alice", 201,
        )["pool"]  # fmt: skip
        member = rest.ok(
            "POST", f"{prefix}/pools/{pool['id']}/members", {"member": {"address": "10.0.0.20", "protocol_port": 8080}},
            "alice", 201,
        )["member"]  # fmt: skip
        assert member["weight"] == 1 and member["subnet_id"] is None
        shown = rest.ok("GET", f"{prefix}/loadbalancers/{lb['id']}", token="alice")["loadbalancer"]
        assert shown["listeners"] == [{"id": listener["id"]}] and shown["pools"] == [{"id": pool["id"]}]
        assert rest.ok("GET", f"{prefix}/pools/{pool['id']}", token="alice")["pool"]["members"] == [
            {"id": member["id"]}
        ]
        status, answer = rest.call("GET", f"{prefix}/pools/{pool['id']}/members/{member['id']}", token="bob")
        assert status == 404 and "faultstring" in answer  # Octavia's error body
        status, answer = rest.call("DELETE", f"{prefix}/loadbalancers/{lb['id']}", token="alice")
        assert status == 409, answer  # it has listeners: cascade, or delete them first
        rest.ok("DELETE", f"{prefix}/loadbalancers/{lb['id']}?cascade=true", token="alice", status=204)
        assert rest.ok("GET", f"{prefix}/listeners", token="alice")["listeners"] == []


def test_a_dual_stack_gateway_through_external_fixed_ips(rest: Rest) -> None:
    """external_fixed_ips lists the gateway's addresses: one of each family at once; an IPv6 one alone (which
    would drop the IPv4 address and its SNAT) is refused with 409, leaving the gateway as it was."""
    ext, ext_sub = public(rest)
    v6 = rest.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": ext, "cidr": "2001:db8:113::/64", "ip_version": 6, "enable_dhcp": False}},
        status=201,
    )["subnet"]
    both = [{"subnet_id": ext_sub}, {"subnet_id": v6["id"]}]
    router = rest.ok(
        "POST",
        "/v2.0/routers",
        {"router": {"name": "r", "external_gateway_info": {"network_id": ext, "external_fixed_ips": both}}},
        status=201,
    )["router"]
    fixed = router["external_gateway_info"]["external_fixed_ips"]
    assert [f["subnet_id"] for f in fixed] == [ext_sub, v6["id"]], fixed
    assert fixed[0]["ip_address"].startswith("203.0.113.") and fixed[1]["ip_address"].startswith(
        "2001:db8:113::"
    )
    url = f"/v2.0/routers/{router['id']}"
    status, answer = rest.call(
        "PUT",
        url,
        {
            "router": {
                "external_gateway_info": {"network_id": ext, "external_fixed_ips": [{"subnet_id": v6["id"]}]}
            }
        },
    )
    assert status == 409 and "IPv4" in error(answer)[1], answer
    assert rest.ok("GET", url)["router"]["external_gateway_info"]["external_fixed_ips"] == fixed
    # the IPv4 address alone: the IPv6 one goes, the IPv4 one stays
    only4 = [{"ip_address": fixed[0]["ip_address"]}]
    got = rest.ok(
        "PUT", url, {"router": {"external_gateway_info": {"network_id": ext, "external_fixed_ips": only4}}}
    )
    assert got["router"]["external_gateway_info"]["external_fixed_ips"] == fixed[:1]
