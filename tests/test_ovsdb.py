"""ChassisAgent against real ovsdb-server + ovs-vswitchd (lab chassis); every check is read back with ovs-vsctl."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.southbound.ovsdb import ChassisAgent, ChassisPorts, patch_port_names, tunnel_port_name
from lab import Chassis, Lab, proc

pytestmark = pytest.mark.lab

TUNNELS = ("vxlan", "gre", "geneve")
TIMEOUT = 10.0
CONTROLLER_COLUMNS = ("target", "max_backoff", "connection_mode")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_provider_network("physnet1")
        lab.add_provider_network("extnet")
        yield lab


_counter = iter(range(1, 1000))


@pytest.fixture
def chassis(lab: Lab) -> Chassis:
    """A new chassis whose br-int does not exist yet (the lab makes one; the agent must make its own)."""
    ch = lab.add_chassis(f"ovs{next(_counter)}")
    ch.vsctl("del-br", "br-int")
    return ch


class Recorder:
    """on_change sink: every reported ChassisPorts, and a way to wait for one that satisfies a predicate."""

    def __init__(self) -> None:
        self.seen: list[ChassisPorts] = []
        self._cond = threading.Condition()

    def __call__(self, chassis_id: str, ports: ChassisPorts) -> None:
        with self._cond:
            self.seen.append(ports)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.seen)

    def wait_for(
        self, predicate: Callable[[ChassisPorts], bool], timeout: float = TIMEOUT, since: int | None = None
    ) -> ChassisPorts:
        """The latest report if it matches; with `since`, the first matching report from index `since` on."""

        def found() -> ChassisPorts | None:
            candidates = self.seen[-1:] if since is None else self.seen[since:]
            return next((p for p in candidates if predicate(p)), None)

        with self._cond:
            ok = self._cond.wait_for(lambda: found() is not None, timeout)
            assert ok, f"no reported ChassisPorts matched within {timeout} s; last: {self.seen[-1:]}"
            result = found()
            assert result is not None
            return result


class Agents:
    """Starts agents against lab chassis and stops them all at teardown."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.started: list[ChassisAgent] = []

    def target(self, port: int = 6653) -> str:
        return f"tcp:{self.lab.mgmt_ip}:{port}"

    def start(self, ch: Chassis, **kwargs: object) -> tuple[ChassisAgent, Recorder]:
        rec = Recorder()
        kwargs.setdefault("controller_targets", [self.target()])
        agent = ChassisAgent(ch.name, ch.ovsdb, datapath_id=ch.datapath_id, on_change=rec, **kwargs)  # type: ignore[arg-type]
        self.started.append(agent)
        agent.start()
        assert agent.wait_ready(TIMEOUT), f"agent not ready: {agent.snapshot()}"
        return agent, rec


@pytest.fixture
def agents(lab: Lab) -> Iterator[Agents]:
    a = Agents(lab)
    yield a
    for agent in a.started:
        agent.stop()


def vsctl_get(ch: Chassis, table: str, record: str, column: str) -> str:
    return ch.vsctl("get", table, record, column, wait=False).strip('"')


def ofport(ch: Chassis, iface: str) -> int:
    return int(vsctl_get(ch, "Interface", iface, "ofport"))


def bridge_ports(ch: Chassis, bridge: str) -> set[str]:
    return set(ch.vsctl("list-ports", bridge, wait=False).split())


def controller_rows(ch: Chassis) -> list[tuple[str, str, str, str]]:
    """(uuid, target, max_backoff, connection_mode) of br-int's controllers (the chassis's only ones), read in
    one command: row by row, the agent could delete a row between the listing and the reading."""
    out = ch.vsctl(
        "--format=csv",
        "--data=bare",
        "--no-headings",
        f"--columns=_uuid,{','.join(CONTROLLER_COLUMNS)}",
        "list",
        "Controller",
        wait=False,
    )
    return [(u, t, b, m) for u, t, b, m in (line.split(",") for line in out.splitlines() if line)]


