"""Against a real ovs-vswitchd: our bundle bytes install without errors and the flow/group dumps decode
back to equal values. Skipped without root and Open vSwitch."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_parser as op
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from flows import actions as A
from flows import pipeline as P
from flows.decode import decode_flow, decode_group
from flows.encode import ADD, DATAPATH_DESC, Encoder, barrier_request, flow_stats_request, group_desc_request
from flows.flow import Flow, Group
from tests.test_flows_decode import EVERY_KIND
from tests.test_flows_encode import EXAMPLES
from tests.test_flows_strategies import flows as flow_values
from tests.test_flows_walker import GROUPS, router_flows, stateful_acl

pytestmark = (
    pytest.mark.lab
)  # needs root and OVS, like every lab test: it fails rather than skips without them
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class Switch:
    """One ovsdb-server + ovs-vswitchd (in its own network namespace, so its netdev datapath cannot
    collide with another one) in a temp dir, a netdev bridge, and an OpenFlow 1.3 connection over a
    unix socket in the switch's run directory."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.ns = f"flowtest-{os.getpid()}"
        self.env = {**os.environ, "OVS_RUNDIR": str(d), "OVS_LOGDIR": str(d), "OVS_DBDIR": str(d)}
        self.db = f"--db=unix:{d}/db.sock"
        self.run("ip", "netns", "add", self.ns)
        self.run("ovsdb-tool", "create", f"{d}/conf.db", SCHEMA)
        self.run(
            "ovsdb-server",
            f"{d}/conf.db",
            f"--remote=punix:{d}/db.sock",
            f"--pidfile={d}/db.pid",
            f"--unixctl={d}/db.ctl",
            f"--log-file={d}/db.log",
            "--detach",
            "--no-chdir",
        )
        self.run("ovs-vsctl", self.db, "--no-wait", "init")
        self.run(
            "ip",
            "netns",
            "exec",
            self.ns,
            "ovs-vswitchd",
            f"unix:{d}/db.sock",
            f"--pidfile={d}/vs.pid",
            f"--unixctl={d}/vs.ctl",
            f"--log-file={d}/vs.log",
            "--detach",
            "--no-chdir",
        )
        self.run(
            "ovs-vsctl",
            self.db,
            "add-br",
            "brf",
            "--",
            "set",
            "bridge",
            "brf",
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            "fail_mode=secure",
        )
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(f"{d}/of.sock")
        srv.listen(1)
        srv.settimeout(20)
        self.run(
            "ovs-vsctl",
            self.db,
            "set-controller",
            "brf",
            f"unix:{d}/of.sock",
            "--",
            "set",
            "controller",
            "brf",
            "max_backoff=1000",
            "connection_mode=out-of-band",
        )
        self.conn, _ = srv.accept()
        srv.close()
        self.conn.settimeout(20)
        self.buf = b""
        self.conn.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # HELLO

    def run(self, *args: str) -> None:
        subprocess.run(args, env=self.env, check=True, capture_output=True, timeout=30)

    def close(self) -> None:
        """Stop both daemons by their pidfiles, then drop the namespace (and the taps inside it)."""
        if hasattr(self, "conn"):
            self.conn.close()
        for pidfile in ("vs.pid", "db.pid"):
            p = self.d / pidfile
            if p.exists():
                pid = int(p.read_text())
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                for _ in range(50):  # wait until gone (a zombie counts as gone)
                    try:
                        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
                    except (FileNotFoundError, IndexError):
                        break
                    if state == "Z":
                        break
                    time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30, check=False)

    def recv(self) -> bytes:
        while True:
            if len(self.buf) >= 8:
                (length,) = struct.unpack_from("!H", self.buf, 2)
                if len(self.buf) >= length:
                    m, self.buf = self.buf[:length], self.buf[length:]
                    if m[1] == 2:  # echo request
                        self.conn.sendall(m[:1] + b"\x03" + m[2:])
                        continue
                    return m
            data = self.conn.recv(1 << 16)
            if not data:
                raise EOFError("switch closed the connection")
            self.buf += data

    def install(self, flows: list[Flow], groups=()) -> list[tuple[int, int, object]]:
        """Replace everything with one bundle; returns (error type, code, op) for each failed op."""
        self.run("ovs-ofctl", "-O", "OpenFlow13", "del-flows", "brf")
        self.run("ovs-ofctl", "-O", "OpenFlow13", "del-groups", "brf")
        ops = [(ADD, g) for g in groups] + [(ADD, f) for f in flows]
        buf, nxt = Encoder().bundle(ops, bundle_id=7, xid=1000)
        self.conn.sendall(buf + barrier_request(nxt))
        errors = []
        while True:
            m = self.recv()
            xid = struct.unpack_from("!I", m, 4)[0]
            if m[1] == 21 and xid == nxt:  # barrier reply
                return errors
            if m[1] == 1:
                et, ec = struct.unpack_from("!HH", m, 8)
                errors.append((et, ec, ops[xid - 1001][1] if 0 <= xid - 1001 < len(ops) else None))

    def dump(self):
        self.conn.sendall(flow_stats_request(5) + group_desc_request(6))
        flows, groups, pending = [], [], {5, 6}
        while pending:
            m = self.recv()
            msg = op.msg(DATAPATH_DESC, *op.header(m), m)
            if isinstance(msg, ofpp.OFPFlowStatsReply):
                flows += msg.body
            elif isinstance(msg, ofpp.OFPGroupDescStatsReply):
                groups += msg.body
            else:
                continue
            if not msg.flags & 1:
                pending.discard(msg.xid)
        return [decode_flow(s) for s in flows], [decode_group(g) for g in groups]


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    sw = Switch.__new__(Switch)
    try:
        sw.__init__(tmp_path_factory.mktemp("ovs"))
        yield sw
    finally:
        sw.close()


