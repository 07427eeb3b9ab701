"""The demo topology through the real API, as one Apply document: two tenants, the same CIDR, one VM of each
on each chassis."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
TENANTS = ("alice", "bob")
CIDR = "10.0.0.0/24"
#: port id -> (address, index of the chassis it runs on)
VMS = {"vm1": ("10.0.0.11", 0), "vm2": ("10.0.0.12", 1)}


@dataclass(frozen=True)
class DemoPort:
    tenant: str
    port_id: str
    vm: str
    mac: str
    ip: str
    chassis_index: int
    mtu: int


def _tokens(
    stub: pb_grpc.TopologyServiceStub, admin: tuple[tuple[str, str], ...], path: Path
) -> dict[str, str]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    tokens = {t: stub.CreateToken(pb.CreateTokenRequest(tenant=t), metadata=admin).token for t in TENANTS}
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    return tokens


def document() -> dict[str, Any]:
    """The demo topology as an Apply document (an admin's: each object says its tenant). README.md shows it
    as YAML (a test keeps the two the same)."""
    doc: dict[str, list[dict[str, Any]]] = {"networks": [], "subnets": [], "ports": []}
    for tenant in TENANTS:
        net, sub = f"networks/{tenant}-web", f"subnets/{tenant}-web-v4"
        doc["networks"].append({"name": net, "tenant": tenant, "display_name": "web"})
        doc["subnets"].append(
            {"name": sub, "tenant": tenant, "network": net, "cidr": CIDR, "display_name": "web-v4"}
        )
        for vm, (ip, _chassis) in VMS.items():
            port_id = f"{tenant}-{vm}"
            doc["ports"].append(
                {
                    "name": f"ports/{port_id}",
                    "tenant": tenant,
                    "network": net,
                    "display_name": port_id,
                    "device_id": port_id,
                    "fixed_ips": [{"subnet": sub, "ip_address": ip}],
                }
            )
    return doc


def seed(endpoint: str, admin_token: str, data_dir: Path) -> list[DemoPort]:
    """Make the store hold the demo topology (safe to run again: the second Apply is an empty plan): for
    each tenant a token, network "web" (VXLAN), subnet 10.0.0.0/24 and ports vm1 (10.0.0.11) and vm2
    (10.0.0.12), all in one Apply. Tokens go to DATA/demo-tokens.json."""
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.TopologyServiceStub(channel)
    admin = (("authorization", f"Bearer {admin_token}"),)
    tokens = _tokens(stub, admin, data_dir / "demo-tokens.json")
    request = apb.ApplyRequest(document=struct_pb2.Struct())
    request.document.update(document())
    done = apb_grpc.ApplyServiceStub(channel).Apply(request, metadata=admin)
    if done.applied:
        log.info(
            "demo: applied the demo topology (%d changes, revision %d)", len(done.changes), done.revision
        )
    out = []
    for tenant in TENANTS:
        md = (("authorization", f"Bearer {tokens[tenant]}"),)
        net = stub.GetNetwork(pb.GetNetworkRequest(name=f"networks/{tenant}-web"), metadata=md)
        for vm, (ip, chassis_index) in VMS.items():
            port_id = f"{tenant}-{vm}"
            port = stub.GetPort(pb.GetPortRequest(name=f"ports/{port_id}"), metadata=md)
            out.append(DemoPort(tenant, port_id, vm, port.mac_address, ip, chassis_index, net.mtu))
    channel.close()
    return out
