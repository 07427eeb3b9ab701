"""Metrics: the exposition parses and has the families with their types; API counters move with calls;
per-owner flow counters roll up monotonically; the Grafana dashboard only asks for metrics we export.

The end-to-end test (lab) scrapes a real controller's endpoint: both chassis connected, flows desired ==
installed, and a VM port's per-owner packet counter moves with real pings.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps import ids
from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from controller.dataplane import ChassisPlane
from controller.debug.metrics import Metrics
from controller.southbound.sync import SyncStats
from flows import actions as A
from flows import pipeline as P
from flows.flow import Bucket, Flow, Group
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ROOT
from topology.state import State

DASHBOARD = ROOT / "dashboards" / "grafana-sdn.json"

#: family (as the parser names it: counters without _total) -> type
FAMILIES = {
    "sdn_chassis_openflow_connected": "gauge",
    "sdn_chassis_ovsdb_ready": "gauge",
    "sdn_flows_desired": "gauge",
    "sdn_flows_installed": "gauge",
    "sdn_groups_desired": "gauge",
    "sdn_groups_installed": "gauge",
    "sdn_flow_mods_sent": "counter",
    "sdn_group_mods_sent": "counter",
    "sdn_meter_mods_sent": "counter",
    "sdn_bundles_sent": "counter",
    "sdn_bundles_failed": "counter",
    "sdn_resyncs": "counter",
    "sdn_openflow_errors": "counter",
    "sdn_bundle_duration_seconds": "histogram",
    "sdn_bundle_messages": "histogram",
    "sdn_packet_ins": "counter",
    "sdn_api_requests": "counter",
    "sdn_api_request_duration_seconds": "histogram",
    "sdn_api_streams_started": "counter",
    "sdn_api_streams_open": "gauge",
    "sdn_store_revision": "gauge",
    "sdn_store_commit_duration_seconds": "histogram",
    "sdn_store_commit_writes": "histogram",
    "sdn_store_txn_conflicts": "counter",
    "sdn_store_txn_retried_writes": "counter",
    "sdn_store_txn_aborted": "counter",
    "sdn_store_size_bytes": "gauge",
    "sdn_store_compacted_revision": "gauge",
    "sdn_store_compacted_changes": "counter",
    "sdn_chassis_realized_revision": "gauge",
    "sdn_chassis_realized_revision_lag": "gauge",
    "sdn_drift_repairs": "counter",
    "sdn_southbound_rejected": "counter",
    "sdn_flow_packets": "counter",
    "sdn_flow_bytes": "counter",
}


def port_flow(port: str, ofport: int) -> Flow:
    return Flow(
        "classify", P.MATCH, {"in_port": ofport}, [A.Goto("port_sec_in")], ids.cookie(ids.CLASSIFY, port)
    )


class FakeEngine:
    """What the metrics read from a SwitchSync."""

    def __init__(self, items: frozenset[Any], stats: dict[Flow, tuple[int, int]]) -> None:
        self.connected = True
        self.realized_revision = 1
        self.stats = SyncStats(flow_mods_sent=7, group_mods_sent=1, bundles_sent=2, resyncs=1)
        self._items = items
        self.counters = stats

    def installed(self) -> frozenset[Any]:
        return self._items

    def flow_stats(self, timeout: float = 0) -> dict[Flow, tuple[int, int]]:
        return dict(self.counters)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """Metrics over a real State and a dataplane with one chassis whose engine is a fake."""
    state = State(tmp_path / "topology.sqlite")
    group = Group(10, "all", [Bucket([A.Output(1)])])
    items = frozenset([port_flow("vm1", 1), port_flow("vm2", 2), group])
    eng = FakeEngine(items, {port_flow("vm1", 1): (5, 500), port_flow("vm2", 2): (1, 100)})
    plane = ChassisPlane(
        "hv1",
        1,
        engine=eng,
        runtime=object(),  # type: ignore[arg-type]
        seq=1,
        history=[(0, 1)],
    )
    plane.drift_repairs = 3  # type: ignore[attr-defined]
    dataplane = SimpleNamespace(
        planes={"hv1": plane},
        compiler=SimpleNamespace(
            desired=lambda _c: items,
            units={"hv1": {("port", "vm1"): frozenset(), ("port", "vm2"): frozenset()}},
        ),
    )
    metrics = Metrics(
        state,
        dataplane,
        lambda: {(1, "action"): 4},
        southbound_rejected=lambda: {"tls_handshake": 2, "wrong_datapath_id": 0},
    )
    try:
        yield SimpleNamespace(metrics=metrics, state=state, engine=eng)
    finally:
        state.close()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    """One sample's value; `name` is the sample name (e.g. sdn_api_requests_total)."""
    for fam in fams.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(f"{name}{labels} not exported")


