"""VPNaaS lab helpers shared by tests/test_e2e_vpn.py and bench/bench_vpn.py: tenants whose routers have
a remote IPsec site on the external network, their VPN made through the API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.services.vpn_host import remove_namespaces_of
from lab import VM
from lab.lab import Lab
from lab.vpn_site import RemoteSite
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env

LOCAL_CIDR = "10.1.0.0/24"
REMOTE_CIDR = "10.2.0.0/24"
PSK = "s3cret-psk-for-the-test"


def vpn_hosts(data_dir: Path) -> tuple[Callable[[Lab], list[str]], Callable[[], None]]:
    """(lab_args for lab_env: every chassis's namespace is on this machine, so the controller runs their VPN
    services; cleanup: remove the VPN namespaces a killed controller left behind)."""
    made: list[tuple[str, Path]] = []

    def args(lab: Lab) -> list[str]:
        made.extend((c.namespace, data_dir / "vpn" / c.name) for c in lab.chassis.values())
        return [f"--vpn-netns={c.name}={c.namespace}" for c in lab.chassis.values()]

    def cleanup() -> None:
        for ns, workdir in made:
            remove_namespaces_of(ns, workdir)

    return args, cleanup


def public_network(env: Env, cidr: str) -> None:
    """The flat external network "public" on the provider network."""
    ext = env.stub.CreateNetwork(
        pb.CreateNetworkRequest(
            network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True),
            network_id="public",
        ),
        metadata=env.admin,
    )
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=ext.name, cidr=cidr), subnet_id="public-v4"),
        metadata=env.admin,
    )


@dataclass
class Tenant:
    name: str
    md: tuple[tuple[str, str], ...]
    router_id: str
    gateway_ip: str
    gateway_mac: str
    vm: VM
    site: RemoteSite


def make_tenant(env: Env, name: str, site_ip: str, vm_chassis: str = "hv3") -> Tenant:
    """A tenant's network (LOCAL_CIDR), router with a gateway on networks/public, a VM at .5 on `vm_chassis`, and
    its remote site at `site_ip` on the external network (REMOTE_CIDR behind it) with a connection loaded."""
    md = env.md(name)
    net = env.network(md, f"{name}-net", LOCAL_CIDR)
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(
            router=pb.Router(
                display_name=f"{name}-r", external_gateway=pb.ExternalGateway(network="networks/public")
            ),
            router_id=f"{name}-r",
        ),
        metadata=md,
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{name}-net-v4"), metadata=md
    )
    r = env.stub.GetRouter(pb.GetRouterRequest(name=r.name), metadata=md)
    gw_port = env.stub.GetPort(pb.GetPortRequest(name=r.external_gateway.port), metadata=env.admin)
    env.allow_ingress(md, remote_ip_prefix=REMOTE_CIDR)  # the remote site's hosts are no group members
    vm = env.plug(vm_chassis, env.port(md, f"{name}-vm", net, ip="10.1.0.5"))
    site = RemoteSite(env.lab, PHYSNET, f"site{name}", f"{site_ip}/24", REMOTE_CIDR)
    site.start()
    site.connect(f"to-{name}", r.external_gateway.fixed_ip.ip_address, [REMOTE_CIDR], [LOCAL_CIDR], PSK)
    return Tenant(
        name, md, f"{name}-r", r.external_gateway.fixed_ip.ip_address, gw_port.mac_address, vm, site
    )


def vpn_stub(env: Env) -> pb_grpc.VpnaasServiceStub:
    return pb_grpc.VpnaasServiceStub(env.channel)


def create_vpn(env: Env, t: Tenant, psk: str = PSK) -> pb.IpsecSiteConnection:
    """The tenant's VPN through the API: policies, service, endpoint groups, one connection to its site."""
    create_vpn_service(env, t)
    return create_connection(env, t, psk)


def create_vpn_service(env: Env, t: Tenant) -> None:
    """Policies, the VPN service of the tenant's router, its endpoint groups."""
    v, n, md = vpn_stub(env), t.name, t.md
    v.CreateIkePolicy(
        pb.CreateIkePolicyRequest(ike_policy=pb.IkePolicy(), ike_policy_id=f"{n}-ike"), metadata=md
    )
    v.CreateIpsecPolicy(
        pb.CreateIpsecPolicyRequest(ipsec_policy=pb.IpsecPolicy(), ipsec_policy_id=f"{n}-esp"), metadata=md
    )
    v.CreateVpnService(
        pb.CreateVpnServiceRequest(
            vpn_service=pb.VpnService(router=f"routers/{t.router_id}"), vpn_service_id=f"{n}-vpn"
        ),
        metadata=md,
    )
    for ident, kind, endpoints in (
        (f"{n}-local", "subnet", [f"subnets/{n}-net-v4"]),
        (f"{n}-peer", "cidr", [REMOTE_CIDR]),
    ):
        v.CreateVpnEndpointGroup(
            pb.CreateVpnEndpointGroupRequest(
                vpn_endpoint_group=pb.VpnEndpointGroup(type=kind, endpoints=endpoints),
                vpn_endpoint_group_id=ident,
            ),
            metadata=md,
        )


def create_connection(env: Env, t: Tenant, psk: str = PSK) -> pb.IpsecSiteConnection:
    """The tenant's connection to its site (its service made first)."""
    v, n, md = vpn_stub(env), t.name, t.md
    return v.CreateIpsecSiteConnection(
        pb.CreateIpsecSiteConnectionRequest(
            ipsec_site_connection=pb.IpsecSiteConnection(
                vpnservice=f"vpnServices/{n}-vpn",
                ikepolicy=f"ikePolicies/{n}-ike",
                ipsecpolicy=f"ipsecPolicies/{n}-esp",
                local_ep_group=f"vpnEndpointGroups/{n}-local",
                peer_ep_group=f"vpnEndpointGroups/{n}-peer",
                peer_address=t.site.gateway.ip,
                psk=psk,
                dpd_interval=2,
                dpd_timeout=6,
            ),
            ipsec_site_connection_id=f"{n}-conn",
        ),
        metadata=md,
    )


def conn_status(env: Env, conn_id: str) -> tuple[str, str]:
    c = vpn_stub(env).GetIpsecSiteConnection(
        pb.GetIpsecSiteConnectionRequest(name=f"ipsecSiteConnections/{conn_id}"), metadata=env.admin
    )
    assert not c.psk, "the pre-shared key is never returned"
    return c.status, c.status_reason
