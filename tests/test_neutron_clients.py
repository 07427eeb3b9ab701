"""The real OpenStack clients from PyPI against the Neutron REST API, run as their users run them: the
`openstack` command (python-openstackclient with python-neutronclient's FWaaS and VPNaaS plug-ins and
python-octaviaclient) through subprocess with `-f json` parsed back, and an openstacksdk script. No Keystone:
`--os-auth-type admin_token` sends this controller's token as X-Auth-Token to `--os-endpoint`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openstack
import pytest

from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import Api
from tests.test_neutron_api import Rest, rest  # noqa: F401  (the fixture)

OPENSTACK = str(Path(sys.executable).parent / "openstack")


def osc(rest: Rest, token: str, *args: str) -> Any:  # noqa: F811
    """`openstack ARGS -f json` as `token` ("admin", "alice", "bob"), its output parsed; the command must
    succeed."""
    out = run(rest, token, *args, "-f", "json")
    assert out.returncode == 0, (args, out.stderr)
    return json.loads(out.stdout) if out.stdout.strip() else None


def fails(rest: Rest, token: str, *args: str) -> str:  # noqa: F811
    """`openstack ARGS` must fail: its error output."""
    out = run(rest, token, *args)
    assert out.returncode != 0, (args, out.stdout)
    return out.stderr


def run(rest: Rest, token: str, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return subprocess.run(
        [
            OPENSTACK,
            "--os-auth-type",
            "admin_token",
            "--os-token",
            getattr(rest, token),
            "--os-endpoint",
            rest.url,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_openstack_cli_builds_a_whole_tenant(rest: Rest, api: Api) -> None:  # noqa: F811
    public = osc(
        rest,
        "admin",
        "network",
        "create",
        "public",
        "--external",
        "--provider-network-type",
        "flat",
        "--provider-physical-network",
        "ext",
    )
    assert public["router:external"] is True and public["provider:network_type"] == "flat"
    osc(
        rest,
        "admin",
        "subnet",
        "create",
        "--network",
        "public",
        "--subnet-range",
        "203.0.113.0/24",
        "--no-dhcp",
        "public-sub",
    )
    net = osc(rest, "alice", "network", "create", "web")
    assert net["project_id"] == "alice" and net["status"] == "ACTIVE"
    sub = osc(
        rest,
        "alice",
        "subnet",
        "create",
        "--network",
        "web",
        "--subnet-range",
        "10.0.0.0/24",
        "--dns-nameserver",
        "10.0.0.53",
        "web-sub",
    )
    assert sub["gateway_ip"] == "10.0.0.1" and sub["dns_nameservers"] == ["10.0.0.53"]
    router = osc(rest, "alice", "router", "create", "r1", "--external-gateway", "public")
    assert router["external_gateway_info"]["network_id"] == public["id"]
    assert run(rest, "alice", "router", "add", "subnet", "r1", "web-sub").returncode == 0
    sg = osc(rest, "alice", "security", "group", "create", "web-sg")
    rule = osc(
        rest,
        "alice",
        "security",
        "group",
        "rule",
        "create",
        "web-sg",
        "--protocol",
        "tcp",
        "--dst-port",
        "80",
        "--remote-ip",
        "0.0.0.0/0",
    )
    assert (rule["port_range_min"], rule["port_range_max"], rule["direction"]) == (80, 80, "ingress")
    osc(rest, "alice", "security", "group", "rule", "create", "web-sg", "--protocol", "icmp")
    port = osc(
        rest,
        "alice",
        "port",
        "create",
        "--network",
        "web",
        "--fixed-ip",
        "subnet=web-sub,ip-address=10.0.0.10",
        "--security-group",
        "web-sg",
        "vm1",
    )
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.10"}]
    assert port["security_group_ids"] == [sg["id"]]
    fip = osc(rest, "alice", "floating", "ip", "create", "public", "--port", "vm1")
    assert fip["port_id"] == port["id"] and fip["router_id"] == router["id"]
    # load balancer (python-octaviaclient)
    lb = osc(rest, "alice", "loadbalancer", "create", "--vip-subnet-id", "web-sub", "--name", "lb1")
    assert lb["provisioning_status"] == "ACTIVE" and lb["vip_address"].startswith("10.0.0.")
    osc(
        rest,
        "alice",
        "loadbalancer",
        "listener",
        "create",
        "--protocol",
        "TCP",
        "--protocol-port",
        "80",
        "--name",
        "l1",
        "lb1",
    )
    osc(
        rest,
        "alice",
        "loadbalancer",
        "pool",
        "create",
        "--listener",
        "l1",
        "--protocol",
        "TCP",
        "--lb-algorithm",
        "ROUND_ROBIN",
        "--name",
        "p1",
    )
    member = osc(
        rest,
        "alice",
        "loadbalancer",
        "member",
        "create",
        "--address",
        "10.0.0.10",
        "--protocol-port",
        "8080",
        "--name",
        "m1",
        "p1",
    )
    assert member["address"] == "10.0.0.10" and member["protocol_port"] == 8080
    assert [m["name"] for m in osc(rest, "alice", "loadbalancer", "member", "list", "p1")] == ["m1"]
    # firewall group on the router's interface (python-neutronclient's FWaaS plug-in)
    osc(
        rest,
        "alice",
        "firewall",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--destination-port",
        "80",
        "--action",
        "allow",
        "allow-http",
    )
    osc(rest, "alice", "firewall", "group", "policy", "create", "--firewall-rule", "allow-http", "web-policy")
    iface = osc(rest, "alice", "port", "list", "--device-owner", "network:router_interface")
    group = osc(
        rest,
        "alice",
        "firewall",
        "group",
        "create",
        "--ingress-firewall-policy",
        "web-policy",
        "--port",
        iface[0]["ID"],
        "fw",
    )
    assert group["Ports"] == [iface[0]["ID"]] and group["Status"] == "ACTIVE"
    # every object is the gRPC API's too
    md = api.md(rest.alice)
    assert api.stub.GetRouter(pb.GetRouterRequest(name=f"routers/{router['id']}"), metadata=md).interfaces
    listed = osc(rest, "alice", "network", "list")
    assert {n["Name"] for n in listed} == {"web", "public"}
    assert osc(rest, "bob", "network", "list") == [
        {
            "ID": public["id"],
            "Name": "public",
            "Subnets": [osc(rest, "admin", "subnet", "show", "public-sub")["id"]],
        }
    ]


def test_openstack_cli_errors_read_as_neutron_errors(rest: Rest) -> None:  # noqa: F811
    osc(rest, "alice", "network", "create", "web")
    osc(rest, "alice", "subnet", "create", "--network", "web", "--subnet-range", "10.0.0.0/24", "web-sub")
    err = fails(rest, "alice", "subnet", "create", "--network", "web", "--subnet-range", "10.0.0.0/33", "bad")
    assert "BadRequestException: 400" in err and "Invalid input for cidr" in err
    osc(rest, "alice", "port", "create", "--network", "web", "--fixed-ip", "ip-address=10.0.0.7", "a")
    err = fails(rest, "alice", "port", "create", "--network", "web", "--fixed-ip", "ip-address=10.0.0.7", "b")
    assert "ConflictException: 409" in err and "IP address 10.0.0.7 already allocated in subnet" in err
    err = fails(rest, "bob", "port", "create", "--network", "web", "p")  # alice's network, by name
    assert "No Network found for web" in err
    err = fails(
        rest,
        "alice",
        "network",
        "create",
        "--provider-network-type",
        "vlan",
        "--provider-physical-network",
        "p",
        "v",
    )
    assert "ForbiddenException: 403" in err and "admin only" in err
    err = fails(rest, "alice", "network", "delete", "web")
    assert "409" in err or "in use" in err.lower()


SDK_SCRIPT = """
import openstack, sys
conn = openstack.connect(auth_type="admin_token", auth={"endpoint": sys.argv[1], "token": sys.argv[2]})
net = conn.network.create_network(name="sdk-net")
sub = conn.network.create_subnet(network_id=net.id, cidr="10.5.0.0/24", ip_version=4, name="sdk-sub")
router = conn.network.create_router(name="sdk-r")
conn.network.add_interface_to_router(router, subnet_id=sub.id)
port = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": "10.5.0.9"}])
print(conn.network.find_network("sdk-net").id == net.id, port.fixed_ips[0]["ip_address"],
      sorted(p.device_owner for p in conn.network.ports(network_id=net.id)))
"""


def test_openstacksdk_script(rest: Rest, tmp_path: Path) -> None:  # noqa: F811
    script = tmp_path / "sdk.py"
    script.write_text(SDK_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), rest.url, rest.alice],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "True 10.5.0.9 ['', 'network:router_interface']"
    # and in this process: paging through the SDK's generator follows the links
    conn = openstack.connect(auth_type="admin_token", auth={"endpoint": rest.url, "token": rest.alice})
    for i in range(5):
        conn.network.create_security_group(name=f"g{i}")
    names = [g.name for g in conn.network.security_groups(limit=2, sort_key="name")]
    assert names == ["default", "g0", "g1", "g2", "g3", "g4"] or names == ["g0", "g1", "g2", "g3", "g4"]
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.network.get_network("no-such-network")
