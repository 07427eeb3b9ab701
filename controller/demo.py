"""The demo topology through the real API: two tenants, the same CIDR, one VM of each on each chassis."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

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


def seed(endpoint: str, admin_token: str, data_dir: Path) -> list[DemoPort]:
    """Create what is missing (safe to run again): for each tenant a token, network "web" (VXLAN),
    subnet 10.0.0.0/24 and ports vm1 (10.0.0.11) and vm2 (10.0.0.12). Tokens go to DATA/demo-tokens.json."""
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.TopologyServiceStub(channel)
    admin = (("authorization", f"Bearer {admin_token}"),)
    tokens = _tokens(stub, admin, data_dir / "demo-tokens.json")
    out = []
    for tenant in TENANTS:
        md = (("authorization", f"Bearer {tokens[tenant]}"),)
        net_name, sub_name = f"networks/{tenant}-web", f"subnets/{tenant}-web-v4"
        try:
            net = stub.GetNetwork(pb.GetNetworkRequest(name=net_name), metadata=md)
        except grpc.RpcError:
            net = stub.CreateNetwork(
                pb.CreateNetworkRequest(network=pb.Network(display_name="web"), network_id=f"{tenant}-web"),
                metadata=md,
            )
            stub.CreateSubnet(
                pb.CreateSubnetRequest(
                    subnet=pb.Subnet(network=net.name, cidr=CIDR, display_name="web-v4"),
                    subnet_id=f"{tenant}-web-v4",
                ),
                metadata=md,
            )
            log.info("demo: tenant %s has %s with %s (%s)", tenant, net.name, sub_name, CIDR)
        for vm, (ip, chassis_index) in VMS.items():
            port_id = f"{tenant}-{vm}"
            try:
                port = stub.GetPort(pb.GetPortRequest(name=f"ports/{port_id}"), metadata=md)
            except grpc.RpcError:
                port = stub.CreatePort(
                    pb.CreatePortRequest(
                        port=pb.Port(
                            network=net.name,
                            display_name=port_id,
                            device_id=port_id,
                            fixed_ips=[pb.FixedIp(subnet=sub_name, ip_address=ip)],
                        ),
                        port_id=port_id,
                    ),
                    metadata=md,
                )
            out.append(DemoPort(tenant, port_id, vm, port.mac_address, ip, chassis_index, net.mtu))
    channel.close()
    return out
