"""The web dashboard: its JSON API refuses requests without a known token, scopes tenants to their own
objects, streams topology changes; and, in headless Chromium against a real controller and lab, it shows
the topology, a chassis's flow tables by stage and a trace's path (screenshots in test-artifacts/)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]

from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from controller.dashboard import DashboardServer, views
from controller.dashboard.client import Api as DashboardApi
from controller.dashboard.client import Caller
from controller.dataplane import Dataplane
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ROOT, Api, InProcessServer, free_port
from tests.test_dataplane_nat import FakeAgent, FakeEngine
from topology.state import State

ARTIFACTS = ROOT / "test-artifacts"
GRAFANA = ROOT / "dashboards" / "grafana-sdn.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
PROMETHEUS_YML = ROOT / "dashboards" / "prometheus.yml"
PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus (scripts/setup.sh); Grafana has no Debian package
#: a metric in a PromQL expression, and its label matchers if it has some
METRIC_SELECTOR = re.compile(r"\b((?:sdn|process)_[a-z0-9_]+)(\{[^}]*\})?")
API_PATHS = [
    "/api/whoami",
    "/api/topology",
    "/api/chassis",
    "/api/flows?chassis=hv1",
    "/api/trace?src=a&dst=b",
    "/api/trace/ports",
    "/api/events?from=1",
]


def get(
    port: int, path: str, token: str | None = None, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request(method, path, headers=hdrs)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type", "")
    return resp.status, json.loads(body) if ctype.startswith("application/json") else body.decode()


@pytest.fixture
def dashboard(server: InProcessServer) -> Iterator[DashboardServer]:
    dash = DashboardServer(server.api.channel, "127.0.0.1:0")
    dash.start()
    try:
        yield dash
    finally:
        dash.stop()


def caller(server: InProcessServer, token: str) -> Caller:
    """The dashboard's way to the API, as the holder of `token`."""
    return DashboardApi(server.api.channel).as_caller(token)


@dataclass
class Traced(InProcessServer):
    dataplane: Dataplane


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    """An ApiServer with a dataplane (its switches and OVSDB agents faked): the DebugService answers."""
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    dp = Dataplane(
        state,
        engine_factory=lambda _dpid, _cb: FakeEngine(),
        agent_factory=lambda _ch, _cb: FakeAgent(),
        neighbors_file=tmp_path / "neighbors.json",
        tick_s=0,
    )
    dp.start()
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=8, dataplane=dp)
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    api = Api(f"127.0.0.1:{srv.port}", tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel))
    try:
        yield Traced(api, srv, state, tmp_path, dp)
    finally:
        channel.close()
        srv.stop(0)
        dp.stop()
        state.close()


def _plug(server: Traced, *ports: str) -> None:
    """hv1's OVSDB reports a VIF for each port (ofports 1, 2...): the dataplane binds them there."""
    dp = server.dataplane
    vifs = {p: i for i, p in enumerate(ports, 1)}
    dp._on_runtime("hv1", SimpleNamespace(vifs=vifs, tunnels={}, patches={}, connected=True))
    dp.settle()
    deadline = time.monotonic() + 10
    while any(server.state.topology.ports[p].binding_chassis != "hv1" for p in ports):
        assert time.monotonic() < deadline, "ports not bound"
        time.sleep(0.02)


def _seed(api: Api) -> dict[str, str]:
    """alice and bob, each with a network, a subnet and a port; a chassis (admin only)."""
    tokens = {t: api.tenant_token(t) for t in ("alice", "bob")}
    for tenant, token in tokens.items():
        md = api.md(token)
        net = api.stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(display_name="web"), network_id=f"{tenant}-web"),
            metadata=md,
        )
        api.stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/24"), subnet_id=f"{tenant}-web-v4"
            ),
            metadata=md,
        )
        api.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=net.name), port_id=f"{tenant}-vm1"), metadata=md
        )
    api.stub.CreateChassis(
        pb.CreateChassisRequest(chassis=pb.Chassis(datapath_id=1, tunnel_ip="192.0.2.11"), chassis_id="hv1"),
        metadata=api.admin,
    )
    return tokens


def test_every_endpoint_refuses_a_missing_or_bad_token(dashboard: DashboardServer) -> None:
    for path in API_PATHS:
        status, body = get(dashboard.port, path)
        assert status == 401, (path, body)
        assert "error" in body
        assert get(dashboard.port, path, token="sdn_not-a-token")[0] == 401, path
        assert get(dashboard.port, path, headers={"Authorization": "Basic YWRtaW46eA=="})[0] == 401, path
    # the page itself carries no data: it is served to anyone, with a strict CSP
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", "/")
    resp = conn.getresponse()
    page = resp.read().decode()
    assert resp.status == 200 and 'id="login-form"' in page
    assert "default-src 'self'" in (resp.getheader("Content-Security-Policy") or "")
    assert get(dashboard.port, "/static/../../auth.py")[0] == 404
    assert get(dashboard.port, "/api/topology", token="x", method="POST")[0] == 405  # read-only


