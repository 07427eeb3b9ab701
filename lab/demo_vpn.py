"""`python -m lab.demo --vpn`: one IPsec site-to-site tunnel. A lab of two chassis (hv1: the gateway chassis,
with the provider network; hv2: the VM), the controller running the router's VPN service on hv1 (a namespace
on br-int with strongSwan, userspace ESP), and a remote site on the external network with its own strongSwan
and a host behind it. Everything is made through the API; Ctrl-C stops the controller and removes the lab."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from controller.pki import Pki
from controller.services.vpn_host import remove_namespaces_of
from lab.demo_util import ROOT, _admin_token, _wait_ready
from lab.lab import Lab
from lab.vpn_site import RemoteSite
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

PHYSNET, BRIDGE = "physnet1", "br-prov"
EXT_CIDR, SITE, SITE_MAC = "172.24.4.0/24", "172.24.4.50", "02:ee:00:00:04:50"
LOCAL_CIDR, REMOTE_CIDR = "10.1.0.0/24", "10.2.0.0/24"
PSK = "demo-pre-shared-key"


def _ensure(call: Callable[[], Any]) -> None:
    """Create, or keep what an earlier run of the demo on the same store made."""
    try:
        call()
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def main(args: argparse.Namespace) -> int:
    data = Path(args.data_dir).resolve()
    authority = Pki(data / "pki")
    authority.init()
    with Lab(pki=authority) as lab:
        lab.add_provider_network(PHYSNET)
        chassis = [lab.add_chassis(f"hv{i}") for i in (1, 2)]
        chassis[0].add_provider_bridge(BRIDGE, PHYSNET)
        of_port = lab.free_port()
        ctl = subprocess.Popen(
            [
                sys.executable, str(ROOT / "run_controller.py"),
                "--data-dir", str(data), "--grpc-listen", args.grpc_listen,
                "--openflow-listen", f"{lab.mgmt_ip}:{of_port}", "--switch-target", f"ssl:{lab.mgmt_ip}:{of_port}",
                "--datapath-type", "netdev", "--vswitchd-ctl-dir", str(lab.workdir),
                "--dashboard-listen", "", "--metrics-listen", "", "--neutron-listen", "",
                "--log-level", "WARNING",
                "--gateway-chassis", "hv1", "--vpn-esp", "userspace",
                *(f"--vpn-netns={c.name}={c.namespace}" for c in chassis),
            ],
            cwd=ROOT,
        )  # fmt: skip
        try:
            _wait_ready(args.grpc_listen, ctl)
            return _run(args, lab, data)
        finally:
            ctl.terminate()  # a clean stop removes the VPN namespaces; a kill would leave them to this:
            try:
                ctl.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ctl.kill()
            for c in chassis:
                remove_namespaces_of(c.namespace, data / "vpn" / c.name)


def _run(args: argparse.Namespace, lab: Lab, data: Path) -> int:
    admin = (("authorization", f"Bearer {_admin_token(data)}"),)
    channel = grpc.insecure_channel(args.grpc_listen)
    stub = pb_grpc.TopologyServiceStub(channel)
    vpn = pb_grpc.VpnaasServiceStub(channel)
    for ch in lab.chassis.values():  # create, or point an existing record at this lab's switch
        record = pb.Chassis(
            name=f"chassis/{ch.name}",
            datapath_id=ch.datapath_id,
            tunnel_ip=ch.tunnel_ip,
            ovsdb_address=ch.ovsdb_remote,
            bridge_mappings={PHYSNET: BRIDGE} if BRIDGE in ch.provider_bridges else {},
        )
        try:
            stub.UpdateChassis(pb.UpdateChassisRequest(chassis=record), metadata=admin)
        except grpc.RpcError:
            stub.CreateChassis(pb.CreateChassisRequest(chassis=record, chassis_id=ch.name), metadata=admin)
    ext = pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True)
    _ensure(
        lambda: stub.CreateNetwork(pb.CreateNetworkRequest(network=ext, network_id="public"), metadata=admin)
    )
    _ensure(
        lambda: stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network="networks/public", cidr=EXT_CIDR), subnet_id="public-v4"
            ),
            metadata=admin,
        )
    )
    md = (
        (
            "authorization",
            f"Bearer {stub.CreateToken(pb.CreateTokenRequest(tenant='alice'), metadata=admin).token}",
        ),
    )
    _ensure(
        lambda: stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(), network_id="office"), metadata=md
        )
    )
    _ensure(
        lambda: stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network="networks/office", cidr=LOCAL_CIDR), subnet_id="office-v4"
            ),
            metadata=md,
        )
    )
    gw = pb.ExternalGateway(network="networks/public")
    _ensure(
        lambda: stub.CreateRouter(
            pb.CreateRouterRequest(router=pb.Router(external_gateway=gw), router_id="edge"), metadata=md
        )
    )
    _ensure(
        lambda: stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name="routers/edge", subnet="subnets/office-v4"), metadata=md
        )
    )
    rule = pb.SecurityGroupRule(
        security_group="securityGroups/default", direction="ingress", remote_ip_prefix=REMOTE_CIDR
    )
    _ensure(
        lambda: stub.CreateSecurityGroupRule(
            pb.CreateSecurityGroupRuleRequest(security_group_rule=rule), metadata=md
        )
    )
    vm_port = pb.Port(network="networks/office", fixed_ips=[pb.FixedIp(ip_address="10.1.0.5")])
    _ensure(lambda: stub.CreatePort(pb.CreatePortRequest(port=vm_port, port_id="office-vm"), metadata=md))
    port = stub.GetPort(pb.GetPortRequest(name="ports/office-vm"), metadata=md)
    vm = lab.chassis["hv2"].add_vm(
        "office-vm", port.mac_address, "10.1.0.5/24", iface_id="office-vm", mtu=1450, gateway="10.1.0.1"
    )
    gateway_ip = stub.GetRouter(
        pb.GetRouterRequest(name="routers/edge"), metadata=md
    ).external_gateway.fixed_ip.ip_address
    # a fixed MAC: the controller keeps the external neighbours it learnt in the store, across runs of the demo
    site = RemoteSite(lab, PHYSNET, "site", f"{SITE}/24", REMOTE_CIDR, mac=SITE_MAC)
    site.start()
    try:
        return _tunnel(args, data, md, vpn, vm, site, gateway_ip)
    finally:
        site.stop()


def _tunnel(
    args: argparse.Namespace, data: Path, md: Any, vpn: Any, vm: Any, site: RemoteSite, gateway_ip: str
) -> int:
    site.connect("to-edge", gateway_ip, [REMOTE_CIDR], [LOCAL_CIDR], PSK)
    _ensure(
        lambda: vpn.CreateIkePolicy(
            pb.CreateIkePolicyRequest(ike_policy=pb.IkePolicy(), ike_policy_id="ike"), metadata=md
        )
    )
    _ensure(
        lambda: vpn.CreateIpsecPolicy(
            pb.CreateIpsecPolicyRequest(ipsec_policy=pb.IpsecPolicy(), ipsec_policy_id="esp"), metadata=md
        )
    )
    _ensure(
        lambda: vpn.CreateVpnService(
            pb.CreateVpnServiceRequest(
                vpn_service=pb.VpnService(router="routers/edge"), vpn_service_id="edge-vpn"
            ),
            metadata=md,
        )
    )
    for ident, kind, endpoints in (
        ("office", "subnet", ["subnets/office-v4"]),
        ("site", "cidr", [REMOTE_CIDR]),
    ):
        request = pb.CreateVpnEndpointGroupRequest(
            vpn_endpoint_group=pb.VpnEndpointGroup(type=kind, endpoints=endpoints),
            vpn_endpoint_group_id=ident,
        )
        _ensure(partial(vpn.CreateVpnEndpointGroup, request, metadata=md))
    conn = pb.IpsecSiteConnection(
        vpnservice="vpnServices/edge-vpn", ikepolicy="ikePolicies/ike", ipsecpolicy="ipsecPolicies/esp",
        local_ep_group="vpnEndpointGroups/office", peer_ep_group="vpnEndpointGroups/site",
        peer_address=SITE, psk=PSK, dpd_interval=2, dpd_timeout=6,
    )  # fmt: skip
    _ensure(
        lambda: vpn.CreateIpsecSiteConnection(
            pb.CreateIpsecSiteConnectionRequest(
                ipsec_site_connection=conn, ipsec_site_connection_id="to-site"
            ),
            metadata=md,
        )
    )
    status = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status != "ACTIVE":
        got = vpn.GetIpsecSiteConnection(
            pb.GetIpsecSiteConnectionRequest(name="ipsecSiteConnections/to-site"), metadata=md
        )
        status = got.status
        time.sleep(0.3)
    print(
        f"""
