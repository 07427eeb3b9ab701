"""A demo topology through the real API: two tenants with the same CIDR on their own networks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc

from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
TENANTS = ("alice", "bob")


def seed(endpoint: str, admin_token: str, data_dir: Path) -> dict[str, str]:
    """Create (once) for each tenant: a token, network "web" (vxlan), subnet 10.0.0.0/24, two ports.
    Returns tenant -> token; the tokens are also written to DATA/demo-tokens.json."""
    path = data_dir / "demo-tokens.json"
    if path.exists():
        log.info("demo topology already present (%s)", path)
        return dict(json.loads(path.read_text()))
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.TopologyServiceStub(channel)
    admin = (("authorization", f"Bearer {admin_token}"),)
    tokens = {}
    for tenant in TENANTS:
        tokens[tenant] = stub.CreateToken(pb.CreateTokenRequest(tenant=tenant), metadata=admin).token
        md = (("authorization", f"Bearer {tokens[tenant]}"),)
        net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(display_name="web"),
                                                         network_id=f"{tenant}-web"), metadata=md)
        sub = stub.CreateSubnet(pb.CreateSubnetRequest(
            subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/24", display_name="web-v4",
                             dns_servers=["10.0.0.2"]), subnet_id=f"{tenant}-web-v4"), metadata=md)
        for vm in ("vm1", "vm2"):
            stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name, display_name=f"{tenant}-{vm}",
                                                              device_id=f"{tenant}-{vm}"),
                                                 port_id=f"{tenant}-{vm}"), metadata=md)
        log.info("demo: tenant %s has %s with %s (%s)", tenant, net.name, sub.name, sub.cidr)
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    channel.close()
    return tokens