def test_a_tenant_sees_only_its_own_objects(server: InProcessServer, dashboard: DashboardServer) -> None:
    tokens = _seed(server.api)
    status, me = get(dashboard.port, "/api/whoami", tokens["alice"])
    assert status == 200 and me["tenant"] == "alice" and not me["admin"]

    _, topo = get(dashboard.port, "/api/topology", tokens["alice"])
    ids = {n["id"] for n in topo["nodes"]}
    assert ids == {"tenant:alice", "network:alice-web", "port:alice-vm1"}
    assert not any("bob" in json.dumps(n) for n in topo["nodes"])
    assert {(e["source"], e["target"]) for e in topo["edges"]} == {
        ("tenant:alice", "network:alice-web"),
        ("network:alice-web", "port:alice-vm1"),
    }
    net = next(n for n in topo["nodes"] if n["id"] == "network:alice-web")
    assert net["details"]["subnets"][0]["cidr"] == "10.0.0.0/24"
    for path in (
        "/api/chassis",
        "/api/flows?chassis=hv1",
        "/api/trace/ports",
        "/api/trace?src=alice-vm1&dst=x",
    ):
        assert get(dashboard.port, path, tokens["alice"])[0] == 403, path

    _, topo = get(dashboard.port, "/api/topology", server.api.admin_token)
    ids = {n["id"] for n in topo["nodes"]}
    assert {"tenant:alice", "tenant:bob", "network:bob-web", "port:bob-vm1", "chassis:hv1"} <= ids
    assert all(0 <= n["x"] <= 1 and 0 <= n["y"] <= 1 for n in topo["nodes"])


def test_the_dashboard_shows_each_token_what_the_api_shows_it(
    server: InProcessServer, dashboard: DashboardServer
) -> None:
    api = server.api
    tokens = {**_seed(api), "admin": api.admin_token}
    api.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name="edge"), router_id="bob-r"),
        metadata=api.md(tokens["bob"]),
    )
    for who, token in tokens.items():
        md = api.md(token)
        listed = {
            *(
                f"network:{n.name.split('/')[1]}"
                for n in api.stub.ListNetworks(pb.ListNetworksRequest(), metadata=md).networks
            ),
            *(
                f"port:{x.name.split('/')[1]}"
                for x in api.stub.ListPorts(pb.ListPortsRequest(), metadata=md).ports
            ),
            *(
                f"router:{r.name.split('/')[1]}"
                for r in api.stub.ListRouters(pb.ListRoutersRequest(), metadata=md).routers
            ),
        }
        _, topo = get(dashboard.port, "/api/topology", token)
        shown = {n["id"] for n in topo["nodes"] if n["kind"] in ("network", "port", "router")}
        assert shown == listed, who
        assert all(e["source"] in {n["id"] for n in topo["nodes"]} for e in topo["edges"]), who
    _, mine = get(dashboard.port, "/api/topology", tokens["alice"])
    assert {n["id"] for n in mine["nodes"]} == {"tenant:alice", "network:alice-web", "port:alice-vm1"}
    _, everything = get(dashboard.port, "/api/topology", tokens["admin"])
    assert {"tenant:alice", "tenant:bob", "router:bob-r", "port:bob-vm1", "chassis:hv1"} <= {
        n["id"] for n in everything["nodes"]
    }
    assert everything["counts"]["subnets"] == 2 and mine["counts"]["subnets"] == 1
    # the admin's trace form offers every tenant's ports
    _, ports = get(dashboard.port, "/api/trace/ports", tokens["admin"])
    assert {"alice-vm1", "bob-vm1"} <= {x["id"] for x in ports["ports"]}


def test_dashboard_errors_never_reveal_another_tenants_objects(traced: Traced) -> None:
    tokens = _seed(traced.api)
    _plug(traced, "alice-vm1", "bob-vm1")
    alice = caller(traced, tokens["alice"])
    admin = caller(traced, traced.api.admin_token)
    bob = traced.state.topology.ports["bob-vm1"]
    # tracing is the admin's (a trace shows every tenant's flows): alice naming bob's port as the source or
    # the destination, or bob's MAC, is refused exactly as alice naming nobody's (over HTTP: 403)
    for theirs_form, nobodys_form in (
        ({"src": "bob-vm1", "dst": "10.0.0.5"}, {"src": "nobody-vm1", "dst": "10.0.0.5"}),
        ({"src": "alice-vm1", "dst": "bob-vm1"}, {"src": "alice-vm1", "dst": "nobody-vm1"}),
        ({"src": "alice-vm1", "dst": bob.mac}, {"src": "alice-vm1", "dst": "02:00:00:00:99:99"}),
    ):
        with pytest.raises(grpc.RpcError) as theirs:
            views.trace(alice, theirs_form)
        with pytest.raises(grpc.RpcError) as nobodys:
            views.trace(alice, nobodys_form)
        assert theirs.value.code() == nobodys.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert theirs.value.details() == nobodys.value.details() and "bob" not in theirs.value.details()
    # the form goes to the API as it is: the dashboard looks up no port of its own (bob's MAC is no port it
    # knows of, it carries no address of bob's)
    req = views.trace_request({"src": "alice-vm1", "dst": bob.mac})
    assert dict(req.headers) == {"ip_proto": "1", "eth_dst": bob.mac} and not req.destination_port
    # a port that does not exist is the API's NOT_FOUND, in its words
    with pytest.raises(views.NotFound, match="nobody-vm1"):
        views.trace(admin, {"src": "nobody-vm1", "dst": "10.0.0.5"})
    with pytest.raises(views.NotFound, match="nobody-vm1"):
        views.trace(admin, {"src": "alice-vm1", "dst": "nobody-vm1"})


def test_the_dashboard_imports_nothing_of_the_api_but_the_contract() -> None:
    """A client of the API: the generated stubs, never controller.api (servicers, private helpers)."""
    import ast

    for f in (ROOT / "controller" / "dashboard").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n == "controller.api" or n.startswith("controller.api.") for n in names), (
                f,
                names,
            )