def test_exposition_parses_with_every_family_and_type(fake: SimpleNamespace) -> None:
    m: Metrics = fake.metrics
    m.observe_bundle(1, 0.004, 12, True)
    m.observe_commit(0.002, 1)
    m.flow_counters.collect_once()
    fams = families(m.exposition().decode())
    for name, kind in FAMILIES.items():
        assert name in fams, f"{name} missing"
        assert fams[name].type == kind, f"{name}: {fams[name].type} != {kind}"
    assert sample(fams, "sdn_chassis_openflow_connected", chassis="hv1") == 1
    assert sample(fams, "sdn_flows_desired", chassis="hv1") == 2
    assert sample(fams, "sdn_flows_installed", chassis="hv1") == 2
    assert sample(fams, "sdn_groups_installed", chassis="hv1") == 1
    assert sample(fams, "sdn_flow_mods_sent_total", chassis="hv1") == 7
    assert sample(fams, "sdn_drift_repairs_total", chassis="hv1") == 3
    assert sample(fams, "sdn_packet_ins_total", chassis="hv1", reason="action") == 4
    assert sample(fams, "sdn_southbound_rejected_total", reason="tls_handshake") == 2
    assert sample(fams, "sdn_bundle_duration_seconds_count", chassis="hv1") == 1
    assert sample(fams, "sdn_bundle_messages_sum", chassis="hv1") == 12
    assert sample(fams, "sdn_store_commit_duration_seconds_count") == 1
    assert sample(fams, "sdn_chassis_realized_revision_lag", chassis="hv1") == 0
    assert sample(fams, "sdn_flow_packets_total", chassis="hv1", app="classify", owner="vm1") == 5
    assert sample(fams, "sdn_flow_bytes_total", chassis="hv1", app="classify", owner="vm2") == 100


def test_flow_counters_stay_monotonic_across_flow_churn(fake: SimpleNamespace) -> None:
    m: Metrics = fake.metrics
    fc, eng = m.flow_counters, fake.engine
    fc.collect_once()
    assert fc.totals()[("hv1", "classify", "vm1")] == (5, 500)
    eng.counters[port_flow("vm1", 1)] = (8, 800)
    fc.collect_once()
    assert fc.totals()[("hv1", "classify", "vm1")] == (8, 800)
    eng.counters[port_flow("vm1", 1)] = (2, 200)  # re-added: its counters restarted
    fc.collect_once()
    assert fc.totals()[("hv1", "classify", "vm1")] == (10, 1000)
    del eng.counters[port_flow("vm2", 2)]  # vm2 has no flows anymore: its series ends
    fc.collect_once()
    assert ("hv1", "classify", "vm2") not in fc.totals()
    eng.counters[port_flow("vm3", 3)] = (1, 64)  # an owner the model does not know: its hash
    fc.collect_once()
    vm3 = port_flow("vm3", 3).owner
    assert vm3 is not None and any(k[2] == f"{vm3.owner:08x}" for k in fc.totals())
    eng.counters[port_flow("vm1", 1)] = (0, 0)
    del eng.counters[port_flow("vm3", 3)]
    fc.collect_once()  # an owner whose flows matched nothing yet has no series
    fams = families(m.exposition().decode())
    assert {s.labels["owner"] for s in fams["sdn_flow_packets"].samples} == {"vm1"}


