"""Trace, differential trace and explain end to end: real ovs-vswitchd chassis, the real controller process,
real packets. The trace says where a packet goes; the real packet goes there. A stage deleted behind the
controller's back is where the differential trace says the switch diverges, and the switch's own
ofproto/trace agrees."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from controller.cli import sdnctl as cli
from flows import pipeline
from lab import VM
from proto.sdn.v1 import debug_pb2 as dbg
from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab

Md = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # no drift repair: the differential trace must see the flows deleted behind the controller's back
    with lab_env(
        tmp_path_factory.mktemp("e2e-trace"), provider=False, extra_args=["--drift-interval-s", "0"]
    ) as e:
        yield e


@pytest.fixture(scope="module")
def debug(env: Env) -> dbg_grpc.DebugServiceStub:
    return dbg_grpc.DebugServiceStub(env.channel)


@pytest.fixture(scope="module")
def vms(env: Env) -> tuple[VM, VM, Md]:
    """alice's two VMs on different chassis, and bob's VM with an address of the same CIDR."""
    alice, bob = env.md("alice"), env.md("bob")
    net = env.network(alice, "tr-net", "10.70.0.0/24")
    a = env.plug("hv1", env.port(alice, "tr-a", net, "10.70.0.10"))
    b = env.plug("hv2", env.port(alice, "tr-b", net, "10.70.0.11"))
    bob_net = env.network(bob, "bob-net", "10.70.0.0/24")
    env.plug("hv1", env.port(bob, "bob-x", bob_net, "10.70.0.50"))
    env.wait_realized()
    return a, b, alice


#: the core's stages: a plug-in installed where the controller runs (the QoS one, in the dev venv) adds
#: stages in the hooks whose default flows pass the packet on; they are not this test's subject
_CORE_STAGES = frozenset(s.name for s in pipeline.STAGES)


def _stages(hop: dbg.TraceHop) -> list[str]:
    return [s.stage for s in hop.steps if s.flow and s.stage in _CORE_STAGES]


def test_trace_between_vms_on_two_chassis_matches_the_real_packet(
    env: Env, debug: dbg_grpc.DebugServiceStub, vms: tuple[VM, VM, Md], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = vms
    req = dbg.TraceRequest(port="ports/tr-a", destination_port="ports/tr-b", headers={"ip_proto": "1"})
    resp = debug.Trace(req, metadata=env.admin)
    assert [h.chassis for h in resp.hops] == ["hv1", "hv2"], resp.text
    hv1, hv2 = resp.hops
    # acl_egress twice: ct() recirculates into it, then the default group's egress rule passes it on
    assert _stages(hv1) == [
        "classify",
        "port_sec_in",
        "plugin_from_port",
        "acl_egress",
        "acl_egress",
        "fw_router_in",
        "acl_egress_commit",
        "arp_nd",
        "dhcp",
        "lb",
        "l2_lookup",
        "egress_dispatch",
    ], resp.text
    assert (hv1.outputs[0].kind, hv1.outputs[0].port) == ("tunnel", "chassis/hv2")
    assert hv1.outputs[0].ofport > 0
    assert hv1.outputs[0].headers["tun_ipv4_dst"] == env.chassis("hv2").tunnel_ip
    assert hv2.from_chassis == "hv1" and hv2.in_port > 0
    assert _stages(hv2) == [
        "classify",
        "l2_lookup",
        "egress_dispatch",
        "acl_ingress",
        "acl_ingress",
        "acl_ingress_commit",
        "plugin_to_port",
        "output",
    ], resp.text
    assert (hv2.outputs[0].kind, hv2.outputs[0].port, hv2.outputs[0].chassis) == ("vif", "ports/tr-b", "hv2")
    assert hv2.outputs[0].ofport == env.chassis("hv2").ofport(b.port_name)
    assert resp.verdict == "delivered to ports/tr-b on hv2"
    owners = {s.owner for s in hv1.steps if s.stage == "l2_lookup"}
    assert owners == {"l2/tr-b"}
    assert a.ping(b.ip, count=2), "the real packet goes where the trace says"
    # the installed flows (dumped now) agree, with counters that moved with the ping
    inst = debug.Trace(
        dbg.TraceRequest(
            port="ports/tr-a",
            destination_port="ports/tr-b",
            headers={"ip_proto": "1"},
            source=dbg.TraceRequest.INSTALLED,
        ),
        metadata=env.admin,
    )
    assert inst.verdict == resp.verdict and inst.flows == "installed"
    lookup = next(s for s in inst.hops[0].steps if s.stage == "l2_lookup")
    assert "n_packets=" in lookup.note and "n_packets=0," not in lookup.note, lookup.note
    # tenants may not trace
    with pytest.raises(grpc.RpcError) as e:
        debug.Trace(req, metadata=vms[2])
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # the CLI prints the ovn-trace-like text
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert (
        cli.main(
            [
                "flow",
                "trace",
                "--port",
                "tr-a",
                "--dst-port",
                "tr-b",
                "--proto",
                "tcp",
                "--dst-port-number",
                "22",
                *base,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "== hv1 (in_port=" in out and "60(l2_lookup)" in out
    assert "Verdict: delivered to ports/tr-b on hv2" in out


def test_explain_same_network_and_the_cross_tenant_boundary(
    env: Env, debug: dbg_grpc.DebugServiceStub, vms: tuple[VM, VM, Md], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, alice = vms
    ok = debug.Explain(
        dbg.ExplainRequest(source_port="ports/tr-a", destination="ports/tr-b", protocol="tcp", port=22),
        metadata=alice,
    )
    assert ok.allowed and ok.verdict.startswith("allowed, same network tr-net") and ok.trace_confirms
    rules = [d for d in ok.deciders if d.kind == "security_group"]
    assert len(rules) == 2 and all(d.allows and d.resource.startswith("securityGroupRules/") for d in rules)
    assert "ingress tcp/22 from" in rules[1].description and "'default'" in rules[1].description
    cross = debug.Explain(
        dbg.ExplainRequest(source_port="ports/tr-a", destination="ports/bob-x", protocol="tcp", port=22),
        metadata=env.admin,
    )
    assert not cross.allowed and cross.trace_confirms, cross.text
    assert "networks tr-net and bob-net are not connected" in cross.verdict
    assert "different tenants: alice and bob" in cross.verdict
    assert "ports/bob-x" not in cross.trace.verdict  # the traced packet never reaches bob's VM
    # alice cannot even name bob's port; by IP, her own network decides: nobody of hers has 10.70.0.50
    with pytest.raises(grpc.RpcError) as e:
        debug.Explain(dbg.ExplainRequest(source_port="ports/tr-a", destination="ports/bob-x"), metadata=alice)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    by_ip = debug.Explain(
        dbg.ExplainRequest(source_port="ports/tr-a", destination="10.70.0.50"), metadata=alice
    )
    assert not by_ip.allowed and "no port of networks/tr-net has 10.70.0.50" in by_ip.verdict
    assert "bob" not in by_ip.text
    assert not a.ping("10.70.0.50", count=1, timeout=2), "the real packet does not cross the boundary either"
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["explain", "tr-a", "tr-b", "--proto", "tcp", "--port", "22", *base]) == 0
    out = capsys.readouterr().out
    assert "ALLOWED" in out and "allowed, same network tr-net" in out
    del b


def test_diff_trace_finds_a_stage_deleted_behind_the_controllers_back(
    env: Env, debug: dbg_grpc.DebugServiceStub, vms: tuple[VM, VM, Md], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = vms
    req = dbg.TraceRequest(port="ports/tr-a", destination_port="ports/tr-b", headers={"ip_proto": "1"})
    clean = debug.DiffTrace(req, metadata=env.admin)
    assert not clean.divergences, clean.text
    env.chassis("hv1").ofctl("del-flows", "br-int", "table=60")
    diff = debug.DiffTrace(req, metadata=env.admin)
    assert [(d.chassis, d.stage) for d in diff.divergences] == [("hv1", "l2_lookup")], diff.text
    d = diff.divergences[0]
    assert d.table == 60 and "l2_lookup" in d.desired_flow and d.installed_flow == ""
    assert diff.desired.verdict == "delivered to ports/tr-b on hv2"
    assert diff.installed.verdict == "no flow matched in l2_lookup on hv1"
    hv1 = next(s for s in diff.switch_traces if s.chassis == "hv1")
    assert not hv1.error and "in_port=" in hv1.flow, hv1
    assert "60. No match." in hv1.output, hv1.output  # after the ct() recirculation of acl_egress
    assert not a.ping(b.ip, count=1, timeout=2), "the switch really drops it"
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["flow", "trace", "--port", "tr-a", "--dst-port", "tr-b", "--diff", *base]) == 0
    out = capsys.readouterr().out
    assert "DIVERGES on hv1 at 60(l2_lookup)" in out and "ofproto/trace br-int" in out
