"""Apply on a lab of real OVS chassis: the plan's flows per chassis are what the switches then get, the
applied topology forwards real packets, and applying the same document again sends no flow-mod."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import struct_pb2

from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab

DOC: dict[str, Any] = {
    "networks": [{"name": "ap-net"}],
    "subnets": [{"name": "ap-v4", "network": "networks/ap-net", "cidr": "10.71.0.0/24"}],
    "ports": [
        {"name": f"ap-{i}", "network": "networks/ap-net", "fixed_ips": [{"subnet": "subnets/ap-v4"}]}
        for i in range(4)
    ],
}


def _settled(env: Env) -> int:
    """The model revision once the controller's own follow-up writes (port status) are done, realized."""
    revision = -1
    while True:
        env.wait_realized()
        now = env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=env.admin).revision
        if now == revision:
            return int(now)
        revision = now
        time.sleep(0.5)


def struct(document: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(document)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-apply"), provider=False) as e:
        yield e


def test_apply_plans_forwards_and_is_idempotent_on_the_switches(env: Env) -> None:
    md = env.md("applier")
    stub = apb_grpc.ApplyServiceStub(env.channel)
    first = stub.Apply(apb.ApplyRequest(document=struct(DOC)), metadata=md)
    assert first.applied and len(first.changes) == 6
    ports = {i: env.stub.GetPort(pb.GetPortRequest(name=f"ports/ap-{i}"), metadata=md) for i in range(4)}
    vms = {i: env.plug("hv1" if i % 2 == 0 else "hv2", ports[i]) for i in range(4)}
    env.wait_realized()
    assert vms[0].ping(vms[1].ip, count=2) and vms[3].ping(vms[2].ip, count=2)

    # a second document: a new group that lets ICMP in and is ap-1's only group (instead of the default,
    # whose rules let in only its members), and a port taken out of it
    second = copy.deepcopy(DOC)
    second["security_groups"] = [{"name": "ap-icmp"}]
    second["security_group_rules"] = [
        {
            "name": "ap-icmp-in",
            "security_group": "securityGroups/ap-icmp",
            "direction": "ingress",
            "protocol": "icmp",
            "remote_ip_prefix": "10.71.0.0/24",
        }
    ]
    second["ports"][1]["security_groups"] = ["securityGroups/ap-icmp"]
    second["ports"][3]["admin_state_up"] = False
    env.wait_realized()
    before = env.status()
    dump_before = {n: env.ovs_flows(n) for n in ("hv1", "hv2")}
    plan = stub.Apply(apb.ApplyRequest(document=struct(second), validate_only=True), metadata=md)
    assert [(c.action, c.name) for c in plan.changes] == [
        (apb.ObjectChange.CREATE, "securityGroups/ap-icmp"),
        (apb.ObjectChange.CREATE, "securityGroupRules/ap-icmp-in"),
        (apb.ObjectChange.UPDATE, "ports/ap-1"),
        (apb.ObjectChange.UPDATE, "ports/ap-3"),
    ]
    planned = {c.chassis.split("/")[1]: c for c in plan.plan.chassis}
    assert set(planned) == {"hv1", "hv2"}, plan.plan
    assert env.status() == before  # a plan sends nothing
    done = stub.Apply(apb.ApplyRequest(document=struct(second)), metadata=md)
    assert done.applied and done.revision == plan.plan.revision
    settled = _settled(env)  # ap-3 going down is written by the controller itself, after the apply
    after = env.status()
    for name, ch in planned.items():
        # the plan said what each switch would gain and lose: the switch's own flow table agrees
        now = env.ovs_flows(name)
        assert (len(now - dump_before[name]), len(dump_before[name] - now)) == (
            ch.flows_added,
            ch.flows_deleted,
        )
        assert after[name].flow_mods_sent > before[name].flow_mods_sent
    assert vms[0].ping(vms[1].ip, count=2)  # ICMP from the subnet: let in by ap-icmp
    assert not vms[2].ping(vms[3].ip, count=1, timeout=2)  # ap-3 is down: not one reply

    # the same document again: an empty plan, nothing written, no flow-mod to any switch
    again = stub.Apply(apb.ApplyRequest(document=struct(second)), metadata=md)
    assert list(again.changes) == [] and not again.applied and again.revision == settled
    env.wait_realized()
    final = env.status()
    for name in ("hv1", "hv2"):
        assert final[name].flow_mods_sent == after[name].flow_mods_sent, (name, final[name])
        assert final[name].group_mods_sent == after[name].group_mods_sent
    # and back to the first document with prune: the group and its rule (created by an apply) go
    # (a field a document leaves out keeps its value: ap-1 names its groups, ap-3 its state)
    first_again = copy.deepcopy(DOC)
    first_again["ports"][1]["security_groups"] = ["securityGroups/default"]
    first_again["ports"][3]["admin_state_up"] = True
    back = stub.Apply(apb.ApplyRequest(document=struct(first_again), prune=True), metadata=md)
    deleted = {c.name for c in back.changes if c.action == apb.ObjectChange.DELETE}
    assert deleted == {"securityGroups/ap-icmp", "securityGroupRules/ap-icmp-in"}
    env.wait_realized()
    assert vms[2].ping(vms[3].ip, count=2)