def eventually(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    assert proc.wait_until(predicate, timeout=timeout, interval=0.05), f"timed out waiting for {what}"


def tunnels_match_switch(ch: Chassis, ports: ChassisPorts) -> bool:
    return set(ports.tunnels) == set(TUNNELS) and all(
        ports.tunnels[t] == ofport(ch, tunnel_port_name(t)) > 0 for t in TUNNELS
    )


# --- tests -------------------------------------------------------------------------------------------------


def test_configures_fresh_chassis(chassis: Chassis, agents: Agents) -> None:
    agent, _ = agents.start(chassis)
    ch = chassis
    assert vsctl_get(ch, "Bridge", "br-int", "datapath_type") == "netdev"
    assert vsctl_get(ch, "Bridge", "br-int", "fail_mode") == "secure"
    assert vsctl_get(ch, "Bridge", "br-int", "protocols") == "[OpenFlow13]"
    assert vsctl_get(ch, "Bridge", "br-int", "other_config:datapath-id") == f"{ch.datapath_id:016x}"
    assert vsctl_get(ch, "Bridge", "br-int", "datapath_id") == f"{ch.datapath_id:016x}"  # vswitchd took it
    assert [row[1:] for row in controller_rows(ch)] == [(agents.target(), "1000", "out-of-band")]
    assert bridge_ports(ch, "br-int") == {tunnel_port_name(t) for t in TUNNELS}
    for t in TUNNELS:
        name = tunnel_port_name(t)
        assert vsctl_get(ch, "Interface", name, "type") == t
        assert vsctl_get(ch, "Interface", name, "options") == "{key=flow, remote_ip=flow}"
    # Tunnel ports get ofports, and the agent reports exactly those.
    snap = agent.snapshot()
    assert snap.connected and tunnels_match_switch(ch, snap)
    assert dict(snap.vifs) == {} and dict(snap.patches) == {}


def test_idempotent_and_repairs_settings(
    chassis: Chassis, agents: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    """A second agent on a configured switch writes nothing; settings changed behind its back are put back,
    other keys of other_config are left alone."""
    ch = chassis
    first, _ = agents.start(ch)
    uuids = {name: vsctl_get(ch, "Port", name, "_uuid") for name in bridge_ports(ch, "br-int")}
    ctl_rows = controller_rows(ch)
    first.stop()
    with caplog.at_level(logging.INFO, logger="controller.southbound.ovsdb"):
        agent, _ = agents.start(ch)
    assert not [r for r in caplog.records if "OVSDB updated" in r.getMessage()]
    assert {name: vsctl_get(ch, "Port", name, "_uuid") for name in bridge_ports(ch, "br-int")} == uuids
    assert controller_rows(ch) == ctl_rows

    ch.vsctl("set", "Bridge", "br-int", "fail_mode=standalone", "protocols=OpenFlow10,OpenFlow13",
             "other_config:datapath-id=00000000000000aa", "other_config:mine=kept",
             "--", "set", "Controller", ctl_rows[0][0], "connection_mode=in-band", wait=False)  # fmt: skip
    eventually(lambda: vsctl_get(ch, "Bridge", "br-int", "fail_mode") == "secure", "fail_mode repaired")
    eventually(lambda: vsctl_get(ch, "Controller", ctl_rows[0][0], "connection_mode") == "out-of-band",
               "connection_mode repaired")  # fmt: skip
    assert vsctl_get(ch, "Bridge", "br-int", "protocols") == "[OpenFlow13]"
    assert vsctl_get(ch, "Bridge", "br-int", "other_config:datapath-id") == f"{ch.datapath_id:016x}"
    assert vsctl_get(ch, "Bridge", "br-int", "other_config:mine") == "kept"
    assert agent.wait_ready(TIMEOUT)

    # The same agent stopped and started again picks up where it was.
    agent.stop()
    agent.start()
    assert agent.wait_ready(TIMEOUT) and tunnels_match_switch(ch, agent.snapshot())


def test_vm_plug_and_unplug(chassis: Chassis, agents: Agents) -> None:
    agent, rec = agents.start(chassis)
    vm1 = chassis.add_vm("vm-a", "02:00:00:00:0a:01", "10.20.0.1/24", "port-a")
    vm2 = chassis.add_vm("vm-b", "02:00:00:00:0a:02", "10.20.0.2/24", "port-b")
    expected = {"port-a": ofport(chassis, vm1.port_name), "port-b": ofport(chassis, vm2.port_name)}
    assert all(p > 0 for p in expected.values())
    rec.wait_for(lambda p: dict(p.vifs) == expected)
    assert dict(agent.snapshot().vifs) == expected

    chassis.remove_vm(vm1)
    rec.wait_for(lambda p: dict(p.vifs) == {"port-b": expected["port-b"]})
    # Tunnels are untouched by VM churn.
    assert tunnels_match_switch(chassis, agent.snapshot())


def test_bridge_mapping_patch_pair(lab: Lab, chassis: Chassis, agents: Agents) -> None:
    ch = chassis
    uplink = ch.add_provider_bridge("br-phys1", "physnet1")
    ch.add_provider_bridge("br-ext", "extnet")
    agent, rec = agents.start(ch, bridge_mappings={"physnet1": "br-phys1"})
    int_side, prov_side = patch_port_names("physnet1")
    assert {int_side, *(tunnel_port_name(t) for t in TUNNELS)} == bridge_ports(ch, "br-int")
    assert bridge_ports(ch, "br-phys1") == {uplink, prov_side}  # only the patch is added
    assert vsctl_get(ch, "Interface", int_side, "type") == "patch"
    assert vsctl_get(ch, "Interface", int_side, "options:peer") == prov_side
    assert vsctl_get(ch, "Interface", prov_side, "options:peer") == int_side

    # vswitchd assigns the patch port's ofport a moment after the transaction: wait for the agent to report it
    def patched(p: ChassisPorts) -> bool:
        got = vsctl_get(ch, "Interface", int_side, "ofport")
        return got.lstrip("-").isdigit() and int(got) > 0 and dict(p.patches) == {"physnet1": int(got)}

    rec.wait_for(patched)
    [flow] = ch.dump_flows("br-phys1")  # still standalone: the one NORMAL flow
    assert "NORMAL" in flow

    # A long physnet name gets a short, stable port name (interface names are at most 15 characters).
    long_net = "a-very-long-physical-network-name"
    agent.update(bridge_mappings={"physnet1": "br-phys1", long_net: "br-ext"})
    assert agent.wait_ready(TIMEOUT)
    long_int, long_prov = patch_port_names(long_net)
    assert len(long_int) <= 15 and len(long_prov) <= 15 and long_int != long_prov
    assert long_prov in bridge_ports(ch, "br-ext")
    rec.wait_for(
        lambda p: dict(p.patches) == {"physnet1": ofport(ch, int_side), long_net: ofport(ch, long_int)}
    )

    # A physnet moving to another bridge moves its provider-side port (same name) in one transaction.
    int_uuid = vsctl_get(ch, "Port", int_side, "_uuid")
    agent.update(bridge_mappings={"physnet1": "br-ext", long_net: "br-ext"})
    eventually(lambda: prov_side in bridge_ports(ch, "br-ext"), "provider side moved to br-ext")
    assert bridge_ports(ch, "br-phys1") == {uplink}
    assert vsctl_get(ch, "Port", int_side, "_uuid") == int_uuid  # br-int side untouched
    assert agent.wait_ready(TIMEOUT)

    # Removing a mapping removes its pair, on both bridges.
    agent.update(bridge_mappings={long_net: "br-ext"})
    rec.wait_for(lambda p: set(p.patches) == {long_net})
    eventually(lambda: int_side not in bridge_ports(ch, "br-int"), "br-int patch removed")
    assert prov_side not in bridge_ports(ch, "br-ext")

    # A mapping to a bridge that does not exist yet is realized as soon as the bridge appears.
    agent.update(bridge_mappings={long_net: "br-ext", "physnet1": "br-late"})
    assert agent.wait_ready(TIMEOUT)
    assert set(agent.snapshot().patches) == {long_net}
    ch.vsctl("add-br", "br-late", "--", "set", "Bridge", "br-late", "datapath_type=netdev")
    rec.wait_for(lambda p: set(p.patches) == {long_net, "physnet1"})
    assert bridge_ports(ch, "br-late") == {prov_side}


def test_deleted_tunnel_port_comes_back(chassis: Chassis, agents: Agents) -> None:
    agent, rec = agents.start(chassis)
    old_uuid = vsctl_get(chassis, "Port", "tun-vxlan", "_uuid")
    chassis.vsctl("del-port", "br-int", "tun-vxlan")
    eventually(lambda: "tun-vxlan" in bridge_ports(chassis, "br-int"), "tun-vxlan recreated")
    assert vsctl_get(chassis, "Port", "tun-vxlan", "_uuid") != old_uuid
    assert vsctl_get(chassis, "Interface", "tun-vxlan", "options") == "{key=flow, remote_ip=flow}"
    rec.wait_for(lambda p: tunnels_match_switch(chassis, p))
    # Its options edited behind our back are put back too.
    chassis.vsctl("set", "Interface", "tun-gre", "options:key=42")
    eventually(
        lambda: vsctl_get(chassis, "Interface", "tun-gre", "options:key") == "flow", "tun-gre key=flow"
    )
    assert agent.wait_ready(TIMEOUT)


def test_port_name_taken_by_someone_else(
    chassis: Chassis, agents: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    """A foreign port holding one of our names is left alone (and logged); everything else is configured, and
    the port is created once the name is free."""
    ch = chassis
    ch.vsctl("add-port", "br-phy", "tun-gre", "--", "set", "Interface", "tun-gre", "type=internal")
    rec = Recorder()
    agent = ChassisAgent(ch.name, ch.ovsdb, controller_targets=[agents.target()], datapath_id=ch.datapath_id,
                         on_change=rec)  # fmt: skip
    agents.started.append(agent)
    with caplog.at_level(logging.WARNING, logger="controller.southbound.ovsdb"):
        agent.start()
        rec.wait_for(lambda p: set(p.tunnels) == {"vxlan", "geneve"})
        assert not agent.wait_ready(0.3)
    assert any("cannot create tun-gre on br-int: name in use" in r.getMessage() for r in caplog.records)
    assert bridge_ports(ch, "br-phy") == {"ul0", "tun-gre"}

    ch.vsctl("del-port", "br-phy", "tun-gre")
    assert agent.wait_ready(TIMEOUT)
    assert tunnels_match_switch(ch, agent.snapshot())


def test_failed_transaction_is_logged_and_retried(
    chassis: Chassis, agents: Agents, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's reason for refusing a transaction is logged; the agent retries and converges."""
    plan = ChassisAgent._plan
    failures = iter(range(2))

    def failing_plan(self: ChassisAgent, txn: object, config: object, actions: list[str]) -> None:
        plan(self, txn, config, actions)  # type: ignore[arg-type]
        if actions and next(failures, None) is not None:
            # A value outside the column's enum: ovsdb-server rejects the whole transaction.
            txn.add_op({"op": "insert", "table": "Bridge", "row": {"name": "br-bad", "fail_mode": "bogus"}})  # type: ignore[attr-defined]

    monkeypatch.setattr(ChassisAgent, "_plan", failing_plan)
    with caplog.at_level(logging.INFO, logger="controller.southbound.ovsdb"):
        agent, _ = agents.start(chassis)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert (
        "OVSDB transaction failed" in errors[0]
        and "bogus" in errors[0]
        and "create bridge br-int" in errors[0]
    )
    assert tunnels_match_switch(chassis, agent.snapshot())
    assert "br-bad" not in chassis.vsctl("list-br", wait=False).split()


def test_controller_target_updated_in_place(chassis: Chassis, agents: Agents) -> None:
    ch = chassis
    agent, _ = agents.start(ch, controller_targets=[agents.target(6653)])
    [(uuid, target, _, _)] = controller_rows(ch)
    assert target == agents.target(6653)

    agent.update(controller_targets=[agents.target(6654)])
    eventually(lambda: controller_rows(ch)[0][1] == agents.target(6654), "new target")
    assert controller_rows(ch) == [(uuid, agents.target(6654), "1000", "out-of-band")]

    # A second target is a new row; dropping the first keeps the other row as it was.
    agent.update(controller_targets=[agents.target(6654), agents.target(6655)])
    eventually(lambda: len(controller_rows(ch)) == 2, "two controllers")
    second = next(r[0] for r in controller_rows(ch) if r[1] == agents.target(6655))
    agent.update(controller_targets=[agents.target(6655)])
    eventually(lambda: len(controller_rows(ch)) == 1, "one controller")
    assert controller_rows(ch) == [(second, agents.target(6655), "1000", "out-of-band")]
    assert agent.wait_ready(TIMEOUT)


def test_vswitchd_restart_reports_new_ofports(chassis: Chassis, agents: Agents) -> None:
    ch = chassis
    agent, rec = agents.start(ch)
    vm = ch.add_vm("vm-r", "02:00:00:00:0b:01", "10.21.0.1/24", "port-r")
    rec.wait_for(lambda p: "port-r" in p.vifs)

    ch.kill_vswitchd()
    # While vswitchd is down: move the VM's port to another ofport and delete a tunnel port. The agent
    # recreates the port in the database, but it has no ofport until vswitchd is back.
    ch.vsctl("set", "Interface", vm.port_name, "ofport_request=40", wait=False)
    ch.vsctl("del-port", "br-int", "tun-gre", wait=False)
    rec.wait_for(lambda p: "gre" not in p.tunnels)
    eventually(lambda: "tun-gre" in bridge_ports(ch, "br-int"), "tun-gre recreated in OVSDB")
    assert not agent.wait_ready(0.2)

    ch.start_vswitchd()
    ports = rec.wait_for(lambda p: p.vifs.get("port-r") == 40 and set(p.tunnels) == set(TUNNELS))
    assert tunnels_match_switch(ch, ports)
    assert ofport(ch, vm.port_name) == 40
    assert agent.wait_ready(TIMEOUT)


def test_survives_ovsdb_server_restart(chassis: Chassis, agents: Agents) -> None:
    ch = chassis
    agent, rec = agents.start(ch)
    mark = rec.mark()
    restart_ovsdb_server(ch)
    rec.wait_for(lambda p: not p.connected, since=mark)
    rec.wait_for(lambda p: p.connected)
    assert agent.wait_ready(TIMEOUT)
    # Still converging after the reconnect.
    ch.vsctl("del-port", "br-int", "tun-geneve", wait=False)
    eventually(lambda: "tun-geneve" in bridge_ports(ch, "br-int"), "tun-geneve recreated")
    assert agent.wait_ready(TIMEOUT)


def test_connects_once_ovsdb_server_comes_up(chassis: Chassis, agents: Agents) -> None:
    stop_ovsdb_server(chassis)
    rec = Recorder()
    agent = ChassisAgent(chassis.name, chassis.ovsdb, controller_targets=[agents.target()],
                         datapath_id=chassis.datapath_id, on_change=rec)  # fmt: skip
    agents.started.append(agent)
    agent.start()
    assert not agent.wait_ready(1.5)
    assert not agent.snapshot().connected
    start_ovsdb_server(chassis)
    assert agent.wait_ready(TIMEOUT)
    assert tunnels_match_switch(chassis, agent.snapshot())


def test_unreachable_ovsdb_is_not_ready_and_stops(lab: Lab) -> None:
    rec = Recorder()
    agent = ChassisAgent("nowhere", f"unix:{lab.workdir}/no-such.sock", controller_targets=["tcp:127.0.0.1:1"],
                         datapath_id=1, on_change=rec)  # fmt: skip
    agent.start()
    try:
        assert not agent.wait_ready(0.3)
        assert agent.snapshot() == ChassisPorts()
    finally:
        t0 = time.monotonic()
        agent.stop()
        assert time.monotonic() - t0 < 2


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tunnel types"):
        ChassisAgent("x", "unix:/x", controller_targets=[], datapath_id=1, tunnel_types=["vxlan", "ipip"])
    with pytest.raises(TypeError):
        ChassisAgent("x", "unix:/x", controller_targets="tcp:1.2.3.4:6653", datapath_id=1)


# --- helpers that reach below the lab's API ------------------------------------------------------------------


def stop_ovsdb_server(ch: Chassis) -> None:
    pid = proc.read_pidfile(f"{ch.rundir}/ovsdb-server.pid")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert proc.wait_until(lambda: not proc.pid_alive(pid), timeout=5)


def start_ovsdb_server(ch: Chassis) -> None:
    """Start the chassis's ovsdb-server again on the same database and socket (as lab/ovs.py does)."""
    rundir = ch.rundir
    env = {k: str(rundir) for k in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR")}
    proc.run(
        ["ovsdb-server", f"{rundir}/conf.db", f"--remote=punix:{rundir}/db.sock",
         f"--pidfile={rundir}/ovsdb-server.pid", f"--unixctl={rundir}/ovsdb-server.ctl",
         f"--log-file={rundir}/ovsdb-server.log", "--detach", "--no-chdir"],
        env=env,
    )  # fmt: skip
    pid = proc.read_pidfile(f"{rundir}/ovsdb-server.pid")
    assert pid is not None
    ch.lab.state.add_pid(pid)  # so the lab's teardown kills it


def restart_ovsdb_server(ch: Chassis) -> None:
    stop_ovsdb_server(ch)
    start_ovsdb_server(ch)
