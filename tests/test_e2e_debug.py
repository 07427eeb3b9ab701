"""Debugging end to end: drift found and repaired (and nothing else touched), validate_only predicting
exactly what the real write then does to the switches."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # no periodic drift check: the tests run it on demand, so they know when it happens
    with lab_env(
        tmp_path_factory.mktemp("e2e-debug"), provider=False, extra_args=["--drift-interval-s", "0"]
    ) as e:
        md = e.md("dbg")
        net = e.network(md, "dbg-net", "10.90.0.0/24")
        e.plug("hv1", e.port(md, "dbg-a", net))
        e.plug("hv2", e.port(md, "dbg-b", net))
        e.wait_realized()
        yield e


def _cookie(line: str) -> str:
    return line.split("cookie=")[1].split(",")[0]


def _counters(lines: list[str]) -> dict[str, str]:
    """flow (without counters) -> n_packets, from `ovs-ofctl dump-flows` lines."""
    out = {}
    for line in lines:
        m = re.search(r"n_packets=(\d+)", line)
        key = ", ".join(
            p
            for p in line.strip().split(", ")
            if not p.startswith(("duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age="))
        )
        out[key] = m.group(1) if m else ""
    return out


def test_drift_is_found_and_only_the_difference_is_repaired(env: Env) -> None:
    a, b = env.vms["dbg-a"], env.vms["dbg-b"]
    assert a.ping(b.ip, count=3)
    hv1 = env.chassis("hv1")
    clean = env.dp.Verify(dpb.VerifyRequest(), metadata=env.admin)
    assert all(c.checked and not (c.missing or c.unexpected) for c in clean.chassis), clean
    before = _counters(hv1.dump_flows())
    l2 = {k for k in before if "table=60" in k}
    assert l2
    hv1.ofctl("del-flows", "br-int", "table=60")  # behind the controller's back
    hv1.ofctl("add-flow", "br-int", "table=33,priority=7,actions=drop")  # and something foreign
    assert not a.ping(b.ip, count=1, timeout=2)
    found = env.dp.Verify(dpb.VerifyRequest(chassis="chassis/hv1"), metadata=env.admin).chassis[0]
    assert found.checked and not found.repaired
    assert len(found.missing) == len(l2) and all("table=60(l2_lookup)" in ln for ln in found.missing)
    foreign = [*found.unexpected, *found.undecodable]  # table 33 is no stage of ours: undecodable
    assert len(foreign) == 1 and "table=33" in foreign[0]
    other = env.dp.Verify(dpb.VerifyRequest(chassis="chassis/hv2"), metadata=env.admin).chassis[0]
    assert other.checked and not other.missing and not other.unexpected and not other.undecodable
    mods_before = env.status()["hv1"].flow_mods_sent
    fixed = env.dp.Verify(dpb.VerifyRequest(chassis="chassis/hv1", repair=True), metadata=env.admin).chassis[
        0
    ]
    assert fixed.repaired
    deadline = time.monotonic() + 15
    while set(_counters(hv1.dump_flows())) != set(before):
        assert time.monotonic() < deadline, "repair did not restore the flows"
        time.sleep(0.1)
    st = env.status()["hv1"]
    assert st.flow_mods_sent - mods_before == len(l2) + 1  # only the difference: re-adds + one delete
    assert st.drift_repairs >= len(l2) + 1
    after = _counters(hv1.dump_flows())
    # every flow outside table 60 kept its counters: it was not touched
    for key, packets in before.items():
        if "table=60" not in key:
            assert after[key] == packets or int(after[key]) >= int(packets), key
    assert a.ping(b.ip, count=2)


def test_validate_only_predicts_exactly_what_the_write_does(env: Env) -> None:
    md = env.md("dbg")
    net = env.stub.GetNetwork(pb.GetNetworkRequest(name="networks/dbg-net"), metadata=env.admin)
    flows = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    revision = env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    request = pb.CreatePortRequest(
        port=pb.Port(network=net.name, binding_chassis="chassis/hv2"), port_id="dbg-new", validate_only=True
    )
    port, call = env.stub.CreatePort.with_call(request, metadata=env.admin)
    plan = pb.Plan.FromString(dict(call.trailing_metadata())["sdn-plan-bin"])
    assert port.name == "ports/dbg-new" and plan.revision == revision + 1
    env.wait_realized()
    assert env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision == revision
    for ch in ("hv1", "hv2"):
        assert env.ovs_flows(ch) == flows[ch], "validate_only changed a switch"
    planned = {p.chassis.split("/")[1]: p for p in plan.chassis}
    assert set(planned) == {"hv1", "hv2"}
    request.validate_only = False
    env.stub.CreatePort(request, metadata=env.admin)
    env.wait_realized()
    for ch in ("hv1", "hv2"):
        after = env.ovs_flows(ch)
        added, deleted = after - flows[ch], flows[ch] - after
        p = planned[ch]
        assert (p.flows_added, p.flows_deleted) == (len(added), len(deleted)), (ch, p, added, deleted)
        assert p.flows_after - p.flows_before == len(added) - len(deleted)
        assert sorted(_cookie(x) for x in p.sample_added) == sorted(_cookie(x) for x in added)
        assert sorted(_cookie(x) for x in p.sample_deleted) == sorted(_cookie(x) for x in deleted)
    assert not plan.cuts_connections
    # deleting a port with traffic is a cut, and the plan says whose
    _, call = env.stub.DeletePort.with_call(
        pb.DeletePortRequest(name="ports/dbg-b", validate_only=True), metadata=env.admin
    )
    cut = pb.Plan.FromString(dict(call.trailing_metadata())["sdn-plan-bin"])
    assert cut.cuts_connections and any("dbg-b" in r for r in cut.cut_reasons)
    assert env.vms["dbg-a"].ping(env.vms["dbg-b"].ip, count=1)


def test_cli_validate_only_prints_the_plan(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import sdnctl as cli

    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    revision = env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=env.admin).revision
    assert (
        cli.main(["port", "create", "dry", "--network", "dbg-net", "--host", "hv1", "--validate-only", *base])
        == 0
    )
    out = capsys.readouterr()
    assert "validate only" in out.err and "chassis/hv1: +" in out.err and "table=60(l2_lookup)" in out.err
    assert env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=env.admin).revision == revision