def test_flow_counters_skip_the_dump_while_the_switch_fingerprint_stays(fake: SimpleNamespace) -> None:
    """A switch whose activity fingerprint (aggregate counters, flow count, our bundles) is the one of its
    last dump is not dumped again; any move of it, or of the store revision (owner names), dumps it."""
    m: Metrics = fake.metrics
    fc, eng = m.flow_counters, fake.engine
    dumps: list[int] = []
    fingerprint = [(6, 600, 2, 2, 1, 1)]
    eng.activity = lambda timeout=0: fingerprint[0]
    plain = eng.flow_stats
    eng.flow_stats = lambda timeout=0: (dumps.append(1), plain())[1]
    fc.collect_once()
    fc.collect_once()
    assert len(dumps) == 1 and (fc.dumps, fc.skipped) == (1, 1)
    assert fc.totals()[("hv1", "classify", "vm1")] == (5, 500)
    eng.counters[port_flow("vm1", 1)] = (9, 900)
    fingerprint[0] = (10, 1000, 2, 2, 1, 1)  # the packets moved
    fc.collect_once()
    assert len(dumps) == 2 and fc.totals()[("hv1", "classify", "vm1")] == (9, 900)
    fc.collect_once()
    assert len(dumps) == 2
    from topology import ops
    from topology.records import Chassis

    fake.state.write(lambda t, rev, now: ops.create_chassis(t, Chassis("hv9", 9, "192.0.2.9"), rev, now))
    fc.collect_once()  # the store moved: owner names may have changed
    assert len(dumps) == 3
    eng.activity = lambda timeout=0: (_ for _ in ()).throw(RuntimeError("switch gone"))
    fc.collect_once()  # no fingerprint: no dump either (the switch is away); the next one dumps
    fingerprint[0] = (10, 1000, 2, 2, 1, 1)
    eng.activity = lambda timeout=0: fingerprint[0]
    n = len(dumps)
    fc.collect_once()
    assert len(dumps) == n + 1


def test_packet_ins_are_counted_by_named_reason() -> None:
    from os_ken.ofproto import ofproto_v1_3 as ofp

    from controller.southbound.ofapp import OFApp

    app = SimpleNamespace(
        packet_ins={},
        packet_ins_by_reason={},
        packet_in_handler=None,
        _current=lambda dp: True,
        is_master=lambda dpid: True,
    )
    for reason in (ofp.OFPR_NO_MATCH, ofp.OFPR_ACTION, ofp.OFPR_ACTION, ofp.OFPR_INVALID_TTL, 9):
        msg = SimpleNamespace(datapath=SimpleNamespace(id=1), reason=reason)
        OFApp.on_packet_in(app, SimpleNamespace(msg=msg))
    assert app.packet_ins == {1: 5}
    assert app.packet_ins_by_reason == {
        (1, "no_match"): 1,
        (1, "action"): 2,
        (1, "invalid_ttl"): 1,
        (1, "9"): 1,
    }


def test_store_commits_are_timed(fake: SimpleNamespace) -> None:
    m: Metrics = fake.metrics
    m.start()  # installs the store hook; no HTTP, no poller
    from topology import ops
    from topology.records import Chassis

    fake.state.write(lambda t, rev, now: ops.create_chassis(t, Chassis("hv9", 9, "192.0.2.9"), rev, now))
    fams = families(m.exposition().decode())
    assert sample(fams, "sdn_store_commit_duration_seconds_count") == 1
    assert sample(fams, "sdn_store_revision") == fake.state.revision == 1


def test_http_endpoint_serves_the_registry_and_stops(fake: SimpleNamespace) -> None:
    m: Metrics = fake.metrics
    port = m.start("127.0.0.1:0")
    try:
        fams = scrape(port)
        assert fams["sdn_chassis_openflow_connected"].type == "gauge"
        assert "process_cpu_seconds" in fams
    finally:
        m.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


# --- API ----------------------------------------------------------------------------------------------------


@pytest.fixture
def api_with_metrics(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """An in-process ApiServer (as tests/conftest.py's `server`) with the metrics interceptor."""
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    metrics = Metrics(state)
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=8, interceptors=[metrics.interceptor()])
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        yield SimpleNamespace(
            metrics=metrics,
            stub=pb_grpc.TopologyServiceStub(channel),
            admin=(("authorization", f"Bearer {tokens.admin_token()}"),),
        )
    finally:
        channel.close()
        srv.stop(0)
        state.close()


