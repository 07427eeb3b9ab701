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
    found += [
        f"path {p}" for p in (workdir, f"{os.path.dirname(workdir)}/{prefix}.json") if os.path.exists(p)
    ]
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
        assert not pair.vm1.ping(pair.vm2.ip, timeout=1), "no flows yet: br-int (fail_mode=secure) must drop"
        for local, vm, remote, remote_vm in ends:
            tun = local.add_tunnel_port(tunnel_type)
            install_tunnel_flows(local, vm, tun, remote, remote_vm)
        for vm in (pair.vm1, pair.vm2):  # forget ARP failures from before the flows and from earlier params
            vm.exec("ip neigh flush all")
        assert pair.vm1.ping(pair.vm2.ip, count=3, timeout=5)
        # Full-size packets must fit: VM MTU 1450 + encapsulation within the 1600 underlay.
        assert pair.vm1.ping(pair.vm2.ip, count=1, size=pair.vm1.mtu - 28)
        assert tcp_transfer(pair.vm1, pair.vm2, nbytes=512 * 1024)
        # The packets really went through the tunnel flows, in both directions.
        assert packets(pair.ch1, f"tun_id={VNI:#x}") > 0 and packets(pair.ch2, f"tun_id={VNI:#x}") > 0
        with capture(pair.ch1.underlay_root_ifname) as underlay:
            assert pair.vm1.ping(pair.vm2.ip, count=1)
        encap = {"vxlan": "VXLAN", "gre": "GREv0", "geneve": "Geneve"}[tunnel_type]
        assert any(encap in ln for ln in underlay.lines), underlay.lines
    finally:
        for local, *_ in ends:
            local.ofctl("del-flows", "br-int")
            local.vsctl("--if-exists", "del-port", "br-int", port)


def test_vlan_provider_network_reaches_external_host(pair: Pair) -> None:
    """A VM's traffic, tagged by br-int flows and sent out a provider bridge, reaches a host on that VLAN;
    tcpdump on the physical network shows the 802.1q tag, and an untagged host on it gets nothing."""
    lab, ch1 = pair.lab, pair.ch1
    lab.add_provider_network("physnet1")
    uplink = ch1.add_provider_bridge("br-ex1", "physnet1")
    assert ch1.ofport(uplink) > 0
    assert ch1.bridge_mappings == {"physnet1": "br-ex1"}
    assert "physnet1:br-ex1" in ch1.vsctl("get", "Open_vSwitch", ".", "external_ids:bridge-mappings")
    ext = lab.add_external_host("physnet1", "ext1", "10.12.0.100/24", vlan=VLAN)
    untagged = lab.add_external_host("physnet1", "ext2", "10.12.0.101/24")
    vm = ch1.add_vm("vm3", "02:00:00:00:01:03", "10.12.0.3/24", "port-vm3")
    try:
        # The test plays the controller: patch ports (bridge mapping) and the VLAN flows on br-int.
        ch1.vsctl(
            "add-port", "br-int", "int-ex1", "--", "set", "Interface", "int-ex1", "type=patch",
            "options:peer=phy-ex1", "--", "add-port", "br-ex1", "phy-ex1", "--", "set", "Interface",
            "phy-ex1", "type=patch", "options:peer=int-ex1",
        )  # fmt: skip
        patch = ch1.ofport("int-ex1")
        ch1.ofctl(
            "add-flow", "br-int",
            f"priority=100,in_port={vm.ofport},actions=push_vlan:0x8100,"
            f"set_field:{0x1000 | VLAN}->vlan_vid,output:{patch}",
        )  # fmt: skip
        ch1.ofctl(
            "add-flow",
            "br-int",
            f"priority=100,in_port={patch},dl_vlan={VLAN},actions=pop_vlan,output:{vm.ofport}",
        )
        with capture(ch1.provider_uplink_root_ifname("physnet1")) as wire:
            assert vm.ping(ext.ip, count=2, timeout=5)
        tagged = wire.matching(f"vlan {VLAN}")
        assert any(ext.ip in ln and "ICMP echo request" in ln for ln in tagged), wire.lines
        assert any(ext.mac in ln and "ICMP echo reply" in ln for ln in tagged), wire.lines
        assert not any("ICMP echo" in ln and f"vlan {VLAN}" not in ln for ln in wire.lines), wire.lines
        assert not vm.ping(untagged.ip, timeout=1), "an untagged host must not answer VLAN traffic"
        assert tcp_transfer(vm, ext)
    finally:
        ch1.ofctl("del-flows", "br-int")
        ch1.remove_vm(vm)