def unique_keys(flows: list[Flow]) -> list[Flow]:
    seen: dict = {}
    for f in flows:
        seen.setdefault(f.key(), f)
    return list(seen.values())


def test_compiled_shapes_install_and_dump_back_as_equal_values(switch):
    every_kind = [
        Flow(
            "lb",
            P.MATCH(i),
            {
                "metadata": 1,
                "vlan_vid": 0x1005,
                "ip_proto": 6,
                "eth_type": 0x86DD if "fd00" in repr(a) else 0x800,
            },
            [a],
        )
        for i, a in enumerate(EVERY_KIND)
        if not isinstance(a, A.GroupAction)
    ]
    groups = list(GROUPS) + [Group(3, "all", ()), Group(7, "all", ())]  # targets of EVERY_KIND / EXAMPLES
    wanted = unique_keys(
        [f for f in EXAMPLES if not any(isinstance(a, A.Meter) for a in f.actions)]
        + router_flows()
        + stateful_acl()
        + every_kind
    )
    assert switch.install(wanted, groups) == []
    flows, got_groups = switch.dump()
    assert set(flows) == set(wanted)
    assert set(got_groups) == set(groups)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(flow_values(), min_size=30, max_size=60))
def test_random_flows_install_and_dump_back_as_equal_values(switch, flows):
    wanted = unique_keys(
        [f for f in flows if not any(isinstance(a, (A.Meter, A.GroupAction)) for a in f.actions)]
    )
    assert switch.install(wanted) == []
    got, _ = switch.dump()
    assert set(got) == set(wanted)


def test_a_dual_stack_gateway_chassis_flows_install_and_dump_back_as_equal_values(switch):
    """Every flow and group the gateway chassis of a dual-stack gateway gets (IPv6 routes, ND answers in
    l2_lookup, NEXT_HOP6 bindings in arp_resolve) reads back as compiled: a restart adopts them hitlessly."""
    from apps.compiler import desired_from_scratch
    from tests.test_apps_nat import GC
    from tests.test_apps_nat_ipv6 import world

    w, _p = world()
    w.neighbors["ext"]["2001:db8:ee::1"] = "02:ee:00:00:00:01"
    items = desired_from_scratch(w.topo, w.runtime, "hv1", GC, w.neighbors)
    groups = [i for i in items if isinstance(i, Group)]
    wanted = unique_keys(
        [i for i in items if isinstance(i, Flow) and not any(isinstance(a, A.Meter) for a in i.actions)]
    )
    assert any(
        "ipv6_nd_target" in dict((n, v) for n, v, _m in f.match) for f in wanted if f.stage == "l2_lookup"
    )
    assert switch.install(wanted, groups) == []
    flows, got_groups = switch.dump()
    assert set(flows) == set(wanted)
    assert set(got_groups) == set(groups)
