"""The real OpenStack clients from PyPI against the Neutron REST API, run as their users run them: the
`openstack` command (python-openstackclient with python-neutronclient's FWaaS and VPNaaS plug-ins and
python-octaviaclient) through subprocess with `-f json` parsed back, and an openstacksdk script. No Keystone:
`--os-auth-type admin_token` sends this controller's token as X-Auth-Token to `--os-endpoint`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import openstack
import pytest

from controller.neutron.kinds import ALL
from controller.neutron.rest import listen
from controller.pki import Pki
from proto.sdn.v1 import topology_pb2 as pb
from tests.conftest import Api
from tests.test_neutron_api import Rest, public, rest, tenant_net  # noqa: F401  (rest: the fixture)

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


def test_openstack_cli_firewall_and_vpn_plug_ins(rest: Rest, api: Api) -> None:  # noqa: F811
    """python-neutronclient's OSC plug-ins (FWaaS v2, VPNaaS) on a router made through REST. (Networks,
    routers, security groups, ports, floating IPs and load balancers through the CLI: tests/test_e2e_neutron.py,
    with packets.)"""
    net, sub = tenant_net(rest, "alice", "web", "10.0.0.0/24")
    ext, _ = public(rest)
    router = rest.ok("POST", "/v2.0/routers", {"router": {"name": "r1", "external_gateway_info": {"network_id": ext}}},
                     "alice", 201)["router"]  # fmt: skip
    iface = rest.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub}, "alice")
    rule = osc(rest, "alice", "firewall", "group", "rule", "create", "--protocol", "tcp", "--destination-port",
               "80:90", "--action", "allow", "allow-http")  # fmt: skip
    assert (rule["Destination Port"], rule["Action"], rule["Enabled"]) == ("80:90", "allow", True)
    policy = osc(
        rest, "alice", "firewall", "group", "policy", "create", "--firewall-rule", "allow-http", "pol"
    )
    assert policy["Firewall Rules"] == [rule["ID"]]
    group = osc(rest, "alice", "firewall", "group", "create", "--ingress-firewall-policy", "pol", "--port",
                iface["port_id"], "fw")  # fmt: skip
    assert group["Ports"] == [iface["port_id"]] and group["Status"] == "ACTIVE"
    assert group["Ingress Policy ID"] == policy["ID"] and group["Egress Policy ID"] is None
    got = api.stub.GetFirewallGroup(pb.GetFirewallGroupRequest(name=f"firewallGroups/{group['ID']}"),
                                    metadata=api.md(rest.alice))  # fmt: skip
    assert list(got.ports) == [f"ports/{iface['port_id']}"]
    osc(rest, "alice", "vpn", "ike", "policy", "create", "ike1")
    osc(rest, "alice", "vpn", "ipsec", "policy", "create", "ipsec1")
    service = osc(rest, "alice", "vpn", "service", "create", "--router", "r1", "vpn1")
    assert service["Router"] == router["id"] and service["Ext v4 IP"].startswith("203.0.113.")
    osc(
        rest, "alice", "vpn", "endpoint", "group", "create", "--type", "subnet", "--value", "web-sub", "local"
    )
    osc(
        rest,
        "alice",
        "vpn",
        "endpoint",
        "group",
        "create",
        "--type",
        "cidr",
        "--value",
        "10.2.0.0/24",
        "peer",
    )
    conn = osc(rest, "alice", "vpn", "ipsec", "site", "connection", "create", "--vpnservice", "vpn1", "--ikepolicy",
               "ike1", "--ipsecpolicy", "ipsec1", "--peer-address", "198.51.100.2", "--peer-id", "198.51.100.2",
               "--psk", "s3cret", "--local-endpoint-group", "local", "--peer-endpoint-group", "peer",
               "conn1")  # fmt: skip
    assert conn["Peer Address"] == "198.51.100.2" and conn["Pre-shared Key"] == "******"
    assert net


def test_openstack_cli_errors_read_as_neutron_errors(rest: Rest) -> None:  # noqa: F811
    tenant_net(rest, "alice", "web", "10.0.0.0/24")
    err = fails(rest, "alice", "subnet", "create", "--network", "web", "--subnet-range", "10.0.0.0/33", "bad")
    assert "BadRequestException: 400" in err and "Invalid input for cidr" in err
    osc(rest, "alice", "port", "create", "--network", "web", "--fixed-ip", "ip-address=10.0.0.7", "a")
    assert [p["Name"] for p in osc(rest, "alice", "port", "list", "--fixed-ip", "ip-address=10.0.0.7")] == [
        "a"
    ]
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


def test_https_with_the_controllers_ca(server: Any, tmp_path: Path) -> None:
    """neutron_tls: the listener speaks HTTPS with the controller's certificate; the CLI verifies it with
    --os-cacert (and refuses it without); plain HTTP gets no answer."""
    authority = Pki(tmp_path / "pki")
    authority.init()
    files = authority.ensure_controller([])
    srv = listen(server.server.topology, server.server.tokens, ALL, "127.0.0.1", 0, files)
    try:
        url = f"https://127.0.0.1:{srv.port}"
        base = [
            OPENSTACK,
            "--os-auth-type",
            "admin_token",
            "--os-token",
            server.api.admin_token,
            "--os-endpoint",
            url,
        ]
        made = subprocess.run([*base, "--os-cacert", str(files.ca), "network", "create", "tls-net", "-f", "json"],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["name"] == "tls-net"
        unverified = subprocess.run(
            [*base, "network", "list"], capture_output=True, text=True, timeout=120, check=False
        )
        assert unverified.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=10).read()
    finally:
        srv.stop()
