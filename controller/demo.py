"""The demo topology through the real API, as one Apply document: two tenants, the same CIDR, one VM of each
on each chassis; alice's network is dual stack, and her router joins it to a second dual-stack network
"db" whose VM runs on the other chassis (a dual-stack ping across the router)."""

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
#: alice's dual stack: web's IPv6 subnet, network db (both families) behind her router, its VM on hv2
DUAL_TENANT = "alice"
WEB6, DB4, DB6 = "fd00:a::/64", "10.0.1.0/24", "fd00:db::/64"
#: port id -> its IPv6 address (static in the VM: the demo does not depend on router advertisements)
V6 = {"alice-vm1": "fd00:a::11", "alice-db1": "fd00:db::11"}
DB_VM = ("alice-db1", "10.0.1.11", 1)


@dataclass(frozen=True)
class DemoPort:
    tenant: str
    port_id: str
    vm: str
    mac: str
    ip: str
    chassis_index: int
    mtu: int
    ip6: str = ""  # an IPv6 address (/64) to configure statically, with a default route via gateway6
    gateway: str = ""  # the IPv4 default route's next hop (the router), if routed
    gateway6: str = ""


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
    doc: dict[str, list[dict[str, Any]]] = {"networks": [], "subnets": [], "ports": [], "routers": []}
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
    _dual_stack(doc)
    return doc


def _dual_stack(doc: dict[str, list[dict[str, Any]]]) -> None:
    """alice's IPv6 subnet on web, network db with a subnet of each family, her router on all four."""
    t = DUAL_TENANT
    web, db = f"networks/{t}-web", f"networks/{t}-db"
    doc["networks"].append({"name": db, "tenant": t, "display_name": "db"})
    for name, net, cidr in ((f"{t}-web-v6", web, WEB6), (f"{t}-db-v4", db, DB4), (f"{t}-db-v6", db, DB6)):
        entry: dict[str, Any] = {"name": f"subnets/{name}", "tenant": t, "network": net, "cidr": cidr}
        if ":" in cidr:
            entry["enable_dhcp"] = False  # addresses are static in the VMs (no DHCPv6 here)
        doc["subnets"].append({**entry, "display_name": name.removeprefix(f"{t}-")})
    vm1 = next(p for p in doc["ports"] if p["name"] == f"ports/{t}-vm1")
    vm1["fixed_ips"].append({"subnet": f"subnets/{t}-web-v6", "ip_address": V6[f"{t}-vm1"]})
    port_id, ip, _chassis = DB_VM
    doc["ports"].append(
        {
            "name": f"ports/{port_id}",
            "tenant": t,
            "network": db,
            "display_name": port_id,
            "device_id": port_id,
            "fixed_ips": [
                {"subnet": f"subnets/{t}-db-v4", "ip_address": ip},
                {"subnet": f"subnets/{t}-db-v6", "ip_address": V6[port_id]},
            ],
        }
    )
    doc["routers"].append(
        {
            "name": f"routers/{t}-router",
            "tenant": t,
            "display_name": "router",
            "interfaces": [{"subnet": f"subnets/{t}-{s}"} for s in ("web-v4", "web-v6", "db-v4", "db-v6")],
        }
    )


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
    gw = {"web": ("10.0.0.1", "fd00:a::1"), "db": ("10.0.1.1", "fd00:db::1")}
    for tenant in TENANTS:
        md = (("authorization", f"Bearer {tokens[tenant]}"),)
        net = stub.GetNetwork(pb.GetNetworkRequest(name=f"networks/{tenant}-web"), metadata=md)
        vms = [(f"{tenant}-{vm}", vm, ip, ch, "web") for vm, (ip, ch) in VMS.items()]
        if tenant == DUAL_TENANT:
            vms.append((DB_VM[0], "db1", DB_VM[1], DB_VM[2], "db"))
        for port_id, vm, ip, chassis_index, net_name in vms:
            port = stub.GetPort(pb.GetPortRequest(name=f"ports/{port_id}"), metadata=md)
            routed = port_id in V6
            v4gw, v6gw = gw[net_name] if routed else ("", "")
            out.append(
                DemoPort(
                    tenant,
                    port_id,
                    vm,
                    port.mac_address,
                    ip,
                    chassis_index,
                    net.mtu,
                    V6.get(port_id, ""),
                    v4gw,
                    v6gw,
                )
            )
    channel.close()
    return out
