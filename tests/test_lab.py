"""Lab tests: real ovsdb-server/ovs-vswitchd per chassis in namespaces, real packets, hand-written flows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import VM, Chassis, Lab, cleanup_stale, netlink, proc
from lab.traffic import capture, tcp_transfer

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
VNI = 5001
VLAN = 101


class Pair:
    """Two chassis with one VM each on the same /24."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ch1: Chassis = lab.add_chassis("ch1")
        self.ch2: Chassis = lab.add_chassis("ch2")
        self.vm1: VM = self.ch1.add_vm("vm1", "02:00:00:00:01:01", "10.11.0.1/24", "port-vm1")
        self.vm2: VM = self.ch2.add_vm("vm2", "02:00:00:00:01:02", "10.11.0.2/24", "port-vm2")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with Lab() as lab:
        yield Pair(lab)


def leftovers(prefix: str, workdir: str) -> list[str]:
    """Everything named after a lab prefix that still exists: namespaces, root links, processes, files."""
    found = [f"netns {n}" for n in netlink.list_netns() if n.startswith(prefix)]
    found += [f"link {n}" for n in netlink.list_links() if n.startswith(prefix)]
    found += [f"pid {p}: {proc.pid_cmdline(p)}" for p in proc.pids_matching(workdir)]
    found += [f"path {p}" for p in (workdir, f"{os.path.dirname(workdir)}/{prefix}.json") if os.path.exists(p)]
    return found


def install_tunnel_flows(local: Chassis, vm: VM, tun_port: int, remote: Chassis, remote_vm: VM) -> None:
    """Hand-written point-to-point overlay: ARP and IP for the remote VM go into the tunnel with VNI/tun_dst;
    from the tunnel, only our VNI and our VM's MAC (or broadcast) reach the VM. Everything else drops."""
    to_tunnel = f"set_field:{VNI}->tun_id,set_field:{remote.tunnel_ip}->tun_dst,output:{tun_port}"
    flows = [
        f"priority=100,arp,in_port={vm.ofport},arp_tpa={remote_vm.ip},actions={to_tunnel}",
        f"priority=100,ip,in_port={vm.ofport},nw_dst={remote_vm.ip},actions={to_tunnel}",
        f"priority=100,in_port={tun_port},tun_id={VNI},dl_dst={vm.mac},actions=output:{vm.ofport}",
        f"priority=90,arp,in_port={tun_port},tun_id={VNI},dl_dst=ff:ff:ff:ff:ff:ff,actions=output:{vm.ofport}",
    ]
    for flow in flows:
        local.ofctl("add-flow", "br-int", flow)


def packets(chassis: Chassis, match: str) -> int:
    """Sum of n_packets of br-int flows whose text contains `match`."""
    total = 0
    for line in chassis.dump_flows():
        if match in line:
            total += int(line.split("n_packets=")[1].split(",")[0])
    return total


@pytest.mark.parametrize("tunnel_type", ["vxlan", "gre", "geneve"])
def test_tunnel_ping_and_tcp(pair: Pair, tunnel_type: str) -> None:
    ends = ((pair.ch1, pair.vm1, pair.ch2, pair.vm2), (pair.ch2, pair.vm2, pair.ch1, pair.vm1))
    port = f"{tunnel_type}-tun"
    try:
        for vm in (pair.vm1, pair.vm2):
            vm.exec("ip neigh flush all")
        assert not pair.vm1.ping(pair.vm2.ip, timeout=1), "no flows yet: br-int (fail_mode=secure) must drop"
        for local, vm, remote, remote_vm in ends:
            tun = local.add_tunnel_port(tunnel_type)
            install_tunnel_flows(local, vm, tun, remote, remote_vm)
        assert pair.vm1.ping(pair.vm2.ip, count=3, timeout=5)
        # Full-size packets must fit: VM MTU 1450 + encapsulation within the 1600 underlay.
        assert pair.vm1.ping(pair.vm2.ip, count=1, size=pair.vm1.mtu - 28)
        assert tcp_transfer(pair.vm1, pair.vm2, nbytes=512 * 1024)
        # The packets really went through the tunnel flows, in both directions.
        assert packets(pair.ch2, f"tun_id={VNI:#x}") > 0 or packets(pair.ch2, f"tun_id={VNI}") > 0
        assert packets(pair.ch1, "tun_id=") > 0
        with capture(pair.ch1.underlay_root_ifname) as underlay:
            assert pair.vm1.ping(pair.vm2.ip, count=1)
        encap = {"vxlan": "VXLAN", "gre": "GREv0", "geneve": "Geneve"}[tunnel_type]
        assert any(encap in ln for ln in underlay.lines), underlay.lines
    finally:
        for local, *_ in ends:
            local.ofctl("del-flows", "br-int")
            local.vsctl("--if-exists", "del-port", "br-int", port)
