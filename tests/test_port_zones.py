"""Port keys and per-chassis conntrack zones (topology/portkeys.py): more than 65,535 ports, zones unique only
where they are used, keys kept where they still fit, shared zones for gateways and VIPs, and the flows
using the zone (security-group tracking, DHCP meters) right with keys above 16 bits."""

from __future__ import annotations

import time

import pytest

from apps import ids
from apps.compiler import desired_from_scratch
from flows.flow import MeterEntry
from tests.test_any_order import check_zones
from tests.test_apps_l2 import World
from tests.test_apps_nat import gw_port, nat_world
from topology import binding, ops, portkeys
from topology.errors import ApiError
from topology.model import Topology
from topology.records import Chassis, Network, Port


def _apply(topo: Topology, changes: list) -> None:  # type: ignore[type-arg]
    topo.apply(changes, topo.revision + 1)


def _topo(chassis: int) -> Topology:
    topo = Topology()
    for i in range(chassis):
        _apply(
            topo, ops.create_chassis(topo, Chassis(id=f"hv{i}", datapath_id=i + 1), topo.revision + 1, 0.0)
        )
    _apply(topo, ops.create_network(topo, Network(id="n", tenant="t"), topo.revision + 1, 0.0))
    return topo


def _create(topo: Topology, pid: str, chassis: str = "") -> Port:
    rev = topo.revision + 1
    port = Port(
        id=pid, tenant="t", network_id="n", mac="", binding_chassis=chassis, port_security_enabled=False
    )
    topo.apply(ops.create_port(topo, port, (), rev, 0.0), rev)
    return topo.ports[pid]


def test_more_ports_than_16_bit_zones() -> None:
    """66,100 ports (65,535 was the limit when a port's key was its zone) over 2 chassis, 100 bound nowhere:
    the first 65,000 written as records with keys from the model's allocator (what create_port takes, without
    its validation, to keep the test short), the rest through ops.create_port; keys unique, zones unique
    per chassis, each chassis using 1..33,000."""
    topo = _topo(2)
    t0 = time.perf_counter()
    bulk = []
    claims = portkeys.Claims()
    for i in range(65_000):
        ch = f"hv{i % 2}"
        key = topo.zones.choose_zoned_key(ch, claims)
        assert key is not None
        claims.keys.add(key)
        claims.zones.setdefault(ch, set()).add(portkeys.zone_of(key))
        bulk.append(
            Port(
                id=f"p{i}",
                tenant="t",
                network_id="n",
                mac=f"fa:16:3e:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                binding_chassis=ch,
                key=key,
            )
        )
    _apply(topo, [("port", p.id, None, p) for p in bulk])
    for i in range(65_000, 66_000):
        _create(topo, f"p{i}", f"hv{i % 2}")
    for i in range(66_000, 66_100):
        _create(topo, f"p{i}")
    took = time.perf_counter() - t0
    assert len(topo.ports) == 66_100 > 0xFFFF
    check_zones(topo)
    assert max(p.key for p in topo.ports.values()) > 0xFFFF
    assert topo.zones.holders("hv0") == topo.zones.holders("hv1") == 33_000
    # the chassis share zone numbers (unique only per chassis)
    assert set(topo.zones.local["hv0"]) == set(topo.zones.local["hv1"]) == set(range(1, 33_001))
    assert took < 60, took  # amortized O(1) per port (cursors), not a scan of the used zones


def test_zone_kept_where_it_is_free_and_changed_where_it_is_not() -> None:
    topo = _topo(3)
    a = _create(topo, "a", "hv0")
    b = _create(topo, "b", "hv1")
    assert portkeys.zone_of(a.key) == portkeys.zone_of(b.key) == 1 and a.key != b.key
    # a's VIF moves to hv2 (zone 1 free there): same key, same zone
    _apply(topo, ops.bind_port(topo, a, "hv2", topo.revision + 1, 0.0))
    assert topo.ports["a"].key == a.key
    # ... then to hv1, where b holds zone 1: a new key, another zone
    _apply(topo, ops.bind_port(topo, topo.ports["a"], "hv1", topo.revision + 1, 0.0))
    moved = topo.ports["a"]
    assert moved.key != a.key and portkeys.zone_of(moved.key) not in (0, 1)
    # unplugged (bound nowhere): keeps its key; bound back to hv1: still free there, kept
    _apply(topo, ops.bind_port(topo, moved, "", topo.revision + 1, 0.0))
    assert topo.ports["a"].key == moved.key
    _apply(topo, ops.bind_port(topo, topo.ports["a"], "hv1", topo.revision + 1, 0.0))
    assert topo.ports["a"].key == moved.key
    check_zones(topo)


def test_port_created_before_its_vif_gets_a_zone_when_bound() -> None:
    topo = _topo(2)
    on = _create(topo, "on", "hv0")
    early = _create(topo, "early")  # no chassis yet: its key's low bits mean nothing
    assert on.key == 1 and early.key != on.key
    _apply(topo, binding.rebind(topo, {"hv0": {"early"}}, ["early"], topo.revision + 1, 0.0))
    bound = topo.ports["early"]
    assert bound.binding_chassis == "hv0" and portkeys.zone_of(bound.key) != portkeys.zone_of(on.key)
    check_zones(topo)


def test_ports_bound_in_one_write_get_distinct_zones() -> None:
    """Several VIFs reported at once bind in one write: the zones they take are claimed in it (the model has
    not applied the first when the second chooses)."""
    topo = _topo(2)
    for p in ("a", "b", "c"):
        _create(topo, p)
    changes = binding.rebind(topo, {"hv1": {"a", "b", "c"}}, ["a", "b", "c"], topo.revision + 1, 0.0)
    zones = {portkeys.zone_of(new.key) for _k, _i, _old, new in changes if isinstance(new, Port)}
    assert len(zones) == 3
    _apply(topo, changes)
    check_zones(topo)