def test_routers_join_their_networks_in_the_graph(
    server: InProcessServer, dashboard: DashboardServer
) -> None:
    api = server.api
    tokens = _seed(api)
    md = api.md(tokens["alice"])
    api.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name="edge"), router_id="r1"), metadata=md
    )
    api.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name="routers/r1", subnet="subnets/alice-web-v4"), metadata=md
    )
    _, topo = get(dashboard.port, "/api/topology", tokens["alice"])
    router = next(n for n in topo["nodes"] if n["id"] == "router:r1")
    assert router["label"] == "edge" and router["details"]["interfaces"] == ["alice-web"]
    edges = {(e["source"], e["target"], e["kind"]) for e in topo["edges"]}
    assert ("router:r1", "network:alice-web", "routes") in edges
    assert ("tenant:alice", "router:r1", "owns") in edges
    assert topo["layers"] == ["tenant", "router", "network", "port"]  # no chassis row for a tenant
    _, bobs = get(dashboard.port, "/api/topology", tokens["bob"])
    assert not any(n["kind"] == "router" for n in bobs["nodes"]) and "router" not in bobs["layers"]


def test_labels_are_names_with_the_tenant_or_id_only_where_a_name_repeats() -> None:
    uuid = "3f2a9c1d-0b7e-4c52-9a61-0c8d2e4f5a6b"
    got = views.labels(
        [
            ("alice-vm1", "vm1", "alice"),  # two tenants' vm1: the tenant tells them apart
            ("bob-vm1", "vm1", "bob"),
            (uuid, "vm1", "carol"),  # carol has two: their ids do
            ("carol-2", "vm1", "carol"),
            ("db1", "db", "alice"),  # the only db: its name alone
            ("x", "", "alice"),  # no name: its id
        ]
    )
    assert got == {
        "alice-vm1": "vm1 (alice)",
        "bob-vm1": "vm1 (bob)",
        uuid: "vm1 (3f2a9c1d…)",
        "carol-2": "vm1 (carol-2)",
        "db1": "db",
        "x": "x",
    }
    assert len(set(got.values())) == len(got)


def test_ct_state_reads_as_ovs_flags_and_conntrack_is_no_drop() -> None:
    assert views.ct_states("ct(zone=1,commit) -> ct_state=0x21") == "ct(zone=1,commit) -> ct_state=+new+trk"
    assert views.ct_states("ct_state=0x2a") == "ct_state=+est+rpl+trk"
    assert views.ct_states("ip,ct_state=0x20/0x22 actions=drop") == "ip,ct_state=-est+trk actions=drop"
    assert views.ct_states("ct_state=+inv+trk") == "ct_state=+inv+trk"  # already flags: as it is
    # the notes the walker (flows/walker.py) writes for steps without a flow of their own
    assert views.step_kind("", "ct(zone=3) -> ct_state=0x21") == "ct"
    assert views.step_kind("", "group 4 bucket 0") == "note"
    assert views.step_kind("", "output:1 is in_port: skipped") == "note"
    for drop in ("", "no flow matched: drop", "dec_ttl: TTL expired", "group 7 missing: drop"):
        assert views.step_kind("", drop) == "drop", drop
    assert views.step_kind("cookie=0x1, table=0(classify), priority=1 actions=drop", "") == "flow"


def test_trace_and_flows_name_their_objects(traced: Traced) -> None:
    """Two tenants' ports both named vm1 and vm2: the trace form, the trace and the flow owners say the names
    (with the id where a name repeats); conntrack steps are "ct" with ct_state as +flags."""
    tokens = _seed(traced.api)
    api = traced.api
    for tenant, token in tokens.items():
        api.stub.UpdatePort(
            pb.UpdatePortRequest(port=pb.Port(name=f"ports/{tenant}-vm1", display_name="vm1")),
            metadata=api.md(token),
        )
        api.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(network=f"networks/{tenant}-web", display_name="vm2"), port_id=f"{tenant}-vm2"
            ),
            metadata=api.md(token),
        )
    _plug(traced, "alice-vm1", "alice-vm2", "bob-vm1")
    admin = caller(traced, api.admin_token)
    choices = {p["id"]: p for p in views.trace_choices(admin)}
    assert choices["alice-vm1"]["label"] == "vm1 (alice)" and choices["bob-vm1"]["label"] == "vm1 (bob)"
    assert (choices["alice-vm1"]["tenant"], choices["alice-vm1"]["network_label"]) == (
        "alice",
        "web (alice)",
    )
    assert [p["id"] for p in views.trace_choices(admin)][:2] == ["alice-vm1", "alice-vm2"]  # by tenant, name
    assert (
        choices["alice-vm1"]["choice"] == "vm1 — alice/web"
        and choices["bob-vm2"]["choice"] == "vm2 — bob/web"
    )
    # a tenant alone has one vm1: the name says it all
    alice = caller(traced, tokens["alice"])
    assert views.owner_names(alice)["alice-vm1"] == "vm1"

    r = views.trace(admin, {"src": "alice-vm1", "dst": "alice-vm2"})
    assert r["names"]["alice-vm1"] == "vm1 (alice)" and r["names"]["alice-web"] == "web (alice)"
    steps = [s for h in r["hops"] for s in h["steps"]]
    ct = [s for s in steps if s["kind"] == "ct"]
    assert ct and all(s["note"].startswith("ct(") for s in ct), steps
    assert any("ct_state=+new+trk" in s["note"] for s in ct), [s["note"] for s in ct]
    assert not any("ct_state=0x" in s["note"] + s["flow"] for s in steps)
    assert not any(s["kind"] == "drop" for s in steps), "a delivered packet has no drop step"
    # every security-group owner of a step is a rule with a name, not a bare id
    sg = {s["owner"].split("/", 1)[1] for s in steps if s["owner"].startswith("security_group/")}
    rules = sg - {"security-groups", "alice-vm1", "alice-vm2"}
    assert "default (alice): ingress any from group default (alice)" in r["names"].values()
    assert rules and all(r["names"].get(x, "").startswith("default (alice): ") for x in rules), (
        rules,
        list(r["names"].items()),
    )

    # a destination by name is the source's tenant's port of that name, never another tenant's
    for src, mine in (("alice-vm1", "alice-vm2"), ("bob-vm1", "bob-vm2")):
        r = views.trace(admin, {"src": src, "dst": "vm2"})
        assert r["request"]["dst_port"] == mine and f"ports/{mine}" in r["request"]["resolved"], r["request"]
    api.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(network="networks/alice-web", display_name="vm2"), port_id="alice-x"
        ),
        metadata=api.md(tokens["alice"]),
    )
    with pytest.raises(
        views.BadRequest, match=r"2 ports of tenant alice are named 'vm2': alice-vm2 .*alice-x"
    ):
        views.trace(admin, {"src": "alice-vm1", "dst": "vm2"})
    assert views.trace(admin, {"src": "alice-vm1", "dst": "alice-x"})["request"]["dst_port"] == "alice-x"
    # the flow view's owner column says the same names (its switch is the lab's: test_browser_...)
    names = views.owner_names(admin)
    assert names["bob-web"] == "web (bob)" and names["bob-vm2"] == "vm2 (bob)"
    assert (
        names["alice-vm2"] == "vm2 (alice-vm2)" and names["alice-x"] == "vm2 (alice-x)"
    )  # alice has two now


