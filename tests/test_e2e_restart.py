"""Restarts: kill -9 the controller under a 10 ms ping (no loss, no flow-mod sent), restart ovs-vswitchd
(flows back within seconds of its reconnect)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import pytest

from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-restart"), provider=False) as e:
        md = e.md("hitless")
        net = e.network(md, "hl-net", "10.70.0.0/24")
        e.plug("hv1", e.port(md, "hl-a", net))
        e.plug("hv2", e.port(md, "hl-b", net))
        e.wait_realized()
        yield e


def _wait_synced(env: Env, timeout: float = 20.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        st = env.status()
        if all(s.connected and s.resyncs >= 1 and s.installed_flows > 0 for s in st.values()):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"switches did not resync: {st}\n{env.controller_log()}")
        time.sleep(0.05)


def test_kill_9_controller_is_hitless(env: Env) -> None:
    a, b = env.vms["hl-a"], env.vms["hl-b"]
    assert a.ping(b.ip, count=2)
    flows_before = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    # -c (not -w): ping waits for the last replies, so a reply in flight at a deadline is not a "loss"
    pinger = a.popen(["ping", "-n", "-q", "-i", "0.01", "-c", "500", "-W", "2", b.ip])
    time.sleep(1.0)
    env.controller.kill(signal.SIGKILL)
    time.sleep(0.5)
    env.controller.start()
    env.channel.close()
    import grpc

    from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
    from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

    env.channel = grpc.insecure_channel(env.controller.endpoint)
    env.stub = pb_grpc.TopologyServiceStub(env.channel)
    env.dp = dpb_grpc.DataplaneServiceStub(env.channel)
    status = _wait_synced(env)
    out, _ = pinger.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    assert sent > 300 and received == sent, f"lost {sent - received} of {sent} pings across the restart"
    for ch, st in status.items():
        assert st.flow_mods_sent == 0 and st.group_mods_sent == 0, f"{ch} was sent flow-mods: {st}"
        assert env.ovs_flows(ch) == flows_before[ch]
    port = env.stub.GetPort(pb.GetPortRequest(name="ports/hl-b"), metadata=env.admin)
    assert port.status == pb.Port.ACTIVE


def test_vswitchd_restart_gets_its_flows_back(env: Env) -> None:
    a, b = env.vms["hl-a"], env.vms["hl-b"]
    before = env.ovs_flows("hv2")
    hv2 = env.chassis("hv2")
    hv2.restart_vswitchd()
    t0 = time.monotonic()
    while env.ovs_flows("hv2") != before:
        assert time.monotonic() - t0 < 15, f"flows not back on hv2\n{env.controller_log()}"
        time.sleep(0.1)
    assert a.ping(b.ip, count=3, timeout=10)
    assert b.ping(a.ip, count=2)
