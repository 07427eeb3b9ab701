"""Property: applying document A, then document B with prune, leaves the same topology as applying B to an
empty model (the same objects and fields; server-assigned values, MACs and allocated addresses, aside).
Each example runs two tenants on one real server: one applies A then B, the other only B."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from tests.conftest import Api

NETS = 2
PORTS = 4
GROUPS = 2
_counter = itertools.count()


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document over a small universe of names. Immutable fields are a function of the name (a port's
    network, a subnet's CIDR): B may drop and re-add objects but never "move" one. Every mutable field is
    given (a field a document leaves out keeps its value: then A-then-B would rightly differ from B). A
    network has its subnet in every document that has it (a port on a network with a subnet always has
    an address there: the subnet cannot go while the port stays)."""
    nets = [i for i in range(NETS) if draw(st.booleans())]
    groups = [g for g in range(GROUPS) if draw(st.booleans())]
    doc: dict[str, Any] = {
        "networks": [
            {
                "name": f"n{i}",
                "display_name": draw(st.sampled_from(["", "web", "db"])),
                "mtu": draw(st.sampled_from([1400, 1450])),
                "admin_state_up": draw(st.booleans()),
            }
            for i in nets
        ],
        "subnets": [
            {
                "name": f"s{i}",
                "network": f"networks/n{i}",
                "cidr": f"10.{i}.0.0/24",
                "dns_servers": draw(st.sampled_from([[], ["192.0.2.53"]])),
                "enable_dhcp": draw(st.booleans()),
            }
            for i in nets  # with its network: a port keeps an address while its network has a subnet
        ],
        "security_groups": [
            {"name": f"g{g}", "description": draw(st.sampled_from(["", "x"]))} for g in groups
        ],
    }
    subnets = {s["name"] for s in doc["subnets"]}
    doc["security_group_rules"] = [
        {
            "name": f"r{g}",
            "security_group": f"securityGroups/g{g}",
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": draw(st.sampled_from([22, 80])),
        }
        for g in groups
        if draw(st.booleans())
    ]
    doc["ports"] = [
        {
            "name": f"p{i}",
            "network": f"networks/n{i % NETS}",
            "display_name": draw(st.sampled_from(["", "vm"])),
            "admin_state_up": draw(st.booleans()),
            "fixed_ips": [{"subnet": f"subnets/s{i % NETS}"}] if f"s{i % NETS}" in subnets else [],
            "security_groups": draw(
                st.sampled_from([["securityGroups/default"], *[[f"securityGroups/g{g}"] for g in groups]])
            ),
        }
        for i in range(PORTS)
        if i % NETS in nets and draw(st.booleans())
    ]
    if draw(st.booleans()):
        doc["routers"] = [
            {
                "name": "r",
                "display_name": draw(st.sampled_from(["", "edge"])),
                "interfaces": [{"subnet": f"subnets/{s}"} for s in sorted(subnets) if draw(st.booleans())],
            }
        ]
    return doc


def _named(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The document with every name of ours made the tenant's own (ids are global)."""
    text = json.dumps(doc)
    text = re.sub(r'"((?:[a-zA-Z]+/)?)(n\d|s\d|g\d|r\d?|p\d)"', lambda m: f'"{m[1]}{prefix}{m[2]}"', text)
    return dict(json.loads(text))


def _struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(doc)
    return out


def _normalized(exported: struct_pb2.Struct, prefix: str) -> str:
    doc = json_format.MessageToDict(exported)
    for port in doc.get("ports", []):
        port.pop("mac_address", None)
        for ip in port.get("fixed_ips", []):
            ip.pop("ip_address", None)
    for net in doc.get("networks", []):
        net.pop("segment_type", None)
    return json.dumps(doc, sort_keys=True).replace(prefix, "")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=documents(), b=documents())
def test_a_then_b_is_b(api: Api, a: dict[str, Any], b: dict[str, Any]) -> None:
    n = next(_counter)
    stub = apb_grpc.ApplyServiceStub(api.channel)
    first, second = f"x{n}-", f"y{n}-"
    md_x = api.md(api.tenant_token(f"x{n}"))
    md_y = api.md(api.tenant_token(f"y{n}"))
    stub.Apply(apb.ApplyRequest(document=_struct(_named(a, first)), prune=True), metadata=md_x)
    stub.Apply(apb.ApplyRequest(document=_struct(_named(b, first)), prune=True), metadata=md_x)
    stub.Apply(apb.ApplyRequest(document=_struct(_named(b, second)), prune=True), metadata=md_y)
    x = stub.Export(apb.ExportRequest(), metadata=md_x).document
    y = stub.Export(apb.ExportRequest(), metadata=md_y).document
    assert _normalized(x, first) == _normalized(y, second)
    # and B once more is nothing to do, on both
    for md, prefix in ((md_x, first), (md_y, second)):
        again = stub.Apply(apb.ApplyRequest(document=_struct(_named(b, prefix)), prune=True), metadata=md)
        assert list(again.changes) == []
