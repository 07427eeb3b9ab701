"""L2 end to end: real ovs-vswitchd chassis in namespaces, the real controller, real packets.

What must arrive and what must not: VMs of a network reach each other on one chassis and across chassis
over VXLAN, GRE and Geneve; tenants with the same CIDR and addresses never see each other's packets; ARP
is answered by flows; broadcast stays in its network; a VLAN provider network carries the right tag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from flows.cookie import owner_hash
from lab.traffic import capture, tcp_transfer
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import PHYSNET, Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-l2")) as e:
        yield e


@pytest.mark.parametrize(
    "segment,cidr", [("vxlan", "10.11.0.0/24"), ("gre", "10.12.0.0/24"), ("geneve", "10.13.0.0/24")]
)
def test_vms_reach_each_other_on_one_and_across_chassis(env: Env, segment: str, cidr: str) -> None:
    md = env.md(f"t-{segment}")
    net = env.network(md, f"n-{segment}", cidr, segment_type=pb.Network.SegmentType.Value(segment.upper()))
    ports = [env.port(md, f"{segment}-{i}", net) for i in range(3)]
    a = env.plug("hv1", ports[0])
    b = env.plug("hv1", ports[1])
    c = env.plug("hv2", ports[2])
    env.wait_realized()
    assert a.ping(b.ip, count=2), "same chassis"
    assert a.ping(c.ip, count=2), f"across chassis over {segment}"
    assert c.ping(b.ip, count=2)
    assert tcp_transfer(a, c, nbytes=512 * 1024), f"TCP across chassis over {segment}"
    assert tcp_transfer(b, a), "TCP on one chassis"
    # large packets fit the network's MTU through the tunnel (no fragmentation needed)
    assert a.ping(c.ip, count=1, size=net.mtu - 28)


def test_same_cidr_same_addresses_on_one_chassis_never_mix(env: Env) -> None:
    alice, bob = env.md("alice"), env.md("bob")
    vms = {}
    for tenant, md in (("alice", alice), ("bob", bob)):
        net = env.network(md, f"{tenant}-net", "10.20.0.0/24")
        for host, ip in (("x", "10.20.0.10"), ("y", "10.20.0.11")):
            vms[f"{tenant}-{host}"] = env.plug("hv1", env.port(md, f"{tenant}-{host}", net, ip))
    env.wait_realized()
    assert vms["alice-x"].ping("10.20.0.11", count=2)
    assert vms["bob-x"].ping("10.20.0.11", count=2)
    victim = vms["bob-y"]
    alice_macs = {vms["alice-x"].mac, vms["alice-y"].mac}
    with capture("eth0", namespace=victim.namespace) as seen:
        vms["alice-x"].exec("ip neigh flush all")
        assert vms["alice-x"].ping("10.20.0.11", count=3)  # ARP broadcast + unicast, all alice's
        vms["alice-x"].exec("ping -b -c 2 -W 1 10.20.0.255", check=False)  # broadcast ping
    leaked = [ln for ln in seen.lines if any(mac in ln for mac in alice_macs)]
    assert not leaked, f"bob-y saw alice's packets: {leaked}"
    # the ARP reply alice-x got for 10.20.0.11 carries alice-y's MAC, not bob-y's
    neigh = vms["alice-x"].exec("ip neigh show 10.20.0.11").stdout
    assert vms["alice-y"].mac in neigh and vms["bob-y"].mac not in neigh


def test_arp_is_answered_by_flows_without_packet_in(env: Env) -> None:
    md = env.md("arp")
    net = env.network(md, "arp-net", "10.30.0.0/24")
    a = env.plug("hv1", env.port(md, "arp-a", net))
    c = env.plug("hv2", env.port(md, "arp-c", net))
    env.wait_realized()
    before = env.status()
    with capture("eth0", "arp", namespace=c.namespace) as at_target:
        a.exec("ip neigh flush all")
        assert a.ping(c.ip, count=1)
    neigh = a.exec(f"ip neigh show {c.ip}").stdout
    assert c.mac in neigh
    assert not at_target.matching(f"tell {a.ip}"), "a's ARP request is answered on hv1, never flooded to c"
    # c's own request for a (to answer the ping) was answered too, by hv2's flows, with a's MAC
    assert any(f"Reply {a.ip} is-at {a.mac}" in ln for ln in at_target.lines), at_target.lines
    after = env.status()
    for chassis in ("hv1", "hv2"):
        assert after[chassis].packet_ins == before[chassis].packet_ins, "no packet-in for ARP"
    # the answer came from c's address flow in mac_lookup (table 32: NEXT_HOP = the asked address)
    key = f"reg0={int(ipaddress.IPv4Address(c.ip)):#x}"
    arp_flows = [ln for ln in env.chassis("hv1").dump_flows() if "table=32" in ln and key in ln]
    assert arp_flows and any("n_packets=0" not in ln for ln in arp_flows), arp_flows


def test_broadcast_reaches_its_network_only(env: Env) -> None:
    md = env.md("bcast")
    net = env.network(md, "bc-net", "10.40.0.0/24")
    other = env.network(md, "bc-other", "10.40.0.0/24")
    src = env.plug("hv1", env.port(md, "bc-src", net))
    same_local = env.plug("hv1", env.port(md, "bc-local", net))
    same_remote = env.plug("hv2", env.port(md, "bc-remote", net))
    outside_local = env.plug("hv1", env.port(md, "bc-out1", other))
    outside_remote = env.plug("hv2", env.port(md, "bc-out2", other))
    env.wait_realized()
    probe = "udp and port 9999"
    with (
        capture("eth0", probe, namespace=same_local.namespace) as c1,
        capture("eth0", probe, namespace=same_remote.namespace) as c2,
        capture("eth0", probe, namespace=outside_local.namespace) as c3,
        capture("eth0", probe, namespace=outside_remote.namespace) as c4,
    ):
        for _ in range(3):
            src.exec("echo hi | nc -u -b -w 1 -q 0 10.40.0.255 9999 || true", check=False)
    assert c1.matching("ff:ff:ff:ff:ff:ff") and c2.matching("ff:ff:ff:ff:ff:ff"), (c1.lines, c2.lines)
    assert not c3.lines and not c4.lines, (c3.lines, c4.lines)


def test_vlan_provider_network_reaches_an_external_host_with_its_tag(env: Env) -> None:
    net = env.stub.CreateNetwork(
        pb.CreateNetworkRequest(
            network=pb.Network(segment_type=pb.Network.VLAN, physical_network=PHYSNET, segment_id=123),
            network_id="prov123",
        ),
        metadata=env.admin,
    )
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(network=net.name, cidr="172.30.0.0/24"), subnet_id="prov123-v4"
        ),
        metadata=env.admin,
    )
    vm = env.plug("hv1", env.port(env.admin, "prov-vm", net, "172.30.0.10"))
    ext = env.lab.add_external_host(PHYSNET, "ext123", "172.30.0.200/24", vlan=123)
    other_vlan = env.lab.add_external_host(PHYSNET, "ext124", "172.30.0.201/24", vlan=124)
    env.wait_realized()
    uplink = env.chassis("hv1").provider_uplink_root_ifname(PHYSNET)
    with capture(uplink, "icmp") as wire:
        assert vm.ping(ext.ip, count=3)
    tagged = wire.matching("vlan 123")
    assert tagged and all("vlan 123" in ln for ln in wire.lines), wire.lines
    assert not vm.ping(other_vlan.ip, count=1, timeout=2), "a host on another VLAN must be unreachable"
    # and a second VM on the other chassis reaches the first through the physical network
    vm2 = env.plug("hv2", env.port(env.admin, "prov-vm2", net, "172.30.0.11"))
    env.wait_realized()
    assert vm2.ping(vm.ip, count=2) and vm2.ping(ext.ip, count=2)


def test_deleting_a_port_removes_its_flows_and_only_its_flows(env: Env) -> None:
    md = env.md("del")
    net = env.network(md, "del-net", "10.50.0.0/24")
    keep = env.plug("hv1", env.port(md, "del-keep", net))
    gone = env.port(md, "del-gone", net)
    env.plug("hv1", gone)
    remote = env.plug("hv2", env.port(md, "del-remote", net))
    env.wait_realized()
    before = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    env.stub.DeletePort(pb.DeletePortRequest(name=gone.name), metadata=md)
    env.wait_realized()
    # its flows, and the flow standing for its address as a member of its default group (a remote group)
    tags = (
        f"{owner_hash('del-gone'):08x}",
        f"{owner_hash('clause:ingress|IPv4|r|' + gone.fixed_ips[0].ip_address):08x}",
    )
    for ch in ("hv1", "hv2"):
        after = env.ovs_flows(ch)
        removed, added = before[ch] - after, after - before[ch]
        assert removed and all(any(t in line.split(",")[0] for t in tags) for line in removed), (ch, removed)
        assert not added, (ch, added)
    assert keep.ping(remote.ip, count=2)


def test_a_vm_moved_to_another_chassis_works_again(env: Env) -> None:
    md = env.md("move")
    net = env.network(md, "mv-net", "10.60.0.0/24")
    mover = env.port(md, "mv-vm", net)
    peer = env.plug("hv1", env.port(md, "mv-peer", net))
    env.plug("hv1", mover)
    env.wait_realized()
    assert peer.ping(mover.fixed_ips[0].ip_address, count=1)
    env.unplug("hv1", "mv-vm")
    moved = env.plug("hv2", mover)
    env.wait_realized()
    assert moved.ping(peer.ip, count=2)
    assert peer.ping(moved.ip, count=2)


def test_cli_shows_a_chassis_flows_with_stage_and_owner(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import sdnctl as cli

    md = env.md("cli")
    net = env.network(md, "cli-net", "10.80.0.0/24")
    env.plug("hv1", env.port(md, "cli-vm", net))
    env.wait_realized()
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["flow", "dump", "hv1", "--owner", "cli-vm", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    stages = {ln.split("table=")[1].split(",")[0] for ln in lines}
    assert {"0(classify)", "30(arp_nd)", "60(l2_lookup)", "100(egress_dispatch)", "120(output)"} <= stages
    assert all("/cli-vm" in ln for ln in lines)  # "# classify/cli-vm": the owning app and object
    # ...and the revision and the request that last changed it (the binding write, by the dataplane)
    assert all(" rev=" in ln and " by " in ln for ln in lines), lines
    assert all("n_packets=" in ln for ln in lines)  # read from the switch, with its counters
    assert cli.main(["flow", "dump", "hv1", "--port", "cli-vm", "--desired", "--stage", "output", *base]) == 0
    desired = capsys.readouterr().out.splitlines()
    # delivery to the port (the hairpin for replies made in flows is one flow shared by every port)
    assert len(desired) == 1 and all("n_packets" not in ln and "120(output)" in ln for ln in desired)
    installed = "\n".join(env.chassis("hv1").dump_flows())
    cookie = lines[0].split("cookie=")[1].split(",")[0]
    assert cookie in installed  # what the controller says is what the switch holds
    assert cli.main(["chassis", "status", *base]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] == "chassis" and "hv1" in out and "true" in out  # a table: chassis by id
    assert cli.main(["wait-realized", *base]) == 0
    assert "realized" in capsys.readouterr().out


def test_flat_provider_network_is_untagged_on_the_wire(env: Env) -> None:
    net = env.stub.CreateNetwork(
        pb.CreateNetworkRequest(
            network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET), network_id="flat1"
        ),
        metadata=env.admin,
    )
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(network=net.name, cidr="172.31.0.0/24"), subnet_id="flat1-v4"
        ),
        metadata=env.admin,
    )
    vm = env.plug("hv2", env.port(env.admin, "flat-vm", net, "172.31.0.10"))
    ext = env.lab.add_external_host(PHYSNET, "extflat", "172.31.0.200/24")
    env.wait_realized()
    uplink = env.chassis("hv2").provider_uplink_root_ifname(PHYSNET)
    with capture(uplink, "icmp") as wire:
        assert vm.ping(ext.ip, count=3)
    assert wire.lines and not any("vlan" in ln for ln in wire.lines), wire.lines
    assert not ext.ping(vm.ip, count=1, timeout=2), "the VM's default security group lets no outsider in"
    env.allow_ingress(env.admin)
    assert ext.ping(vm.ip, count=2, timeout=5)


def test_a_shared_network_carries_another_tenants_port(env: Env) -> None:
    """An admin shares alice's network; bob attaches his own port (his default group) and it talks with
    alice's VM across chassis, as on any network: the packets do not care whose the port is."""
    from google.protobuf import field_mask_pb2

    alice, bob = env.md("share-a"), env.md("share-b")
    net = env.network(alice, "shared-net", "10.81.0.0/24")
    env.stub.UpdateNetwork(
        pb.UpdateNetworkRequest(
            network=pb.Network(name=net.name, shared=True),
            update_mask=field_mask_pb2.FieldMask(paths=["shared"]),
        ),
        metadata=env.admin,
    )
    for md in (alice, bob):  # the two tenants' default groups let in only their own members
        env.allow_ingress(md, "icmp")
    a = env.plug("hv1", env.port(alice, "share-a1", net))
    port_b = env.port(bob, "share-b1", net)
    assert port_b.tenant == "share-b"
    b = env.plug("hv2", port_b)
    env.wait_realized()
    assert a.ping(b.ip, count=2) and b.ping(a.ip, count=2)
