"""The QoS plug-in's compile, by behaviour (which meter a packet passes, which DSCP it leaves with: walked
through the compiled tables), its API checks, and the plug-in loader's refusals."""

from __future__ import annotations

import dataclasses

import pytest

from apps import plugin
from apps.compiler import Compiler, desired_from_scratch
from controller import plugins
from flows import pipeline
from flows.flow import MeterEntry
from sdn_qos import compile as qc
from sdn_qos import ops as qops
from sdn_qos.plugin import PLUGIN
from sdn_qos.records import QosBinding, QosPolicy, QosRule
from tests.test_apps_l2 import World
from topology import records
from topology.errors import ApiError

pytestmark = pytest.mark.usefixtures("qos_plugin")


def ipv4(src_mac: str, dst_mac: str, src: str, dst: str) -> dict[str, object]:
    return {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": src, "ipv4_dst": dst,
            "ip_proto": 17, "udp_src": 1000, "udp_dst": 2000}  # fmt: skip


def world() -> World:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.network("a", "alice", "10.0.0.0/24")
    w.port("vm", "a", "hv1", "10.0.0.5")
    w.port("peer", "a", "hv1", "10.0.0.6")
    w.apply(qops.create_policy(w.topo, QosPolicy(id="gold", tenant="alice"), w.rev + 1, 0.0))
    return w


def rule(w: World, ident: str, **kw: object) -> None:
    w.apply(
        qops.create_rule(w.topo, QosRule(id=ident, tenant="alice", policy_id="gold", **kw), w.rev + 1, 0.0)
    )


def send(w: World, src: str, dst: str):  # type: ignore[no-untyped-def]
    a, b = w.topo.ports[src], w.topo.ports[dst]
    pkt = ipv4(a.mac, b.mac, a.fixed_ips[0][1], b.fixed_ips[0][1])
    return w.switch("hv1").walk({"in_port": w.ofport(a), **pkt})


def test_without_a_policy_packets_pass_the_hooks_unmetered_and_unmarked() -> None:
    w = world()
    res = send(w, "vm", "peer")
    assert res.ports == [w.ofport(w.topo.ports["peer"])], res.format()
    assert res.meters == [] and res.outputs[0].headers.get("ip_dscp", 0) == 0
    assert "qos_egress" in res.stages() and "qos_ingress" in res.stages()


def test_port_policy_meters_egress_marks_dscp_and_meters_ingress_of_that_port_only() -> None:
    w = world()
    rule(w, "bw-out", type="bandwidth_limit", direction="egress", max_kbps=20000, max_burst_kbps=6000)
    rule(w, "bw-in", type="bandwidth_limit", direction="ingress", max_kbps=10000)
    rule(w, "mark", type="dscp_marking", dscp_mark=26)
    w.apply(
        qops.create_binding(
            w.topo, QosBinding(id="b", tenant="alice", policy_id="gold", port_id="vm"), w.rev + 1, 0.0
        )
    )
    vm, peer = w.topo.ports["vm"], w.topo.ports["peer"]
    out = send(w, "vm", "peer")
    assert out.ports == [w.ofport(peer)], out.format()
    assert out.meters == [qc.meter_id(vm.key, "egress")]
    assert out.outputs[0].headers["ip_dscp"] == 26
    back = send(w, "peer", "vm")
    assert back.ports == [w.ofport(vm)] and back.meters == [qc.meter_id(vm.key, "ingress")]
    assert back.outputs[0].headers.get("ip_dscp", 0) == 0  # the peer has no policy: not marked
    meters = {m for m in desired_from_scratch(w.topo, w.runtime, "hv1") if isinstance(m, MeterEntry)}
    assert MeterEntry(qc.meter_id(vm.key, "egress"), 20000, 6000, kbps=True) in meters
    assert MeterEntry(qc.meter_id(vm.key, "ingress"), 10000, 8000, kbps=True) in meters  # burst: 80%