def test_controller_connects_over_management_network(pair: Pair) -> None:
    """A vswitchd inside a chassis namespace reaches a listener on lab.mgmt_ip; the Controller row is tuned."""
    import socket

    with socket.socket() as server:
        server.bind((pair.lab.mgmt_ip, 0))
        server.listen(1)
        server.settimeout(10)
        try:
            pair.ch1.set_controller(f"tcp:{pair.lab.mgmt_ip}:{server.getsockname()[1]}")
            conn, (peer, _) = server.accept()
            conn.close()
            assert peer == pair.ch1.mgmt_ip
            row = pair.ch1.vsctl("--columns=max_backoff,connection_mode", "list", "Controller")
            assert "1000" in row and "out-of-band" in row, row
        finally:
            pair.ch1.del_controller()


def test_restart_vswitchd_keeps_ports_and_loses_flows(pair: Pair) -> None:
    ch, vm = pair.ch2, pair.vm2
    ofport, old_pid = vm.ofport, ch.vswitchd_pid()
    ch.ofctl("add-flow", "br-int", "priority=5,actions=drop")
    assert len(ch.dump_flows()) == 1
    ch.kill_vswitchd()
    assert ch.vswitchd_pid() is None
    ch.start_vswitchd()
    assert ch.vswitchd_pid() not in (None, old_pid)
    assert vm.ofport == ofport and ch.dump_flows() == []


def test_move_vm_between_chassis(pair: Pair) -> None:
    """remove_vm unplugs (port and namespace gone); the same VM can then be plugged on another chassis."""
    vm = pair.ch1.add_vm("mover", "02:00:00:00:01:09", "10.11.0.9/24", "port-mover")
    old_port, old_ns = vm.port_name, vm.namespace
    pair.ch1.remove_vm(vm)
    assert old_port not in pair.ch1.vsctl("list-ports", "br-int").split()
    assert old_ns not in netlink.list_netns()
    moved = pair.ch2.add_vm("mover", "02:00:00:00:01:09", "10.11.0.9/24", "port-mover")
    try:
        assert (
            pair.ch2.vsctl("get", "Interface", moved.port_name, "external_ids:iface-id").strip('"')
            == "port-mover"
        )
        pair.ch2.ofctl("add-flow", "br-int", "priority=1,actions=NORMAL")
        assert moved.ping(pair.vm2.ip, count=1)
    finally:
        pair.ch2.ofctl("del-flows", "br-int")
        pair.ch2.remove_vm(moved)


def test_two_labs_side_by_side(pair: Pair) -> None:
    """A second lab next to the module's one gets its own prefix and management /24."""
    with Lab() as other:
        ch = other.add_chassis("ch1")
        assert other.prefix != pair.lab.prefix
        assert (
            other.mgmt_net not in pair.lab.mgmt_net and pair.lab.mgmt_net not in other.mgmt_net
        )  # no overlap
        assert ch.vswitchd_pid() and pair.ch1.vswitchd_pid()
        assert ch.datapath_id != pair.ch1.datapath_id


def build_everything(lab: Lab) -> tuple[VM, subprocess.Popen[str]]:
    """One of each thing a lab can own, plus a stray process inside a VM."""
    ch = lab.add_chassis("a")
    lab.add_chassis("b")
    vm = ch.add_vm("v", "02:00:00:00:02:01", "10.13.0.1/24", "p-v", gateway="10.13.0.254")
    lab.add_provider_network("pn")
    ch.add_provider_bridge("br-pn", "pn")
    lab.add_external_host("pn", "x1", "10.13.0.100/24", vlan=7)
    lab.add_external_host("pn", "x2", "10.13.0.101/24")
    return vm, vm.popen(["sleep", "600"])


def test_teardown_leaves_nothing() -> None:
    with Lab() as lab:
        prefix, workdir = lab.prefix, str(lab.workdir)
        _, stray = build_everything(lab)
        assert leftovers(prefix, workdir)
    stray.wait(timeout=5)
    assert leftovers(prefix, workdir) == []


def test_failure_inside_lab_still_tears_down() -> None:
    with pytest.raises(ValueError, match="already used"), Lab() as lab:
        prefix, workdir = lab.prefix, str(lab.workdir)
        lab.add_chassis("dup")
        lab.add_chassis("dup")
    assert leftovers(prefix, workdir) == []


KILLED_LAB = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from lab import Lab
    from tests.test_lab import build_everything
    lab = Lab().start()
    _, stray = build_everything(lab)
    print(json.dumps({"prefix": lab.prefix, "workdir": str(lab.workdir), "stray": stray.pid}), flush=True)
    time.sleep(600)
    """
)


def test_cleanup_stale_after_owner_is_killed() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_LAB, str(ROOT)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    info: dict[str, object] = {}
    try:
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline())
        prefix, workdir = str(info["prefix"]), str(info["workdir"])
        assert leftovers(prefix, workdir)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        removed = cleanup_stale()
        # A parallel test run's Lab() start may have cleaned it first; either way it must be gone now.
        assert prefix in removed or not os.path.exists(f"{os.path.dirname(workdir)}/{prefix}.json")
        assert leftovers(prefix, workdir) == []
        assert not proc.pid_alive(int(str(info["stray"])))
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        cleanup_stale()