def test_api_counters_move_with_calls(api_with_metrics: SimpleNamespace) -> None:
    env = api_with_metrics
    reg = env.metrics.registry
    svc = "sdn.v1.TopologyService"

    def requests(method: str, code: str) -> float:
        labels = {"service": svc, "method": method, "code": code}
        return reg.get_sample_value("sdn_api_requests_total", labels) or 0

    env.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="n1"), metadata=env.admin)
    env.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="n2"), metadata=env.admin)
    with pytest.raises(grpc.RpcError) as err:
        env.stub.GetNetwork(pb.GetNetworkRequest(name="networks/nope"), metadata=env.admin)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):
        env.stub.GetNetwork(
            pb.GetNetworkRequest(name="networks/n1"), metadata=(("authorization", "Bearer wrong"),)
        )
    assert requests("CreateNetwork", "OK") == 2
    assert requests("GetNetwork", "NOT_FOUND") == 1
    assert requests("GetNetwork", "UNAUTHENTICATED") == 1
    assert (
        reg.get_sample_value(
            "sdn_api_request_duration_seconds_count", {"service": svc, "method": "CreateNetwork"}
        )
        == 2
    )

    # a Watch stream: counted when it starts, open while it runs, counted again (CANCELLED) when it ends
    stream = env.stub.Watch(pb.WatchRequest(), metadata=env.admin)
    first = next(stream)
    assert first.type == pb.WatchEvent.EXISTING
    labels = {"service": svc, "method": "Watch"}
    assert reg.get_sample_value("sdn_api_streams_started_total", labels) == 1
    assert reg.get_sample_value("sdn_api_streams_open", labels) == 1
    stream.cancel()
    deadline = time.monotonic() + 10
    while reg.get_sample_value("sdn_api_streams_open", labels) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reg.get_sample_value("sdn_api_streams_open", labels) == 0
    assert requests("Watch", "CANCELLED") == 1
    fams = families(env.metrics.exposition().decode())
    assert fams["sdn_api_requests"].type == "counter"
    assert fams["sdn_api_request_duration_seconds"].type == "histogram"


# --- Grafana dashboard --------------------------------------------------------------------------------------