def test_trace_form_resolves_the_destination(traced: Traced) -> None:
    _seed(traced.api)
    _plug(traced, "alice-vm1")
    alice = traced.state.topology.ports["alice-vm1"]
    p = caller(traced, traced.api.admin_token)
    mac = alice.mac
    ip = alice.fixed_ips[0][1]
    r = views.trace(p, {"src": "alice-vm1", "dst": ip, "proto": "tcp", "dport": "22"})["request"]
    h = r["headers"]  # the packet the server traced: its eth_dst is what ARP for the address answers
    assert (r["src"], h["eth_dst"], h["ipv4_dst"], h["tcp_dst"], h["ip_proto"]) == (
        "alice-vm1",
        mac,
        ip,
        "22",
        "6",
    )
    assert r["resolved"] == f"ports/alice-vm1 ({ip})"
    h = views.trace(p, {"src": "alice-vm1", "dst": mac.upper()})["request"]["headers"]
    assert h["eth_dst"] == mac and h["icmpv4_type"] == "8"
    r = views.trace(p, {"src": "alice-vm1", "dst": "10.0.0.99", "proto": "arp"})["request"]
    h = r["headers"]
    assert h["eth_dst"] == "ff:ff:ff:ff:ff:ff" and h["arp_tpa"] == "10.0.0.99" and "no port" in r["resolved"]
    # an IP packet to that address: ARP for it is not answered, a real VM sends nothing
    with pytest.raises(views.BadRequest, match="ARP for it is not answered"):
        views.trace(p, {"src": "alice-vm1", "dst": "10.0.0.99"})
    with pytest.raises(views.NotFound):  # a port name that is no port
        views.trace(p, {"src": "alice-vm1", "dst": "nowhere"})
    for bad in (
        {"src": "alice-vm1", "dst": "no where"},
        {"src": "alice-vm1", "dst": ip, "proto": "gre"},
        {"src": "alice-vm1", "dst": ip, "proto": "udp", "dport": "70000"},
        {"src": "alice-vm1", "dst": mac, "proto": "arp"},
        {"src": "alice-vm1", "dst": ip, "flows": "both"},
    ):
        with pytest.raises(views.BadRequest):
            views.trace(p, bad)


def test_trace_form_sends_off_subnet_destinations_to_the_gateway(traced: Traced) -> None:
    tokens = _seed(traced.api)
    _plug(traced, "alice-vm1")
    api = traced.api
    md = api.md(tokens["alice"])
    net = api.stub.CreateNetwork(
        pb.CreateNetworkRequest(network=pb.Network(display_name="db"), network_id="alice-db"), metadata=md
    )
    subnet = pb.Subnet(network=net.name, cidr="10.5.0.0/24")
    api.stub.CreateSubnet(pb.CreateSubnetRequest(subnet=subnet, subnet_id="alice-db-v4"), metadata=md)
    db = api.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="alice-db1"), metadata=md
    )
    p = caller(traced, api.admin_token)
    # no router yet: alice-web's gateway address is nobody's, a real VM sends nothing
    with pytest.raises(views.BadRequest, match="ARP for it is not answered"):
        views.trace(p, {"src": "alice-vm1", "dst": "alice-db1"})
    api.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name="r"), router_id="r2"), metadata=md
    )
    for sub in ("alice-web-v4", "alice-db-v4"):
        req = pb.AddRouterInterfaceRequest(name="routers/r2", subnet=f"subnets/{sub}")
        api.stub.AddRouterInterface(req, metadata=md)
    gw = next(
        x for x in traced.state.topology.ports.values() if x.device_id == "r2" and x.network_id == "alice-web"
    )
    for dst in ("alice-db1", db.fixed_ips[0].ip_address):
        r = views.trace(p, {"src": "alice-vm1", "dst": dst, "proto": "tcp"})["request"]
        h = r["headers"]
        assert h["eth_dst"] == gw.mac and h["ipv4_dst"] == db.fixed_ips[0].ip_address, (dst, h)
        assert f"via default gateway 10.0.0.1 = ports/{gw.id} ({gw.mac})" in r["resolved"]
    # an explicit MAC is sent as given
    h = views.trace(p, {"src": "alice-vm1", "dst": db.mac_address})["request"]["headers"]
    assert h["eth_dst"] == db.mac_address


