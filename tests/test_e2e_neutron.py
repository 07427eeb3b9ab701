"""A tenant built only through the `openstack` command (python-openstackclient and python-octaviaclient,
speaking the controller's Neutron REST API) carries real packets in the lab, as the same topology built
through gRPC does in test_e2e_nat.py and test_e2e_lb.py: east-west across chassis, SNAT to the external
network, a floating IP from outside, a load balancer's VIP spreading connections over its members, and a
security group keeping out what it does not allow."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.traffic import tcp_transfer
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import PHYSNET, Env, lab_env
from tests.test_e2e_lb import _CLIENT, _SERVER

pytestmark = pytest.mark.lab

OPENSTACK = str(Path(sys.executable).parent / "openstack")
EXT_CIDR = "172.24.4.0/24"
EXT_HOST = "172.24.4.100"


def osc(env: Env, token: str, *args: str) -> Any:
    """`openstack ARGS -f json` against the controller's Neutron endpoint, as the holder of `token`."""
    out = subprocess.run(
        [
            OPENSTACK,
            "--os-auth-type",
            "admin_token",
            "--os-token",
            token,
            "--os-endpoint",
            env.controller.neutron_url,
            *args,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, (args, out.stderr, env.controller_log()[-3000:])
    return json.loads(out.stdout) if out.stdout.strip() else None


def plug(env: Env, chassis: str, name: str, port: dict[str, Any]) -> Any:
    """The hypervisor's part (Nova's in OpenStack): a VM `name` on `chassis` whose interface has the port's
    MAC, address and iface-id (the port's id)."""
    sub = env.stub.GetSubnet(
        pb.GetSubnetRequest(name=f"subnets/{port['fixed_ips'][0]['subnet_id']}"), metadata=env.admin
    )
    net = env.stub.GetNetwork(pb.GetNetworkRequest(name=f"networks/{port['network_id']}"), metadata=env.admin)
    vm = env.chassis(chassis).add_vm(
        name,
        port["mac_address"],
        f"{port['fixed_ips'][0]['ip_address']}/{sub.cidr.split('/')[1]}",
        iface_id=port["id"],
        mtu=net.mtu,
        gateway=sub.gateway_ip or None,
    )
    env.vms[name] = vm
    env.wait_active(f"ports/{port['id']}", chassis)
    return vm


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-neutron"), extra_args=["--gateway-chassis", "hv1"]) as e:
        yield e


def test_a_tenant_built_with_the_openstack_cli_carries_packets(env: Env) -> None:
    admin = env.controller.admin_token()
    tenant = env.md("acme")[0][1].split()[1]  # a tenant token (made through gRPC: tokens are the operator's)
    osc(env, admin, "network", "create", "public", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", PHYSNET)  # fmt: skip
    osc(
        env,
        admin,
        "subnet",
        "create",
        "--network",
        "public",
        "--subnet-range",
        EXT_CIDR,
        "--no-dhcp",
        "public-sub",
    )
    osc(env, tenant, "network", "create", "web")
    osc(env, tenant, "subnet", "create", "--network", "web", "--subnet-range", "10.140.0.0/24", "web-sub")
    router = osc(env, tenant, "router", "create", "r1", "--external-gateway", "public")
    gateway_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    subprocess.run([OPENSTACK, "--os-auth-type", "admin_token", "--os-token", tenant, "--os-endpoint",
                    env.controller.neutron_url, "router", "add", "subnet", "r1", "web-sub"], check=True,
                   timeout=120)  # fmt: skip
    osc(env, tenant, "security", "group", "create", "web-sg")
    for args in (("--protocol", "icmp"), ("--protocol", "tcp", "--dst-port", "5001:5002"),
                 ("--protocol", "tcp", "--dst-port", "8080")):  # fmt: skip
        osc(env, tenant, "security", "group", "rule", "create", "web-sg", "--remote-ip", "0.0.0.0/0", *args)
    ports = {
        name: osc(env, tenant, "port", "create", "--network", "web", "--security-group", "web-sg", name)
        for name in ("vm1", "vm2", "client")
    }
    fip = osc(env, tenant, "floating", "ip", "create", "public", "--port", "vm2")
    lb = osc(env, tenant, "loadbalancer", "create", "--vip-subnet-id", "web-sub", "--name", "lb1")
    osc(env, tenant, "loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", "80", "--name",
        "l1", "lb1")  # fmt: skip
    osc(env, tenant, "loadbalancer", "pool", "create", "--listener", "l1", "--protocol", "TCP", "--lb-algorithm",
        "ROUND_ROBIN", "--name", "p1")  # fmt: skip
    for name in ("vm1", "vm2"):
        address = ports[name]["fixed_ips"][0]["ip_address"]
        osc(env, tenant, "loadbalancer", "member", "create", "--subnet-id", "web-sub", "--address", address,
            "--protocol-port", "8080", "--name", name, "p1")  # fmt: skip

    vm1 = plug(env, "hv1", "vm1", ports["vm1"])
    vm2 = plug(env, "hv2", "vm2", ports["vm2"])
    client = plug(env, "hv2", "client", ports["client"])
    host = env.lab.add_external_host(PHYSNET, "ext", f"{EXT_HOST}/24")
    host.exec("ethtool -K eth0 tx off", check=False)
    env.wait_realized()

    assert vm1.ping(vm2.ip, count=2, timeout=10), "east-west across chassis"
    assert vm2.ping(EXT_HOST, count=2, timeout=10), "SNAT through the gateway chassis"
    assert host.ping(fip["floating_ip_address"], count=2, timeout=10), "the floating IP from outside"
    assert tcp_transfer(vm2, host, port=5002), "TCP out through SNAT"
    # the load balancer's VIP spreads connections over both members
    servers = [vm.popen([sys.executable, "-c", _SERVER, name]) for vm, name in ((vm1, "vm1"), (vm2, "vm2"))]
    try:
        for proc in servers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        got = json.loads(
            client.exec([sys.executable, "-c", _CLIENT, lb["vip_address"], "80", "10"], timeout=60).stdout
        )
        assert set(got) == {"vm1", "vm2"}, got
        # the security group from outside, through the floating IP: 8080 is allowed in, 2222 is not
        servers.append(vm2.popen(["timeout", "60", "nc", "-n", "-l", "-k", "2222"]))
        from_outside = [sys.executable, "-c", _CLIENT, fip["floating_ip_address"]]
        assert json.loads(host.exec([*from_outside, "8080", "1"], timeout=30).stdout) == ["vm2"]
        assert json.loads(host.exec([*from_outside, "2222", "1"], timeout=30).stdout)[0].startswith("error:")
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
    assert gateway_ip.startswith("172.24.4.")