The VPN demo is up: tenant alice's router "edge" (gateway {gateway_ip} on the external network {EXT_CIDR}) has an
IPsec site connection to a remote site at {SITE}; the tunnel runs in a namespace on hv1 (the gateway chassis),
strongSwan with userspace ESP, started and configured by the controller over VICI. Connection status: {status}.

  ip netns exec {vm.namespace} ping -c 3 {site.host.ip}       # the VM (10.1.0.5, on hv2) -> the remote host
  ip netns exec {site.host.namespace} ping -c 3 {vm.ip}   # and back; the remote host sees 10.1.0.5
  ip netns exec {site.gateway.namespace} tcpdump -nni eth0   # the external link: only UDP 4500 between the gateways
  export SDN_ENDPOINT={args.grpc_listen} SDN_TOKEN_FILE={data}/tokens.json
  .venv/bin/sdnctl vpn ipsec-site-connection list
Ctrl-C stops the controller and removes the lab.
""",
        flush=True,
    )
    if args.check:
        ok = vm.ping(site.host.ip, count=3, timeout=15) and site.host.ping(vm.ip, count=3, timeout=10)
        print(f"demo check: vpn {status}, tunnel {'ok' if ok else 'FAILED'}", flush=True)
        return 0 if ok and status == "ACTIVE" else 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    return 0