def _read_events(sock_file: Any, until: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    events, kind = [], ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = sock_file.readline().decode().rstrip("\n")
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and kind == "change":
            events.append(json.loads(line[5:]))
            if events[-1]["name"] == until:
                return events
    raise AssertionError(f"no event for {until} in {events}")


def test_event_stream_follows_watch_scoped_to_the_tenant(
    server: InProcessServer, dashboard: DashboardServer
) -> None:
    api = server.api
    tokens = _seed(api)
    _, topo = get(dashboard.port, "/api/topology", tokens["alice"])
    with socket.create_connection(("127.0.0.1", dashboard.port), timeout=10) as s:
        s.sendall(
            f"GET /api/events?from={topo['revision']} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {tokens['alice']}\r\n\r\n".encode()
        )
        f = s.makefile("rb")
        assert b"200" in f.readline()
        assert "text/event-stream" in f.readline().decode() + f.readline().decode() + f.readline().decode()
        # bob's port first, then alice's: alice's stream carries only hers
        for tenant in ("bob", "alice"):
            api.stub.CreatePort(
                pb.CreatePortRequest(port=pb.Port(network=f"networks/{tenant}-web"), port_id=f"{tenant}-vm2"),
                metadata=api.md(tokens[tenant]),
            )
        events = _read_events(f, until="ports/alice-vm2")
        assert all("bob" not in e["name"] for e in events), events
        assert events[-1]["type"] == "CREATED" and events[-1]["kind"] == "port"
        # revoking the token ends the stream
        api.stub.RevokeToken(pb.RevokeTokenRequest(token=tokens["alice"]), metadata=api.admin)
        s.settimeout(10)
        deadline = time.monotonic() + 10
        while f.read1(4096) and time.monotonic() < deadline:
            pass
        assert time.monotonic() < deadline, "the stream of a revoked token stayed open"
    assert get(dashboard.port, "/api/topology", tokens["alice"])[0] == 401


# ------------------------------------------------------------------------------------------------ grafana


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def _exported_names() -> set[str]:
    """Every series name the controller's registry exports (a counter's _total, a histogram's _bucket...)."""
    from prometheus_client.parser import text_string_to_metric_families

    from controller.debug.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for fam in text_string_to_metric_families(Metrics().exposition().decode()):
        names.update(fam.name + x for x in suffixes.get(fam.type, ("",)))
    return names


def test_grafana_dashboard_is_provisioning_ready() -> None:
    """The dashboard loads from a provisioning file as it is: its data source is its `datasource` variable
    (no import placeholder), every query is scoped by the `job` and `instance` variables and asks only for
    series the controller exports, and a panel without series shows 0, not "No data"."""
    text = GRAFANA.read_text()
    dash = json.loads(text)
    assert "${DS_" not in text and "__inputs" not in dash
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name in ("job", "instance", "chassis"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, v
    assert (
        variables["job"]["definition"].startswith("label_values(")
        and ", job)" in variables["job"]["definition"]
    )
    assert 'job="$job"' in variables["instance"]["definition"]
    assert 'job="$job", instance=~"$instance"' in variables["chassis"]["definition"]
    exported = _exported_names()
    targets = 0
    for p in _panels(dash["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["fieldConfig"]["defaults"]["noValue"] == "0", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            targets += 1
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            selectors = METRIC_SELECTOR.findall(t["expr"])
            assert selectors, (p["title"], t["expr"])
            for metric, matchers in selectors:
                assert metric in exported, f"panel {p['title']!r} asks for {metric}, not exported"
                assert 'job="$job"' in matchers and 'instance=~"$instance"' in matchers, (
                    p["title"],
                    t["expr"],
                )
            if re.search(r"\bsdn_\w+_total\b", t["expr"]):  # a count: no series means none happened, 0
                assert t["expr"].endswith(" or on() vector(0)"), (p["title"], t["expr"])
    assert targets >= 25


def test_grafana_provisioning_examples() -> None:
    """A file provider for the dashboard, a Prometheus data source, and the scrape job they expect."""
    providers = yaml.safe_load((PROVISIONING / "dashboards.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    sources = yaml.safe_load((PROVISIONING / "datasource.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "sdn-controller"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]  # metrics_listen's default


class Prometheus:
    """Debian's prometheus scraping the controller at `target` every second with dashboards/prometheus.yml's
    job (its own port, data in `data`; stopped by stop())."""

    def __init__(self, data: Path, target: str) -> None:
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        data.mkdir(parents=True, exist_ok=True)
        (data / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.target = target
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={data / 'prometheus.yml'}",
                f"--storage.tsdb.path={data / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(data / "prometheus.log", "wb"),  # noqa: SIM115 (closed with the process)
        )

    def get(self, path: str, **params: str) -> Any:
        from urllib.parse import urlencode
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.port}{path}?{urlencode(params)}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_scraped(self, times: int = 3, timeout: float = 30.0) -> None:
        """Until the target has been scraped `times` times (rate() needs two samples)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                series = self.get(
                    "/api/v1/query", query=f'count_over_time(up{{instance="{self.target}"}}[1m])'
                )
                if series["result"] and float(series["result"][0]["value"][1]) >= times:
                    return
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline and self.proc.poll() is None, "prometheus did not scrape"
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _check_grafana_queries(prom: Prometheus, chassis: set[str]) -> None:
    """Every query of the Grafana dashboard, its variables set as a person would pick them, run by a real
    Prometheus on a real controller's series: valid PromQL, and a series in every answer (no "No data")."""
    dash = json.loads(GRAFANA.read_text())
    prom.wait_scraped()
    assert "sdn-controller" in prom.get("/api/v1/label/job/values", **{"match[]": "sdn_store_revision"})
    instances = prom.get(
        "/api/v1/label/instance/values", **{"match[]": 'sdn_store_revision{job="sdn-controller"}'}
    )
    assert instances == [prom.target]
    selector = f'sdn_chassis_openflow_connected{{job="sdn-controller", instance=~"{prom.target}"}}'
    assert set(prom.get("/api/v1/label/chassis/values", **{"match[]": selector})) == chassis
    values = {"$job": "sdn-controller", "$instance": prom.target, "$chassis": ".*", "$__rate_interval": "1m"}
    empty = []
    for p in _panels(dash["panels"]):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in values.items():
                expr = expr.replace(var, value)
            result = prom.get("/api/v1/query", query=expr)["result"]
            if not result:
                empty.append((p["title"], expr))
            if "vector(0)" in expr:  # a controller that never counted any: 0, not "No data"
                nothing = prom.get("/api/v1/query", query=expr.replace('"sdn-controller"', '"no-such-job"'))
                assert [float(x["value"][1]) for x in nothing["result"]] == [0.0], (p["title"], nothing)
    assert not empty, empty


# ------------------------------------------------------------------------------------------------ browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser(profile: Path) -> Any:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a driver or browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def _full_screenshot(driver: Any, path: Path) -> None:
    """The whole page, not just the window."""
    height = driver.execute_script("return Math.max(document.body.scrollHeight, 700)")
    driver.set_window_size(1440, min(int(height) + 40, 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: node id -> [its label as drawn, its tooltip]
LABELS_JS = """return Object.fromEntries([...document.querySelectorAll('#graph .node')].map((n) =>
  [n.dataset.id, [n.querySelector('text').textContent, n.querySelector('title').textContent]]));"""
#: pairs of nodes whose label boxes (on the screen) intersect
OVERLAPS_JS = """const boxes = [...document.querySelectorAll('#graph .node')].flatMap((n) =>
  [...n.querySelectorAll('text')].map((t) => ({ id: n.dataset.id, r: t.getBoundingClientRect() })));
const bad = [];
boxes.forEach((a, i) => boxes.slice(i + 1).forEach((b) => {
  if (a.id !== b.id && a.r.left < b.r.right && b.r.left < a.r.right && a.r.top < b.r.bottom
      && b.r.top < a.r.bottom) bad.push([a.id, b.id]);
}));
return bad;"""
#: the flow view's owner cells: text, tooltip, overflow style, whether cut, right edge, packets' left edge
OWNER_CELLS_JS = """return [...document.querySelectorAll('#flows td.owner')].map((td) => {
  const cs = getComputedStyle(td);
  return { text: td.textContent, title: td.title, style: [cs.overflowX, cs.textOverflow, cs.whiteSpace],
    overflows: td.scrollWidth > td.clientWidth, right: td.getBoundingClientRect().right,
    packets_left: td.nextElementSibling.getBoundingClientRect().left };
});"""
#: the trace drawing's steps: kind, text, the fill of their box
STEPS_JS = """return [...document.querySelectorAll('#trace-drawing .step')].map((g) => ({
  kind: g.dataset.kind, text: g.textContent, fill: getComputedStyle(g.querySelector('rect')).fill }));"""


def _reddish(fill: str) -> bool:
    r, g, b = (int(v) for v in re.findall(r"\d+", fill)[:3])
    return r > g + 40 and r > b + 40


def _port(env: Any, md: Any, ident: str, net: pb.Network, ip: str, name: str) -> pb.Port:
    """A port with a display name (ident "": the API makes its id); ip "": the API picks one."""
    fixed = [pb.FixedIp(ip_address=ip)] if ip else []
    port = pb.Port(network=net.name, fixed_ips=fixed, display_name=name)
    return env.stub.CreatePort(pb.CreatePortRequest(port=port, port_id=ident), metadata=md)


@pytest.mark.lab
def test_browser_shows_topology_flows_and_a_trace(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """...and, on the same controller, a real Prometheus answers every query of the Grafana dashboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.e2e import lab_env

    ARTIFACTS.mkdir(exist_ok=True)
    assert Path(PROMETHEUS).exists(), "Debian's prometheus is not installed: run scripts/setup.sh"
    with lab_env(tmp_path, chassis=2, provider=False) as env:
        prom = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{env.controller.metrics_port}")
        request.addfinalizer(prom.stop)
        # the README demo's shape: alice and bob both on 10.0.0.0/24, a VM of each on each chassis, both
        # tenants' VMs named vm1 and vm2; carol's network and two ports "vm1" have ids the API made (UUIDs)
        tokens, nets = {}, {}
        for tenant in ("alice", "bob"):
            md = tokens[tenant] = env.md(tenant)
            net = nets[tenant] = env.network(md, f"{tenant}-web", "10.0.0.0/24", display_name="web")
            for vm, (ip, chassis) in {"vm1": ("10.0.0.11", "hv1"), "vm2": ("10.0.0.12", "hv2")}.items():
                env.plug(chassis, _port(env, md, f"{tenant}-{vm}", net, ip, vm), wait=False)
        carol = env.md("carol")
        carol_net = env.stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(display_name="web")), metadata=carol
        )
        carol_ports = [_port(env, carol, "", carol_net, "", "vm1").name.split("/")[1] for _ in range(2)]
        for tenant in ("alice", "bob"):
            for vm, chassis in (("vm1", "hv1"), ("vm2", "hv2")):
                env.wait_active(f"ports/{tenant}-{vm}", chassis)
        env.wait_realized()
        assert env.vms["alice-vm1"].ping("10.0.0.12", count=2)  # traffic, so hv1's counters move
        url = f"http://127.0.0.1:{env.controller.dashboard_port}/"
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            driver = _browser(Path(profile))
            wait = WebDriverWait(driver, 20)
            try:
                driver.get(url)
                wait.until(ec.visibility_of_element_located((By.ID, "token")))
                driver.save_screenshot(str(ARTIFACTS / "dashboard-login.png"))
                driver.find_element(By.ID, "token").send_keys("sdn_wrong")
                driver.find_element(By.ID, "login-button").click()
                wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "not known"))
                driver.find_element(By.ID, "token").clear()
                driver.find_element(By.ID, "token").send_keys(env.controller.admin_token())
                driver.find_element(By.ID, "login-button").click()

                # topology: networks, ports, chassis and their edges
                for node in (
                    "tenant:alice",
                    "tenant:bob",
                    "network:alice-web",
                    "network:bob-web",
                    "port:alice-vm1",
                    "port:alice-vm2",
                    "port:bob-vm1",
                    "port:bob-vm2",
                    "chassis:hv1",
                    "chassis:hv2",
                ):
                    wait.until(
                        ec.presence_of_element_located((By.CSS_SELECTOR, f'#graph .node[data-id="{node}"]'))
                    )
                wait.until(lambda d: "ACTIVE" in d.find_element(By.ID, "graph").text)
                assert driver.find_elements(By.CSS_SELECTOR, '#graph .edge.bound[data-target="chassis:hv2"]')
                wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
                driver.find_element(
                    By.CSS_SELECTOR, '#graph .node[data-id="network:alice-web"] .shape'
                ).click()
                wait.until(ec.text_to_be_present_in_element((By.ID, "details"), "10.0.0.0/24"))
                # live: a port created through the API appears without a reload (a long name: cut with …)
                long_name = "reporting-batch-worker-eu-west-1-primary"
                _port(env, tokens["alice"], "alice-vm3", nets["alice"], "10.0.0.13", long_name)
                wait.until(
                    ec.presence_of_element_located(
                        (By.CSS_SELECTOR, '#graph .node[data-id="port:alice-vm3"]')
                    )
                )
                # names, not ids: two tenants' vm1 told apart by their tenant, carol's two by their ids (the
                # whole id in the tooltip); no label overlaps another node's
                assert driver.execute_script(OVERLAPS_JS) == []
                labels = driver.execute_script(LABELS_JS)
                assert labels["port:alice-vm1"][0] == "vm1 (alice)", labels
                assert labels["port:bob-vm1"][0] == "vm1 (bob)", labels
                assert labels["port:bob-vm2"][0] == "vm2 (bob)", labels
                assert labels["network:alice-web"][0] == "web (alice)", labels
                for ident in carol_ports:
                    text, tip = labels[f"port:{ident}"]
                    assert text == f"vm1 ({ident[:8]}…)" and f"id {ident}" in tip, (text, tip)
                text, tip = labels["port:alice-vm3"]
                assert text.endswith("…") and long_name.startswith(text[:-1]) and long_name in tip, (
                    text,
                    tip,
                )
                assert (
                    "id alice-vm1" in labels["port:alice-vm1"][1]
                    and "tenant alice" in labels["port:alice-vm1"][1]
                )
                driver.save_screenshot(str(ARTIFACTS / "dashboard-topology.png"))

                # flow tables of hv1: stage names with table numbers, owners, counters from the switch
                driver.find_element(By.CSS_SELECTOR, '.tab[data-view="flows"]').click()
                wait.until(
                    ec.presence_of_element_located((By.CSS_SELECTOR, '#flows .stage[data-stage="classify"]'))
                )
                assert "hv1" in driver.find_element(By.CSS_SELECTOR, "#chassis-picker .chip.active").text
                text = driver.find_element(By.ID, "flows").text
                for stage in ("classify", "l2_lookup", "egress_dispatch", "output"):
                    assert stage in text, stage
                assert "table 0" in text and "l2/vm2 (alice)" in text
                summary = driver.find_element(By.ID, "flows-summary").text
                assert "installed" in summary
                # owners by name (security-group rules too: no bare UUID); a long one ends in … inside its
                # column, whole in its tooltip, and never runs into the packets column
                cells = driver.execute_script(OWNER_CELLS_JS)
                assert cells and all(c["style"] == ["hidden", "ellipsis", "nowrap"] for c in cells), cells[:3]
                assert not any(UUID.search(c["text"]) for c in cells), [c["text"] for c in cells]
                assert all(c["right"] <= c["packets_left"] + 0.5 for c in cells)
                cut = [c for c in cells if c["overflows"]]
                assert cut and all(c["text"].split("/", 1)[1] in c["title"] for c in cut), cut[:3]
                _full_screenshot(driver, ARTIFACTS / "dashboard-flows-hv1.png")

                # trace vm1 -> vm2 (ICMP): two hops, hv1 then hv2 over the tunnel, delivered to vm2
                driver.find_element(By.CSS_SELECTOR, '.tab[data-view="trace"]').click()
                wait.until(lambda d: len(Select(d.find_element(By.ID, "trace-src")).options) >= 3)
                source = Select(driver.find_element(By.ID, "trace-src"))
                choices = {o.get_attribute("value"): o.text for o in source.options}
                assert choices["alice-vm1"].startswith("vm1 — alice/web · 10.0.0.11"), choices
                assert choices["bob-vm1"].startswith("vm1 — bob/web · 10.0.0.11"), choices
                assert {choices[x].split(" · ")[0] for x in carol_ports} == {
                    f"vm1 ({x[:8]}…) — carol/web" for x in carol_ports
                }, choices
                source.select_by_value("alice-vm1")
                dst = driver.find_element(By.ID, "trace-dst")
                dst.clear()
                dst.send_keys("10.0.0.12")
                driver.find_element(By.ID, "trace-button").click()
                verdict = wait.until(ec.visibility_of_element_located((By.ID, "trace-verdict")))
                wait.until(lambda d: "delivered" in d.find_element(By.ID, "trace-verdict").text)
                assert "alice-vm2" in verdict.text and "bob" not in verdict.text, verdict.text
                assert "ports/alice-vm2 (10.0.0.12)" in verdict.text  # what the server resolved the IP to
                hops = [
                    h.get_attribute("data-chassis")
                    for h in driver.find_elements(By.CSS_SELECTOR, "#trace-drawing .hop")
                ]
                assert hops[:2] == ["hv1", "hv2"], hops
                assert driver.find_elements(By.CSS_SELECTOR, "#trace-drawing .tunnel-link")
                stages = {
                    s.get_attribute("data-stage")
                    for s in driver.find_elements(By.CSS_SELECTOR, "#trace-drawing .step")
                }
                assert {"classify", "l2_lookup", "egress_dispatch", "output"} <= stages, stages
                # conntrack steps (the security groups') are no error: not red, ct_state as OVS's flags
                steps = driver.execute_script(STEPS_JS)
                ct = [s for s in steps if s["kind"] == "ct"]
                assert ct and all(not _reddish(s["fill"]) for s in ct), ct
                assert any("ct_state=+new+trk" in s["text"] for s in ct), ct
                assert not any("0x21" in s["text"] or s["kind"] == "drop" for s in steps), steps
                pill = driver.execute_script(
                    "return document.querySelector('#trace-drawing .src-pill').textContent"
                )
                assert pill.startswith("packet from vm1 (alice) on hv1"), pill
                _full_screenshot(driver, ARTIFACTS / "dashboard-trace.png")
                driver.find_element(By.ID, "trace-on-topology").click()  # the same path on the graph
                wait.until(
                    ec.presence_of_element_located(
                        (By.CSS_SELECTOR, '#graph .node.onpath[data-id="port:alice-vm2"]')
                    )
                )
                onpath = {
                    n.get_attribute("data-id")
                    for n in driver.find_elements(By.CSS_SELECTOR, "#graph .node.onpath")
                }
                assert onpath == {
                    "port:alice-vm1",
                    "network:alice-web",
                    "chassis:hv1",
                    "chassis:hv2",
                    "port:alice-vm2",
                }, onpath
                driver.save_screenshot(str(ARTIFACTS / "dashboard-trace-path.png"))
                driver.find_element(By.CSS_SELECTOR, '.tab[data-view="trace"]').click()
                # the same packet through the flows dumped from the switches now: the same path
                Select(driver.find_element(By.ID, "trace-flows")).select_by_value("installed")
                driver.find_element(By.ID, "trace-button").click()
                wait.until(lambda d: "switches' flows" in d.find_element(By.ID, "trace-verdict").text)
                assert "delivered to ports/alice-vm2" in driver.find_element(By.ID, "trace-verdict").text

                # a tenant's token: only its own objects, no chassis, no admin tabs
                driver.find_element(By.ID, "logout").click()
                wait.until(ec.visibility_of_element_located((By.ID, "token")))
                driver.find_element(By.ID, "token").clear()
                driver.find_element(By.ID, "token").send_keys(tokens["bob"][0][1].split()[1])
                driver.find_element(By.ID, "login-button").click()
                wait.until(
                    ec.presence_of_element_located(
                        (By.CSS_SELECTOR, '#graph .node[data-id="network:bob-web"]')
                    )
                )
                ids = {
                    n.get_attribute("data-id") for n in driver.find_elements(By.CSS_SELECTOR, "#graph .node")
                }
                assert ids == {"tenant:bob", "network:bob-web", "port:bob-vm1", "port:bob-vm2"}, ids
                labels = driver.execute_script(LABELS_JS)  # bob alone has one vm1: its name says it all
                assert labels["port:bob-vm1"][0] == "vm1" and labels["network:bob-web"][0] == "web", labels
                assert not driver.find_element(By.CSS_SELECTOR, '.tab[data-view="flows"]').is_displayed()
                assert (
                    "trace path" not in driver.find_element(By.ID, "counts").text
                )  # nothing of the admin's session
                driver.save_screenshot(str(ARTIFACTS / "dashboard-tenant.png"))
            except Exception:
                driver.save_screenshot(str(ARTIFACTS / "dashboard-failure.png"))
                raise
            finally:
                driver.quit()
        _check_grafana_queries(prom, {"hv1", "hv2"})