def test_network_policy_applies_to_its_ports_and_the_port_binding_wins() -> None:
    w = world()
    rule(w, "mark", type="dscp_marking", dscp_mark=10)
    w.apply(qops.create_policy(w.topo, QosPolicy(id="none", tenant="alice"), w.rev + 1, 0.0))
    w.apply(
        qops.create_binding(
            w.topo, QosBinding(id="n", tenant="alice", policy_id="gold", network_id="a"), w.rev + 1, 0.0
        )
    )
    assert send(w, "vm", "peer").outputs[0].headers["ip_dscp"] == 10
    w.apply(
        qops.create_binding(
            w.topo, QosBinding(id="p", tenant="alice", policy_id="none", port_id="vm"), w.rev + 1, 0.0
        )
    )
    assert send(w, "vm", "peer").outputs[0].headers.get("ip_dscp", 0) == 0
    assert send(w, "peer", "vm").outputs[0].headers["ip_dscp"] == 10


def test_incremental_compile_equals_full_through_qos_changes() -> None:
    w = world()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    steps = [
        qops.create_rule(w.topo, QosRule(id="r", tenant="alice", policy_id="gold", type="bandwidth_limit", max_kbps=5000), w.rev + 1, 0.0),
        qops.create_binding(w.topo, QosBinding(id="b", tenant="alice", policy_id="gold", network_id="a"), w.rev + 2, 0.0),
    ]  # fmt: skip
    for changes in steps:
        w.apply(changes)
        comp.on_changes(w.topo, changes)
        assert comp.desired("hv1") == desired_from_scratch(w.topo, w.runtime, "hv1")
    changes = qops.delete_binding(w.topo.table("qos_binding")["b"])
    w.apply(changes)
    comp.on_changes(w.topo, changes)
    assert comp.desired("hv1") == desired_from_scratch(w.topo, w.runtime, "hv1")
    assert not any(isinstance(i, MeterEntry) and i.kbps for i in comp.desired("hv1"))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"type": "bandwidth_limit", "max_kbps": 0}, "max_kbps"),
        ({"type": "bandwidth_limit", "max_kbps": 100, "direction": "sideways"}, "direction"),
        ({"type": "dscp_marking", "dscp_mark": 7}, "dscp_mark"),
        ({"type": "shaping"}, "type"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(kw: dict[str, object], field: str) -> None:
    w = world()
    with pytest.raises(ApiError) as e:
        rule(w, "bad", **kw)
    assert e.value.code == "INVALID_ARGUMENT" and e.value.violations[0][0] == field


def test_a_second_rule_of_a_type_per_direction_is_refused_as_neutron_does() -> None:
    w = world()
    rule(w, "one", type="bandwidth_limit", direction="egress", max_kbps=100)
    rule(w, "other-way", type="bandwidth_limit", direction="ingress", max_kbps=100)
    with pytest.raises(ApiError) as e:
        rule(w, "two", type="bandwidth_limit", direction="egress", max_kbps=200)
    assert e.value.code == "INVALID_ARGUMENT" and e.value.violations[0][0] == "direction"


def test_uninstall_leaves_the_core_pipeline_and_kinds_as_before() -> None:
    stages = [s.name for s in pipeline.all_stages()]
    assert "qos_egress" in stages and "qos_policy" in records.RECORD_TYPES
    plugins.uninstall(PLUGIN)
    try:
        assert pipeline.hook_next("plugin_from_port") == "acl_egress"
        assert pipeline.hook_next("plugin_to_port") == "output"
        assert [s.name for s in pipeline.all_stages()] == [s for s in stages if not s.startswith("qos_")]
        assert set(records.RECORD_TYPES) == records.CORE_KINDS and not plugin.is_plugin_unit(qc.UNIT)
        w = World()
        w.chassis("hv1", "192.0.2.1")
        w.network("a", "alice", "10.0.0.0/24")
        w.port("vm", "a", "hv1", "10.0.0.5")
        w.port("peer", "a", "hv1", "10.0.0.6")
        res = send(w, "vm", "peer")
        assert res.ports == [w.ofport(w.topo.ports["peer"])] and "qos_egress" not in res.stages()
    finally:
        assert plugins.install([PLUGIN]).loaded == [PLUGIN]


def test_loader_refuses_another_interface_version_and_foreign_flows() -> None:
    bad = dataclasses.replace(PLUGIN, name="qos-v2", api_version=plugin.PLUGIN_API + 1)
    report = plugins.install([bad])
    assert "qos-v2" in report.refused and "interface" in report.refused["qos-v2"]
    assert "qos-v2" not in {p.name for p in plugin.loaded()}
    clash = dataclasses.replace(PLUGIN, name="other", units=())
    assert "app id" in plugins.install([clash]).refused["other"]