def exported_names(fams: dict[str, Any]) -> set[str]:
    """Every series name the families can produce."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    out = set()
    for name, fam in fams.items():
        out.update(name + s for s in suffixes.get(fam.type, ("",)))
        out.update(s.name for s in fam.samples)
    return out


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def test_grafana_dashboard_uses_only_exported_metrics(fake: SimpleNamespace) -> None:
    dash = json.loads(DASHBOARD.read_text())
    names = exported_names(families(fake.metrics.exposition().decode()))
    exprs = [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]
    assert len(exprs) >= 10
    for title, expr in exprs:
        used = set(re.findall(r"\b((?:sdn|process)_[a-z0-9_]+)", expr))
        assert used, f"panel {title!r}: no metric in {expr!r}"
        assert used <= names, f"panel {title!r} asks for {used - names}, not exported"
    titles = " ".join(p["title"].lower() for p in panels(dash))
    for topic in ("connect", "desired", "flow-mod", "bundle latency", "api", "lag", "drift", "owner"):
        assert topic in titles, f"no panel about {topic}"


# --- end to end ---------------------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return families(resp.read().decode())


def owner_packets(fams: dict[str, Any], chassis: str, owner: str, app: str) -> float:
    return sum(
        s.value
        for s in fams["sdn_flow_packets"].samples
        if s.name == "sdn_flow_packets_total"
        and s.labels["chassis"] == chassis
        and s.labels["owner"] == owner
        and s.labels["app"] == app
    )


@pytest.mark.lab
def test_metrics_endpoint_end_to_end(tmp_path: Path) -> None:
    from tests.e2e import lab_env

    with lab_env(tmp_path, provider=False, extra_args=["--stats-interval-s", "1"]) as env:
        port = env.controller.metrics_port
        md = env.md("metrics")
        net = env.network(md, "m-net", "10.61.0.0/24")
        a = env.plug("hv1", env.port(md, "m-a", net))
        b = env.plug("hv2", env.port(md, "m-b", net))
        env.wait_realized()

        deadline = time.monotonic() + 10
        while True:  # installed catches up with desired once the last bundle is confirmed
            fams = scrape(port)
            pairs = {
                c: tuple(
                    sample(fams, name, chassis=c)
                    for name in (
                        "sdn_flows_desired",
                        "sdn_flows_installed",
                        "sdn_groups_desired",
                        "sdn_groups_installed",
                    )
                )
                for c in ("hv1", "hv2")
            }
            if all(p[0] == p[1] and p[2] == p[3] for p in pairs.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for c, (fd, fi, gd, gi) in pairs.items():
            assert sample(fams, "sdn_chassis_openflow_connected", chassis=c) == 1
            assert sample(fams, "sdn_chassis_ovsdb_ready", chassis=c) == 1
            assert fd == fi > 0 and gd == gi, f"{c}: desired {fd}/{gd} vs installed {fi}/{gi}"
            assert sample(fams, "sdn_chassis_realized_revision_lag", chassis=c) == 0
            assert sample(fams, "sdn_bundle_duration_seconds_count", chassis=c) >= 1
            assert sample(fams, "sdn_flow_mods_sent_total", chassis=c) >= fd
        assert sample(fams, "sdn_api_requests_total", method="CreatePort", code="OK") == 2
        assert sample(fams, "sdn_store_commit_duration_seconds_count") >= 1
        assert sample(fams, "sdn_store_revision") >= 5

        # per-owner packet counters of VM port m-a on hv1 move with real pings: every packet the VM sends
        # enters through its classify flow (owner m-a), so that one counts at least the 5 echo requests
        def flow_bytes(fams: dict[str, Any]) -> float:
            try:
                return sample(fams, "sdn_flow_bytes_total", chassis="hv1", app="classify", owner="m-a")
            except KeyError:  # (no sample before the flow has counted anything)
                return 0.0

        before = owner_packets(fams, "hv1", "m-a", "classify"), owner_packets(fams, "hv2", "m-b", "classify")
        bytes_before = flow_bytes(fams)
        assert a.ping(b.ip, count=5, interval=0.1)
        deadline = time.monotonic() + 8
        after, bytes_after = before, bytes_before
        while time.monotonic() < deadline:
            fams = scrape(port)
            after = (
                owner_packets(fams, "hv1", "m-a", "classify"),
                owner_packets(fams, "hv2", "m-b", "classify"),
            )
            bytes_after = flow_bytes(fams)
            # (the counters are collected every stats interval: packets and bytes may arrive in two scrapes,
            # and the packets may include an ARP exchange before the echo requests)
            if (
                after[0] >= before[0] + 5
                and after[1] >= before[1] + 5
                and bytes_after >= bytes_before + 5 * 84
            ):
                break
            time.sleep(0.5)
        # requests entered at m-a on hv1, replies at m-b on hv2
        assert after[0] >= before[0] + 5 and after[1] >= before[1] + 5, f"classify: {before} -> {after}"
        assert bytes_after >= bytes_before + 5 * 84, f"classify bytes: {bytes_before} -> {bytes_after}"

        # drift: flows deleted behind the controller's back and repaired show in the drift and resync counters
        from flows.pipeline import table_of
        from proto.sdn.v1 import dataplane_pb2 as dpb

        hv1 = env.chassis("hv1")
        table = table_of("l2_lookup")
        deleted = sum(1 for ln in hv1.dump_flows() if f"table={table}," in ln)
        assert deleted
        resyncs = sample(fams, "sdn_resyncs_total", chassis="hv1")
        hv1.ofctl("del-flows", "br-int", f"table={table}")
        verify = dpb.VerifyRequest(chassis="chassis/hv1", repair=True)
        fixed = env.dp.Verify(verify, metadata=env.admin).chassis[0]
        assert fixed.repaired
        deadline = time.monotonic() + 10
        while True:
            fams = scrape(port)
            if sample(fams, "sdn_resyncs_total", chassis="hv1") > resyncs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sample(fams, "sdn_drift_repairs_total", chassis="hv1") >= deleted
        assert sample(fams, "sdn_drift_repairs_total", chassis="hv2") == 0
        assert sample(fams, "sdn_resyncs_total", chassis="hv1") > resyncs
        assert sample(fams, "sdn_api_requests_total", method="Verify", code="OK") == 1


def test_flow_counters_wait_for_the_switchs_first_reconcile(fake: SimpleNamespace) -> None:
    """A switch whose engine has realized nothing yet (its first reconcile under way, as at the start) is not
    dumped; once realized, its counters are folded as they stand (nothing lost: they are cumulative)."""
    m: Metrics = fake.metrics
    fc, eng = m.flow_counters, fake.engine
    eng.realized_revision = 0
    fc.collect_once()
    assert (fc.dumps, fc.totals()) == (0, {})
    eng.realized_revision = 1
    fc.collect_once()
    assert fc.dumps == 1 and fc.totals()[("hv1", "classify", "vm1")] == (5, 500)
