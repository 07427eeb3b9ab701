"""The DHCP app by behaviour: a port's DHCP requests reach the controller through the port's own meter;
anyone else's are dropped; other traffic is untouched; subnet changes recompile the ports they reach."""

from __future__ import annotations

from apps import ids
from apps.compiler import Compiler, desired_from_scratch
from flows.actions import Meter
from flows.flow import Flow, MeterEntry
from tests.test_apps_l2 import World
from topology import ops
from topology.records import Network, Port, Subnet

BCAST = "ff:ff:ff:ff:ff:ff"


def world() -> World:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    # a network whose subnet has DHCP off
    w.apply(ops.create_network(w.topo, Network(id="s", tenant="alice"), w.rev + 1, 0.0))
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(id="s-sub", tenant="alice", network_id="s", cidr="10.9.0.0/24", enable_dhcp=False),
            False,
            w.rev + 1,
            0.0,
        )
    )
    w.port("a1", "a", "hv1", "10.0.0.5")
    w.port("a2", "a", "hv2", "10.0.0.6")
    w.port("s1", "s", "hv1", "10.9.0.5")
    return w


def discover(port: Port, mac: str | None = None, **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {
        "eth_src": mac or port.mac,
        "eth_dst": BCAST,
        "eth_type": 0x0800,
        "ipv4_src": "0.0.0.0",
        "ipv4_dst": "255.255.255.255",
        "ip_proto": 17,
        "udp_src": 68,
        "udp_dst": 67,
        **extra,
    }


def test_discover_from_the_ports_mac_goes_to_the_controller_through_its_meter() -> None:
    w = world()
    a1 = w.topo.ports["a1"]
    res = w.switch("hv1").walk({"in_port": w.ofport(a1), **discover(a1)})
    assert res.ports == ["CONTROLLER"], res.format()
    flow = next(s.flow for s in res.steps if s.stage == "dhcp")
    assert flow is not None and Meter(ids.dhcp_meter(a1.key)) in flow.actions
    assert flow.owner is not None and flow.owner.app == ids.DHCP
    items = desired_from_scratch(w.topo, w.runtime, "hv1")
    assert MeterEntry(ids.dhcp_meter(a1.key), 10, 10) in items
    # the meter id stays clear of the packet-in meter and inside what OVS's userspace datapath holds
    assert ids.PACKET_IN_METER < ids.dhcp_meter(1) <= ids.dhcp_meter(0xFFFF) < 262144


def test_meter_rate_is_the_compilers_option() -> None:
    w = world()
    comp = Compiler(dhcp_rate_pps=3)
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    meters = {i for i in comp.desired("hv1") if isinstance(i, MeterEntry)}
    assert meters == {MeterEntry(ids.dhcp_meter(w.topo.ports["a1"].key), 3, 3)}


def test_wrong_mac_and_no_dhcp_subnet_are_dropped() -> None:
    w = world()
    a1 = w.topo.ports["a1"]
    s1 = w.topo.ports["s1"]
    # port security off, so only the dhcp stage decides about a foreign MAC
    w.apply(
        ops.update_port(w.topo, a1, {"port_security_enabled": False, "security_groups": ()}, w.rev + 1, 0.0)
    )
    a1 = w.topo.ports["a1"]
    sw = w.switch("hv1")
    res = sw.walk({"in_port": w.ofport(a1), **discover(a1, mac="02:00:00:00:99:99")})
    assert res.dropped and res.dropped_at == "dhcp", res.format()
    res = sw.walk({"in_port": w.ofport(s1), **discover(s1)})
    assert res.dropped and res.dropped_at == "dhcp", res.format()
    # neither gets a meter; only a1 (own MAC) has one
    meters = {i.meter_id for i in desired_from_scratch(w.topo, w.runtime, "hv1") if isinstance(i, MeterEntry)}
    assert meters == {ids.dhcp_meter(a1.key)}


def test_only_ports_plugged_here_get_flows_and_meters() -> None:
    w = world()
    a2 = w.topo.ports["a2"]

    # meters are per switch, numbered by zone (unique per chassis, so a2's number may be a1's): hv1 has
    # the meters of the ports bound to it only, hv2 a2's
    def meters(ch: str) -> set[int]:
        return {i.meter_id for i in desired_from_scratch(w.topo, w.runtime, ch) if isinstance(i, MeterEntry)}

    def bound(ch: str) -> set[int]:
        return {
            ids.dhcp_meter(p.key) for p in w.topo.ports.values() if p.binding_chassis == ch and p.key & 0xFFFF
        }

    assert meters("hv1") <= bound("hv1")
    assert ids.dhcp_meter(a2.key) in meters("hv2")
    res = w.switch("hv2").walk({"in_port": w.ofport(a2), **discover(a2)})
    assert res.ports == ["CONTROLLER"], res.format()


def test_other_traffic_passes() -> None:
    w = world()
    # no security groups in the way (they are tested elsewhere)
    w.apply(
        ops.update_port(
            w.topo,
            w.topo.ports["a1"],
            {"port_security_enabled": False, "security_groups": ()},
            w.rev + 1,
            0.0,
        )
    )
    a1 = w.topo.ports["a1"]
    # DNS to a broadcast address, from the port's own address: flooded, not sent to the controller
    res = w.switch("hv1").walk(
        {
            "in_port": w.ofport(a1),
            "eth_src": a1.mac,
            "eth_dst": BCAST,
            "eth_type": 0x0800,
            "ipv4_src": "10.0.0.5",
            "ipv4_dst": "10.0.0.255",
            "ip_proto": 17,
            "udp_src": 5353,
            "udp_dst": 53,
        }
    )
    assert "dhcp" in res.stages() and "CONTROLLER" not in res.ports and not res.dropped, res.format()


def test_subnet_updates_recompile_the_networks_ports() -> None:
    w = world()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    a1 = w.topo.ports["a1"]
    s1 = w.topo.ports["s1"]

    def dhcp_items(ch: str) -> set[object]:
        return {
            i
            for i in comp.desired(ch)
            if isinstance(i, MeterEntry)
            or isinstance(i, Flow)
            and i.stage == "dhcp"
            and i.owner is not None
            and i.owner.app == ids.DHCP
        }

    def step(changes) -> None:  # type: ignore[no-untyped-def]
        comp.on_changes(w.topo, changes)
        for ch in ("hv1", "hv2"):
            assert comp.desired(ch) == desired_from_scratch(w.topo, w.runtime, ch), ch

    assert ids.dhcp_meter(a1.key) in {i.meter_id for i in dhcp_items("hv1") if isinstance(i, MeterEntry)}
    step(w.apply(ops.update_subnet(w.topo, w.topo.subnets["a-sub"], {"enable_dhcp": False}, w.rev + 1, 0.0)))
    assert ids.dhcp_meter(a1.key) not in {i.meter_id for i in dhcp_items("hv1") if isinstance(i, MeterEntry)}
    step(w.apply(ops.update_subnet(w.topo, w.topo.subnets["s-sub"], {"enable_dhcp": True}, w.rev + 1, 0.0)))
    assert ids.dhcp_meter(s1.key) in {i.meter_id for i in dhcp_items("hv1") if isinstance(i, MeterEntry)}
    step(
        w.apply(
            ops.update_subnet(w.topo, w.topo.subnets["s-sub"], {"dns_servers": ("10.9.0.2",)}, w.rev + 1, 0.0)
        )
    )
    # the port leaves: its flow and meter go
    step(w.apply(ops.delete_port(w.topo, w.topo.ports["s1"])))
    assert not {i for i in dhcp_items("hv1") if isinstance(i, MeterEntry)}