def test_gateway_and_vip_zones_are_shared_by_every_chassis() -> None:
    w, p = nat_world()
    gw = gw_port(w)
    z = portkeys.zone_of(gw.key)
    assert portkeys.shared(gw) and z and z not in w.topo.zones.local_use
    # the router's zone is its NAT zone on the gateway chassis
    from apps import nat

    assert nat.zone(gw) == z
    # VM ports bound anywhere afterwards never take it
    for i in range(20):
        w.port(f"x{i}", "a", "hv1" if i % 2 else "hv2")
    check_zones(w.topo)
    assert all(portkeys.zone_of(q.key) != z for q in w.topo.ports.values() if portkeys.zoned_on(q))


def test_shared_zone_avoids_zones_used_on_any_chassis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portkeys, "MAX_ZONE", 4)
    topo = _topo(2)
    _create(topo, "a", "hv0")  # zone 1 on hv0
    _create(topo, "b", "hv1")  # zone 1 on hv1
    _create(topo, "c", "hv1")  # zone 2 on hv1
    key = topo.zones.choose_shared_key()
    assert key is not None and portkeys.zone_of(key) in (3, 4)
    assert topo.zones.choose_zoned_key("hv0") is not None


def test_a_full_chassis_refuses_with_the_chassis_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portkeys, "MAX_ZONE", 3)
    topo = _topo(2)
    for i in range(3):
        _create(topo, f"p{i}", "hv0")
    with pytest.raises(ApiError) as e:
        _create(topo, "one-more", "hv0")
    assert e.value.code == "RESOURCE_EXHAUSTED" and e.value.reason == "CONNTRACK_ZONES_EXHAUSTED"
    assert e.value.metadata["chassis"] == "hv0"
    _create(topo, "elsewhere", "hv1")  # the other chassis has its own zones
    _create(topo, "unbound")  # and a port bound nowhere needs none
    # a VIF for it on the full chassis: it stays unbound (logged), the write goes on for the others
    changes = binding.rebind(topo, {"hv0": {"unbound"}}, ["unbound"], topo.revision + 1, 0.0)
    assert changes == []
    check_zones(topo)


def test_legacy_keys_are_valid_zones() -> None:
    """A store written when keys were zones (< 2**16, unique in the deployment) loads as it is: each bound
    port keeps its zone (no conntrack entry orphaned by the upgrade) and new ports avoid it on its chassis."""
    topo = _topo(2)
    legacy = [
        Port(id="old1", tenant="t", network_id="n", mac="fa:16:3e:00:00:01", binding_chassis="hv0", key=1),
        Port(id="old2", tenant="t", network_id="n", mac="fa:16:3e:00:00:02", binding_chassis="hv1", key=2),
        Port(id="old3", tenant="t", network_id="n", mac="fa:16:3e:00:00:03", key=3),
    ]
    _apply(topo, [("port", p.id, None, p) for p in legacy])
    check_zones(topo)
    new = _create(topo, "new", "hv0")
    assert portkeys.zone_of(new.key) not in (0, 1) and new.key not in (1, 2, 3)
    assert topo.ports["old1"].key == 1


def test_flows_use_the_low_bits_as_zone_and_meter() -> None:
    """Two ports on two chassis with the same zone and keys above 16 bits: each chassis's DHCP meter is the
    zone's, security groups track in the zone (the shared flow copies the register's low 16 bits)."""
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    # push the keys above 16 bits: ports bound nowhere take keys 1.. first
    for i in range(3):
        w.apply(
            ops.create_port(
                w.topo, Port(id=f"filler{i}", tenant="alice", network_id="a", mac=""), (), w.rev + 1, 0.0
            )
        )
    a1 = w.port("a1", "a", "hv1", "10.0.0.5")
    a2 = w.port("a2", "a", "hv2", "10.0.0.6")
    assert portkeys.zone_of(a1.key) == portkeys.zone_of(a2.key) and a1.key != a2.key
    assert a1.key > 0xFFFF or a2.key > 0xFFFF
    for port, ch in ((a1, "hv1"), (a2, "hv2")):
        meters = {
            i.meter_id for i in desired_from_scratch(w.topo, w.runtime, ch) if isinstance(i, MeterEntry)
        }
        assert meters == {ids.dhcp_meter(port.key)} == {ids.DHCP_METER_BASE + portkeys.zone_of(port.key)}
    # a packet of a2 to a1 reaches it through both ports' zones
    res = w.switch("hv2").walk(
        {
            "in_port": w.ofport(a2),
            "eth_src": a2.mac,
            "eth_dst": a1.mac,
            "eth_type": 0x0800,
            "ipv4_src": "10.0.0.6",
            "ipv4_dst": "10.0.0.5",
            "ip_proto": 1,
        }
    )
    text = res.format()
    assert f"ct(zone={portkeys.zone_of(a2.key)}) -> ct_state=+new+trk" in text, text
    with pytest.raises(ValueError):
        ids.ct_zone(0x10000)  # low bits 0: no zone


def test_a_routers_port_is_not_bound_by_a_client() -> None:
    """A router's, floating IP's or VIP's port has no zone of a VM port (its key's low bits are a shared zone
    or none): binding it to a chassis, where a VIF could plug it, is refused with the field named."""
    w, _p = nat_world()
    gw = gw_port(w)
    with pytest.raises(ApiError) as e:
        ops.update_port(w.topo, gw, {"binding_chassis": "hv1"}, w.rev + 1, 0.0)
    assert e.value.code == "FAILED_PRECONDITION" and e.value.violations[0][0] == "binding_chassis"
