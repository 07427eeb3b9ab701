"""Sync engine against a real ovs-vswitchd (lab chassis) and a real os-ken listener in this process.

os-ken's AppManager is a process-wide singleton: one listener per test session (on 0.0.0.0 and a free
port, so every lab's management address reaches it); the engines are reset between tests. Switches connect
over TLS with their chassis certificates, admitted by datapath id as in the controller (`CHASSIS_DPIDS`).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from os_ken.lib.packet import ethernet, ipv4, packet, udp

from controller.pki import Pki
from controller.southbound.ofapp import OFApp, ensure_started
from controller.southbound.sync import SwitchSync
from flows import actions as A
from flows import pipeline as P
from flows.cookie import Cookie, CookieRegistry
from flows.flow import Bucket, Flow, Group
from lab import Chassis, Lab

pytestmark = pytest.mark.lab

APP_PORT, APP_NET, APP_ACL, APP_LB = 1, 2, 3, 4
TUN_PORT = 4000
VTEPS = [f"10.250.0.{i}" for i in range(20, 28)]


def port_cookie(i: int) -> Cookie:
    return Cookie.for_owner(APP_PORT, f"port-{i}")


def pipeline_flows(
    n_ports: int, ports_per_net: int = 20, base_port: int = 100, generation: int = 0
) -> list[Flow | Group]:
    """Flows (and groups) shaped like the real pipeline's for `n_ports` logical ports: ~11 flows a port
    through every stage (classify, port security, conntrack ACLs, ARP responder, l2 lookup, dispatch to
    a local port or a tunnel, output), plus per-network flood groups and a load-balancer select group."""
    out: list[Flow | Group] = []
    nets: dict[int, list[int]] = {}
    for i in range(n_ports):
        net = 1 + i // ports_per_net
        key = 1 + i
        ofport = base_port + i
        mac = f"02:{net & 0xFF:02x}:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"
        ip = f"10.{(net >> 8) & 0xFF}.{net & 0xFF}.{2 + i % ports_per_net}"
        ck = Cookie.for_owner(APP_PORT, f"port-{i}", generation)
        ack = Cookie.for_owner(APP_ACL, f"port-{i}", generation)
        local = i % 4 != 3  # every fourth port lives on another chassis
        nets.setdefault(net, []).append(ofport if local else -1)
        md = {"metadata": net}
        if local:
            out += [
                Flow(
                    "classify",
                    P.MATCH,
                    {"in_port": ofport},
                    [
                        A.WriteMetadata(net),
                        A.load("reg6", key),
                        A.load("reg5", key & 0xFFFF),
                        A.Goto("port_sec_in"),
                    ],
                    ck,
                ),
                Flow(
                    "port_sec_in",
                    P.MATCH,
                    {"reg6": key, "eth_src": mac, "eth_type": 0x0800, "ipv4_src": ip},
                    [A.Goto("plugin_from_port")],
                    ck,
                ),
                Flow(
                    "port_sec_in",
                    P.MATCH,
                    {"reg6": key, "eth_src": mac, "eth_type": 0x0806, "arp_spa": ip, "arp_sha": mac},
                    [A.Goto("plugin_from_port")],
                    ck,
                ),
                Flow(
                    "acl_egress",
                    P.MATCH(10),
                    {"reg6": key, "eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 22, "ct_state": (0x21, 0x21)},
                    [A.CT(commit=True, zone="reg5"), A.Goto("arp_nd")],
                    ack,
                ),
                Flow(
                    "acl_ingress",
                    P.MATCH(10),
                    {
                        "reg7": key,
                        "eth_type": 0x0800,
                        "ip_proto": 6,
                        "tcp_dst": 80 + i % 7,
                        "ct_state": (0x21, 0x21),
                    },
                    [A.CT(commit=True, zone="reg5"), A.Goto("plugin_to_port")],
                    ack,
                ),
                Flow("egress_dispatch", P.MATCH, {"reg7": key}, [A.Goto("acl_ingress")], ck),
                Flow("output", P.MATCH, {"reg7": key}, [A.Output(ofport)], ck),
            ]
        else:
            out.append(
                Flow(
                    "egress_dispatch",
                    P.MATCH,
                    {"reg7": key},
                    [
                        A.SetField("tunnel_id", net),
                        A.SetField("tun_ipv4_dst", VTEPS[i % len(VTEPS)]),
                        A.Output(TUN_PORT),
                    ],
                    ck,
                )
            )
        out += [
            Flow(
                "arp_nd",
                P.MATCH,
                {**md, "eth_type": 0x0806, "arp_op": 1, "arp_tpa": ip},
                [
                    A.Move("eth_src", "eth_dst", 48),
                    A.SetField("eth_src", mac),
                    A.SetField("arp_op", 2),
                    A.Move("arp_sha", "arp_tha", 48),
                    A.SetField("arp_sha", mac),
                    A.Move("arp_spa", "arp_tpa", 32),
                    A.SetField("arp_spa", ip),
                    A.load("reg10", 1, P.ALLOW_LOOPBACK.bit, P.ALLOW_LOOPBACK.bit),
                    A.Output(A.IN_PORT),
                ],
                ck,
            ),
            Flow(
                "l2_lookup",
                P.MATCH,
                {**md, "eth_dst": mac},
                [A.load("reg7", key), A.Goto("egress_dispatch")],
                ck,
            ),
            Flow(
                "dhcp",
                P.MATCH,
                {**md, "reg6": key, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 67},
                [A.Controller(max_len=0xFFFF)],
                ck,
            ),
        ]
    for net, ports in nets.items():
        nck = Cookie.for_owner(APP_NET, f"net-{net}", generation)
        buckets = [Bucket((A.Output(p),)) for p in ports if p > 0]
        buckets.append(
            Bucket(
                (
                    A.SetField("tunnel_id", net),
                    A.SetField("tun_ipv4_dst", VTEPS[net % len(VTEPS)]),
                    A.Output(TUN_PORT),
                )
            )
        )
        out += [
            Group(net, "all", tuple(buckets)),
            Flow(
                "classify",
                P.MATCH,
                {"in_port": TUN_PORT, "tunnel_id": net},
                [
                    A.WriteMetadata(net),
                    A.load("reg10", 1, P.FROM_TUNNEL.bit, P.FROM_TUNNEL.bit),
                    A.Goto("l2_lookup"),
                ],
                nck,
            ),
            Flow(
                "l2_lookup",
                P.LOW,
                {"metadata": net, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
                [A.GroupAction(net)],
                nck,
            ),
            Flow(
                "acl_egress",
                P.MATCH(1),
                {"metadata": net, "eth_type": 0x0800, "ct_state": (0, 0x20)},
                [A.CT(zone="reg5", table="acl_egress")],
                nck,
            ),
            Flow(
                "acl_egress",
                P.MATCH(2),
                {"metadata": net, "eth_type": 0x0800, "ct_state": (0x22, 0x22)},
                [A.Goto("arp_nd")],
                nck,
            ),
        ]
    lb = Cookie.for_owner(APP_LB, "lb-1", generation)
    vip_group = 0x10000
    out += [
        Group(
            vip_group,
            "select",
            tuple(
                Bucket(
                    (
                        A.CT(
                            commit=True,
                            zone=7,
                            table="l2_lookup",
                            nat=A.NAT("dst", f"10.0.1.{m}", port_min=8080),
                        ),
                    ),
                    weight=1,
                )
                for m in range(2, 5)
            ),
        ),
        Flow(
            "lb",
            P.MATCH,
            {"metadata": 1, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.1.100", "tcp_dst": 80},
            [A.GroupAction(vip_group)],
            lb,
        ),
    ]
    defaults = Cookie.for_owner(APP_NET, "pipeline", generation)
    for st in P.STAGES:
        nxt = sorted((s for s in st.next if P.table_of(s) > st.table), key=P.table_of)
        acts = [A.Goto(nxt[0])] if nxt and st.name not in ("classify", "port_sec_in") else []
        out.append(Flow(st.name, P.DEFAULT, {}, acts, defaults))
    return out


def flows_only(items: list[Flow | Group]) -> list[Flow]:
    return [f for f in items if isinstance(f, Flow)]


# --- fixtures --------------------------------------------------------------------------------------------


CHASSIS_DPIDS: dict[str, int] = {}  # chassis name -> datapath id, for the listener's identity check


_pki: list[Pki] = []


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One CA for the session's one listener, also where other modules import this fixture (pytest would
    otherwise make one per importing module)."""
    if not _pki:
        authority = Pki(tmp_path_factory.mktemp("sync-pki"))
        authority.init()
        _pki.append(authority)
    return _pki[0]


@pytest.fixture(scope="session")
def ofapp(pki: Pki) -> OFApp:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    app = ensure_started("0.0.0.0", port, tls=pki.ensure_controller([]))
    app.authorize = lambda dpid, chassis: None if CHASSIS_DPIDS.get(chassis) == dpid else "wrong_datapath_id"
    return app


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[Lab]:
    with Lab(pki=pki) as lab:
        yield lab


def of_port(app: OFApp) -> int:
    from os_ken import cfg

    return int(cfg.CONF.ofp_tcp_listen_port)


def wait_for(cond, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Switch:
    """A lab chassis whose br-int is connected to the in-process os-ken."""

    def __init__(self, lab: Lab, app: OFApp, name: str) -> None:
        self.lab, self.app = lab, app
        self.ch: Chassis = lab.add_chassis(name)
        self.dpid = self.ch.datapath_id
        CHASSIS_DPIDS[name] = self.dpid
        self.target = f"ssl:{lab.mgmt_ip}:{of_port(app)}"

    def connect(self) -> None:
        self.ch.set_controller(self.target)
        self.wait_connected()

    def wait_connected(self) -> None:
        wait_for(lambda: self.app.registry.get(self.dpid) is not None, 20, f"{self.ch.name} to connect")

    def disconnect(self) -> None:
        """Point br-int at a dead target: the connection drops, the flows stay (fail_mode=secure)."""
        dead = socket.socket()
        dead.bind((self.lab.mgmt_ip, 0))
        port = dead.getsockname()[1]
        dead.close()
        self.ch.set_controller(f"tcp:{self.lab.mgmt_ip}:{port}")
        wait_for(lambda: self.app.registry.get(self.dpid) is None, 20, f"{self.ch.name} to disconnect")

    def reconnect(self) -> None:
        """Drop the connection and come back. The Controller row is made with its options in one
        transaction: changing them afterwards makes vswitchd reconnect once more, later (seen in CI as a
        dump cut short in the next test)."""
        self.disconnect()
        self.ch.set_controller(self.target)
        self.wait_connected()

    def flow_lines(self) -> list[str]:
        return self.ch.dump_flows()

    def n_packets(self, needle: str) -> int:
        return sum(int(ln.split("n_packets=")[1].split(",")[0]) for ln in self.flow_lines() if needle in ln)


@pytest.fixture(scope="module")
def sw(lab: Lab, ofapp: OFApp) -> Switch:
    s = Switch(lab, ofapp, "s1")
    s.connect()
    return s


@pytest.fixture(autouse=True)
def fresh_engines(ofapp: OFApp) -> Iterator[None]:
    ofapp.sync.reset()
    yield
    ofapp.sync.reset()


def engine(app: OFApp, sw: Switch) -> SwitchSync:
    return app.sync.get(sw.dpid)


def install(app: OFApp, sw: Switch, items: list[Flow | Group], revision: int = 1) -> SwitchSync:
    eng = engine(app, sw)
    eng.replace_desired(items, revision)
    assert eng.wait_realized(revision, 30), f"revision {revision} not realized: {eng.stats}"
    return eng


def clean_switch(sw: Switch) -> None:
    sw.ch.ofctl("del-flows", "br-int")
    sw.ch.ofctl("del-groups", "br-int")


# --- tests -----------------------------------------------------------------------------------------------


def test_replace_desired_installs_exactly_the_desired_flows(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    items = pipeline_flows(40)
    flows = flows_only(items)
    assert 300 <= len(flows) <= 600
    dp = ofapp.registry.get(sw.dpid)
    eng = install(ofapp, sw, items)
    if ofapp.registry.get(sw.dpid) is not dp:
        # the switch's connection was replaced during the install (seen once in CI, right after the module's
        # switch connected; cause not found): the engine resynced, right, but the counts below are of one
        # connection: once more on this one
        print(f"the switch reconnected during the install ({eng.stats}); once more")
        ofapp.sync.reset()
        clean_switch(sw)
        dp = ofapp.registry.get(sw.dpid)
        eng = install(ofapp, sw, items)
        assert ofapp.registry.get(sw.dpid) is dp, "the switch reconnected twice"
    # decoded dump == desired, both ways, and nothing undecodable
    diff = eng.verify()
    assert diff.clean, (list(diff.missing)[:3], list(diff.unexpected)[:3], diff.undecodable[:3])
    # ovs-ofctl sees the same number of flows and groups, with our cookies
    lines = sw.flow_lines()
    assert len(lines) == len(flows)
    assert {int(ln.split("cookie=")[1].split(",")[0], 16) for ln in lines} == {f.cookie for f in flows}
    groups = [ln for ln in sw.ch.ofctl("dump-groups", "br-int").splitlines() if "group_id=" in ln]
    assert len(groups) == len(items) - len(flows)
    assert eng.installed() == frozenset(items)
    st = eng.stats
    assert st.bundles_sent == 1 and st.flow_mods_sent == len(flows) and st.resyncs == 1
    text = eng.dump_text()
    assert "table=60(l2_lookup)" in text and "goto_table:100(egress_dispatch)" in text
    live = eng.dump_text(live=True)
    assert "n_packets=0" in live and len(live.splitlines()) == len(items)


def test_connect_sweeps_unknown_and_stale_and_adopts_desired(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    items = pipeline_flows(8)
    flows = flows_only(items)
    eng = install(ofapp, sw, items)
    ofapp.sync.reset()
    sw.disconnect()
    # behind our back: a foreign flow, a flow in an undeclared table, and one of ours that is no longer desired
    sw.ch.ofctl("add-flow", "br-int", "table=0,priority=1234,in_port=77,actions=drop")
    sw.ch.ofctl("add-flow", "br-int", "table=5,priority=1,actions=drop")
    stale = flows[0]
    sw.ch.ofctl("del-flows", "br-int", "--strict", "table=0,priority=1000,in_port=100")
    sw.ch.ofctl(
        "add-flow",
        "br-int",
        f"cookie={stale.cookie:#x},table=0,priority=1000,in_port=100,"
        "actions=write_metadata:0x1,goto_table:10",
    )
    # groups behind our back: one we want but with content no Group describes (note action), one foreign
    # and undecodable, one foreign and decodable
    sw.ch.ofctl("mod-group", "br-int", "group_id=1,type=all,bucket=actions=note:01,output:100")
    sw.ch.ofctl("add-group", "br-int", "group_id=555,type=all,bucket=actions=note:02,output:1")
    sw.ch.ofctl("add-group", "br-int", "group_id=556,type=indirect,bucket=actions=output:2")
    before = set(sw.flow_lines())
    desired = items[1:]
    eng = engine(ofapp, sw)
    eng.replace_desired(desired, 1)
    sw.reconnect()
    assert eng.wait_realized(1, 30), eng.stats
    st = eng.stats
    # exactly three deletes: the foreign flow, the table-5 flow and the stale (changed) flow of ours
    assert st.flow_mods_sent == 3 == st.last_resync_flow_mods, st
    # and three group-mods: group 1 overwritten (MODIFY), 555 and 556 deleted
    assert st.group_mods_sent == 3 == st.last_resync_group_mods, st
    groups = sw.ch.ofctl("dump-groups", "br-int")
    assert "note" not in groups and "group_id=555" not in groups and "group_id=556" not in groups, groups
    after = sw.flow_lines()
    assert not any("in_port=77" in ln or "table=5," in ln for ln in after)
    assert not any("in_port=100 " in ln for ln in after)
    assert len(after) == len(flows) - 1
    # the adopted flows were not re-sent: their duration kept counting (no re-add)
    kept = [
        ln for ln in before if "in_port=77" not in ln and "table=5," not in ln and "in_port=100 " not in ln
    ]
    assert {strip_counters(ln) for ln in kept} == {strip_counters(ln) for ln in after}
    assert eng.verify().clean


def strip_counters(line: str) -> str:
    return ",".join(
        p
        for p in line.split(",")
        if not p.strip().startswith(("duration=", "n_packets=", "n_bytes=", "idle_age="))
    )


def test_controller_restart_is_hitless(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    vm = (
        sw.ch.add_vm("h1", "02:00:00:00:aa:01", "10.99.0.1/24", "p-h1")
        if "h1" not in sw.ch.vms
        else sw.ch.vms["h1"]
    )
    items = pipeline_flows(8)
    # a flow that counts the VM's packets
    counter = Flow("classify", P.HIGH, {"in_port": vm.ofport}, [], Cookie.for_owner(APP_PORT, "vm-h1"))
    items.append(counter)
    install(ofapp, sw, items)
    vm.ping("10.99.0.2", count=2, timeout=1)
    hits = sw.n_packets(f"in_port={vm.port_name}") or sw.n_packets(f"in_port={vm.ofport}")
    assert hits > 0
    # "restart": a fresh engine with the same desired state, while connected, then a reconnect
    ofapp.sync.reset()
    eng = engine(ofapp, sw)
    eng.replace_desired(pipeline_flows(8) + [counter], 7)
    assert eng.wait_realized(7, 30)
    sw.reconnect()
    wait_for(lambda: eng.stats.resyncs >= 2, 20, "resync after reconnect")
    st = eng.stats
    assert st.flow_mods_sent == 0 and st.group_mods_sent == 0 and st.bundles_sent == 0, st
    assert st.last_resync_flow_mods == 0
    assert (sw.n_packets(f"in_port={vm.port_name}") or sw.n_packets(f"in_port={vm.ofport}")) >= hits
    assert eng.realized_revision == 7


def test_a_resync_after_deltas_adopts_everything_through_the_kept_and_patched_index(
    ofapp: OFApp, sw: Switch
) -> None:
    """The engine's index (transport.ExpectedIndex) is built once per desired state and patched with
    each delta's keys: after flows added, changed and removed by apply(), a reconnect's resync still
    recognises every entry by its bytes (none decoded the slow way), sends nothing, and builds nothing."""
    clean_switch(sw)
    eng = engine(ofapp, sw)
    builds = eng.stats.index_builds
    eng = install(ofapp, sw, pipeline_flows(8), revision=200)
    wait_for(lambda: eng.stats.index_builds > builds, 20, "the idle engine's index build")
    builds = eng.stats.index_builds
    ck = Cookie.for_owner(APP_PORT, "kept-index")
    new = [Flow("output", P.MATCH, {"reg7": 4000 + i}, [A.Output(40 + i)], ck) for i in range(6)]
    eng.apply(new, [], 201)
    changed = Flow("output", P.MATCH, {"reg7": 4000}, [A.Output(99)], ck)  # same key, other bytes
    eng.apply([changed], [new[1]], 202)
    assert eng.wait_realized(202, 10)
    resyncs = eng.stats.resyncs
    sw.reconnect()
    wait_for(lambda: eng.stats.resyncs > resyncs, 20, "resync after reconnect")
    st = eng.stats
    n_flows = sum(1 for x in eng.desired() if isinstance(x, Flow))
    assert st.last_resync_flow_mods == 0 and st.last_resync_group_mods == 0, st
    assert st.last_dump_entries == n_flows and st.last_dump_slow == 0, st
    assert st.index_builds == builds, st  # patched, not built again
    assert any("reg7=0xfa0 actions=output:99" in ln for ln in sw.flow_lines())
    assert eng.verify().clean


class _Reconnected(Exception):
    """The switch's connection was replaced during a step (vswitchd or a loaded machine dropped it)."""


def test_apply_deltas_one_bundle_each(ofapp: OFApp, sw: Switch) -> None:
    """Each delta is one bundle while the connection holds. A reconnect makes the engine resync (dump, adopt,
    one more bundle for whatever the cut-off bundle left undone: right, but not the count asserted here):
    then the whole sequence runs once more on the new connection. A resync without a reconnect fails."""
    try:
        _deltas_one_bundle_each(ofapp, sw)
    except _Reconnected as e:
        print(f"the switch reconnected during the sequence ({e}); once more")
        ofapp.sync.reset()
        _deltas_one_bundle_each(ofapp, sw)


def _deltas_one_bundle_each(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    items = pipeline_flows(8)
    eng = install(ofapp, sw, items, revision=10)
    dp = ofapp.registry.get(sw.dpid)
    resyncs = eng.stats.resyncs

    def steady() -> None:
        """No resync since the install; raises _Reconnected if the connection changed meanwhile."""
        st = eng.stats
        if ofapp.registry.get(sw.dpid) is not dp:
            raise _Reconnected(str(st))
        assert st.resyncs == resyncs, f"a resync without a reconnect: {st}"

    base = eng.stats
    ck = Cookie.for_owner(APP_PORT, "extra")
    new = [Flow("output", P.MATCH, {"reg7": 1000 + i}, [A.Output(500 + i)], ck) for i in range(5)]
    # add
    eng.apply(new, [], 11)
    assert eng.wait_realized(11, 10), eng.stats
    assert eng.realized_revision == 11
    st = eng.stats
    steady()
    assert (st.bundles_sent - base.bundles_sent, st.flow_mods_sent - base.flow_mods_sent) == (1, 5), st
    # modify (same match+priority, new actions) and remove
    changed = Flow("output", P.MATCH, {"reg7": 1000}, [A.Output(600)], ck)
    eng.apply([changed], [new[0], new[1]], 12)
    assert eng.wait_realized(12, 10), eng.stats
    st2 = eng.stats
    steady()
    assert (st2.bundles_sent - st.bundles_sent, st2.flow_mods_sent - st.flow_mods_sent) == (1, 2), st2
    lines = sw.flow_lines()
    assert any("reg7=0x3e8 actions=output:600" in ln for ln in lines), lines
    assert not any("reg7=0x3e9 " in ln for ln in lines)
    # group modify: the flood group of network 1 loses a bucket
    g1 = next(g for g in items if isinstance(g, Group) and g.group_id == 1)
    g1b = Group(1, "all", g1.buckets[1:])
    eng.apply([g1b], [g1], 13)
    assert eng.wait_realized(13, 10), eng.stats
    st3 = eng.stats
    steady()
    assert (st3.bundles_sent - st2.bundles_sent, st3.group_mods_sent - st2.group_mods_sent) == (1, 1), st3
    dump = sw.ch.ofctl("dump-groups", "br-int")
    line = next(ln for ln in dump.splitlines() if "group_id=1," in ln)
    assert line.count("bucket=") == len(g1.buckets) - 1
    # a new group and the flow using it in one delta; then both removed in one delta
    g = Group(77, "indirect", (Bucket((A.Output(9),)),))
    user = Flow("output", P.MATCH, {"reg7": 2000}, [A.GroupAction(77)], ck)
    eng.apply([user, g], [], 14)
    assert eng.wait_realized(14, 10), eng.stats
    steady()
    assert eng.stats.bundles_sent - st3.bundles_sent == 1, eng.stats
    eng.apply([], [g, user], 15)
    assert eng.wait_realized(15, 10), eng.stats
    steady()
    assert eng.stats.bundles_sent - st3.bundles_sent == 2, eng.stats
    # coalescing: many deltas while a bundle is in flight become few bundles; all end realized
    before = eng.stats.bundles_sent
    for i in range(50):
        eng.apply([Flow("output", P.MATCH, {"reg7": 3000 + i}, [A.Output(7)], ck)], [], 16 + i)
    assert eng.wait_realized(65, 10), eng.stats
    steady()
    assert eng.stats.bundles_sent - before <= 50, eng.stats
    assert eng.verify().clean
    # a full replace while in sync sends only the difference: 3 flows dropped, 1 changed, 1 group dropped
    current = sorted(eng.desired(), key=repr)
    flows = [f for f in current if isinstance(f, Flow)]
    changed = Flow(flows[3].stage, flows[3].priority, flows[3].match, [], flows[3].cookie)
    vip = next(g for g in current if isinstance(g, Group) and g.group_id == 0x10000)
    users = [f for f in flows if A.GroupAction(vip.group_id) in f.actions]
    keep = [x for x in current if x not in flows[:4] and x is not vip and x not in users] + [changed]
    st = eng.stats
    eng.replace_desired(keep, 100)
    assert eng.wait_realized(100, 10), eng.stats
    st2 = eng.stats
    steady()
    assert st2.bundles_sent - st.bundles_sent == 1, st2
    assert st2.flow_mods_sent - st.flow_mods_sent == 3 + 1 + len(users)
    assert st2.group_mods_sent - st.group_mods_sent == 1
    assert eng.verify().clean and eng.installed() == frozenset(keep)


def test_vswitchd_restart_reinstalls_everything(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    items = pipeline_flows(40)
    eng = install(ofapp, sw, items)
    n = len(sw.flow_lines())
    sw.ch.restart_vswitchd()
    t0 = time.monotonic()
    wait_for(
        lambda: eng.stats.resyncs >= 2 and eng.realized_revision == 1 and len(sw.flow_lines()) == n,
        10,
        "flows back after vswitchd restart",
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 10
    assert eng.stats.last_resync_flow_mods == n
    assert eng.verify().clean


def test_bad_flow_is_an_error_and_the_next_good_revision_is_realized(
    ofapp: OFApp, sw: Switch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_switch(sw)
    items = pipeline_flows(4)
    eng = install(ofapp, sw, items, revision=20)
    ck = Cookie.for_owner(APP_PORT, "bad")
    bad = Flow("output", P.MATCH, {"reg7": 4242}, [A.GroupAction(9999)], ck)  # no such group
    good = Flow("output", P.MATCH, {"reg7": 4243}, [A.Output(3)], ck)
    with caplog.at_level("ERROR", logger="controller.southbound"):
        eng.apply([bad, good], [], 21)
        assert not eng.wait_realized(21, 3)
    assert eng.realized_revision == 20
    assert eng.stats.bundles_failed >= 1
    text = caplog.text
    assert "OFPBAC_BAD_OUT_GROUP" in text and "reg7=0x1092" in text and "group:9999" in text, text
    # atomic: the good flow of the failed bundle is not on the switch either
    assert not any("reg7=0x1093" in ln for ln in sw.flow_lines())
    eng.apply([], [bad], 22)
    assert eng.wait_realized(22, 15), eng.stats
    assert any("reg7=0x1093" in ln for ln in sw.flow_lines())
    assert eng.verify().clean


def test_registry_names_owners_in_dump_text(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    reg = CookieRegistry()
    reg.register_app(APP_PORT, "port")
    reg.register(APP_PORT, "port-0")
    ofapp.sync.registry = reg
    try:
        install(ofapp, sw, pipeline_flows(2))
        text = ofapp.sync.dump_text(sw.dpid)
        assert "# port/port-0" in text
    finally:
        ofapp.sync.registry = None


def test_realized_revision_waits_while_disconnected(ofapp: OFApp, sw: Switch) -> None:
    clean_switch(sw)
    eng = install(ofapp, sw, pipeline_flows(2), revision=30)
    sw.disconnect()
    extra = Flow("output", P.MATCH, {"reg7": 7777}, [A.Output(5)], Cookie.for_owner(APP_PORT, "late"))
    eng.apply([extra], [], 31)  # returns at once: nothing is sent while the switch is away
    assert not eng.wait_realized(31, 1.5)
    assert eng.realized_revision == 30 and not eng.connected
    assert not any("reg7=0x1e61" in ln for ln in sw.flow_lines())
    sw.reconnect()
    assert eng.wait_realized(31, 15), eng.stats
    assert any("reg7=0x1e61" in ln for ln in sw.flow_lines())
    assert eng.stats.last_resync_flow_mods == 1  # only the missing flow: the rest was adopted


def test_verify_reports_drift_without_changing_anything_and_resync_repairs_it(
    ofapp: OFApp, sw: Switch
) -> None:
    clean_switch(sw)
    items = pipeline_flows(4)
    eng = install(ofapp, sw, items, revision=40)
    gone = flows_only(items)[0]  # classify in_port=100
    sw.ch.ofctl("del-flows", "br-int", "--strict", "table=0,priority=1000,in_port=100")
    sw.ch.ofctl("add-flow", "br-int", "table=120,priority=100,actions=drop")  # decodable, foreign cookie
    sw.ch.ofctl("add-flow", "br-int", "table=120,priority=1,actions=drop")  # priority in no band: undecodable
    before = eng.stats
    diff = eng.verify()
    assert diff.missing == {gone}
    assert {(f.stage, f.priority, f.cookie) for f in diff.unexpected} == {("output", 100, 0)}  # type: ignore[union-attr]
    assert len(diff.undecodable) == 1 and "priority=1," in diff.undecodable[0]
    assert eng.stats.flow_mods_sent == before.flow_mods_sent  # verify sends nothing
    assert not any("in_port=100 " in ln for ln in sw.flow_lines())
    eng.request_resync()
    wait_for(lambda: eng.stats.resyncs > before.resyncs, 10, "resync")
    assert eng.stats.last_resync_flow_mods == 3  # re-add one, delete two; the rest adopted
    assert eng.verify().clean


def test_verify_leaves_out_what_changed_while_it_dumped_and_still_reports_real_drift(
    ofapp: OFApp, sw: Switch
) -> None:
    """A write realized while verify()'s dump runs is not drift (the dump may show either side of it); a
    flow deleted behind our back meanwhile still is; a whole new desired state meanwhile gives no verdict."""
    clean_switch(sw)
    items = pipeline_flows(4)
    eng = install(ofapp, sw, items, revision=42)
    flows = flows_only(items)
    old = flows[1]
    new = dataclasses.replace(old, actions=())  # same key, now a drop
    extra = Flow("output", P.MATCH, {"reg7": 4242}, [A.Output(5)], Cookie.for_owner(APP_PORT, "mid-dump"))
    gone = flows[0]  # classify in_port=100
    dump = eng._dump
    during: list[Callable[[], None]] = []

    def dump_then_write(timeout: float, t: Any = None) -> Any:
        have = dump(timeout, t)  # the switch answered before the write below
        for step in during:
            step()
        return have

    eng._dump = dump_then_write  # type: ignore[method-assign]

    def write() -> None:
        eng.apply([new, extra], [old], 43)
        assert eng.wait_realized(43, 10), eng.stats

    during.append(write)
    diff = eng.verify()
    assert diff.settled and diff.clean, (diff.missing, diff.unexpected)
    # the same race, with a flow deleted behind our back before the dump: that one is reported
    sw.ch.ofctl("del-flows", "br-int", "--strict", "table=0,priority=1000,in_port=100")
    during[:] = [lambda: (eng.apply([old], [new], 44), eng.wait_realized(44, 10))]
    diff = eng.verify()
    assert diff.settled and diff.missing == {gone} and not diff.unexpected
    # a new whole desired state while it dumps: no verdict
    during[:] = [lambda: eng.replace_desired(items, 45)]
    diff = eng.verify()
    assert not diff.settled and not diff.clean
    eng._dump = dump  # type: ignore[method-assign]
    eng.request_resync()
    assert eng.wait_realized(45, 10)
    wait_for(lambda: eng.verify().clean, 10, "repaired")


def test_flush_zones_empties_exactly_those_conntrack_zones_after_the_next_bundle(
    ofapp: OFApp, sw: Switch
) -> None:
    """flush_zones: NXT_CT_FLUSH_ZONE goes after the next bundle; the named zone's connections are gone, the
    others' stay."""
    clean_switch(sw)
    eng = install(ofapp, sw, pipeline_flows(2), revision=46)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="02:00:00:00:00:02", src="02:00:00:00:00:01"))
    pkt.add_protocol(ipv4.ipv4(src="10.9.0.1", dst="10.9.0.2", proto=17))
    pkt.add_protocol(udp.udp(src_port=1234, dst_port=5678))
    pkt.serialize()
    for zone in (7, 8):
        sw.ch.ofctl(
            "-O", "OpenFlow13", "packet-out", "br-int",
            f"in_port=LOCAL packet={bytes(pkt.data).hex()} actions=ct(commit,zone={zone})",
        )  # fmt: skip

    def zone_entries(zone: int) -> list[str]:
        out = sw.ch.appctl("dpctl/dump-conntrack", f"zone={zone}")
        return [ln for ln in out.splitlines() if "10.9.0.1" in ln]

    assert zone_entries(7) and zone_entries(8)
    before = eng.stats
    eng.flush_zones([7])
    wait_for(lambda: not zone_entries(7), 10, "zone 7 flushed")
    assert zone_entries(8)  # only the zone asked for
    assert eng.stats.flow_mods_sent == before.flow_mods_sent and eng.stats.bundles_failed == 0
    # a flush the switch refuses (OVS refuses zone 0) is logged and dropped: no resync over it
    eng.flush_zones([0])
    eng.apply([], [], 47)
    assert eng.wait_realized(47, 10)
    extra = Flow("output", P.MATCH, {"reg7": 4747}, [A.Output(5)], Cookie.for_owner(APP_PORT, "after"))
    eng.apply([extra], [], 48)  # the sender thread is past the refused flush once this is realized
    assert eng.wait_realized(48, 10)
    assert eng.stats.resyncs == before.resyncs and eng.stats.bundles_failed == 0
    assert zone_entries(8) and eng.verify().clean


def test_activity_fingerprint_moves_with_packets_foreign_flows_and_our_bundles(
    ofapp: OFApp, sw: Switch
) -> None:
    """activity(): the switch's aggregate (packets, bytes, flows) and our bundles; equal while nothing moves
    (metrics and drift skip their dumps on it), different after a packet, a flow added behind our back, or
    a bundle of ours."""
    clean_switch(sw)
    items = pipeline_flows(4)
    eng = install(ofapp, sw, items, revision=45)
    a = eng.activity()
    assert a[2] == len(flows_only(items)) and a[:2] == (0, 0)
    assert eng.activity() == a
    sw.ch.ofctl("add-flow", "br-int", "table=0,priority=1,actions=drop")  # not ours: the count moves
    b = eng.activity()
    assert b[2] == a[2] + 1 and b[:2] == a[:2] and b[3:] == a[3:]
    # one packet through the pipeline (from LOCAL: only the drop flow above matches it)
    frame = (
        "ffffffffffff" + "020000000001" + "0800" + "45000014000000004011" + "0000" + "0a000001" + "0a000002"
    )
    sw.ch.ofctl("packet-out", "br-int", "LOCAL", "resubmit(,0)", frame)
    wait_for(lambda: eng.activity()[0] == 1, 5, "the packet counted")
    c = eng.activity()
    assert c[1] == len(frame) // 2 and c[2:] == b[2:]
    extra = Flow("output", P.MATCH, {"reg7": 4545}, [A.Output(5)], Cookie.for_owner(APP_PORT, "fp"))
    eng.apply([extra], [], 46)
    assert eng.wait_realized(46, 15)
    d = eng.activity()
    assert d[2] == c[2] + 1 and d[3:] != c[3:]  # a bundle of ours, realized


def test_a_dump_cut_short_by_a_reconnect_is_taken_on_the_new_connection(ofapp: OFApp, sw: Switch) -> None:
    """verify() while the switch reconnects: the old connection's dump fails, the new one answers."""
    clean_switch(sw)
    items = pipeline_flows(2)
    eng = install(ofapp, sw, items, revision=50)
    old = eng._transport
    assert old is not None
    old.close()  # the connection's death as the engine first notices it: its dump fails at once
    mover = threading.Thread(target=sw.reconnect)
    mover.start()
    try:
        diff = eng.verify()
    finally:
        mover.join(30)
    assert eng._transport is not None and eng._transport is not old
    assert diff.clean, diff


def test_restart_replaces_every_kind_of_difference_and_adopts_the_rest(ofapp: OFApp, sw: Switch) -> None:
    """A restarted controller's resync (new engine, same desired state) on a switch changed behind its
    back: an entry that differs from the desired flow in any way but its counters (timeouts, flags,
    cookie, actions, priority) is replaced, a missing one added, an extra one deleted; nothing else sent."""
    clean_switch(sw)
    items = pipeline_flows(8)
    install(ofapp, sw, items)
    ofapp.sync.reset()
    sw.disconnect()
    lines = {
        ln.split("in_port=")[1].split(" ")[0]: strip_counters(ln)
        for ln in sw.flow_lines()
        if "table=0," in ln and "in_port=" in ln
    }
    assert {"100", "101", "102", "104", "105", "106"} <= lines.keys(), lines

    def readd(port: str, old: str, new: str) -> None:
        line = lines[port]
        assert old in line, line
        sw.ch.ofctl("add-flow", "br-int", line.replace(old, new, 1))

    readd("100", "priority=", "idle_timeout=300,priority=")
    readd("101", "priority=", "hard_timeout=300,priority=")
    sw.ch.ofctl(
        "mod-flows", "br-int", "--strict", "table=0,priority=1000,in_port=102,actions=drop"
    )  # actions
    cookie = lines["104"].split("cookie=")[1].split(",")[0]
    readd("104", f"cookie={cookie}", f"cookie={int(cookie, 16) ^ 1:#x}")  # the cookie
    sw.ch.ofctl("del-flows", "br-int", "--strict", "table=0,priority=1000,in_port=105")
    readd("105", "priority=1000", "priority=1001")  # the priority (the one at 1000 is missing)
    sw.ch.ofctl("del-flows", "br-int", "--strict", "table=0,priority=1000,in_port=106")  # missing
    extra = lines["106"].replace("in_port=106", "in_port=107", 1)  # ours by its cookie, not desired
    sw.ch.ofctl("add-flow", "br-int", extra)
    changed = sw.flow_lines()
    assert sum("timeout=300" in ln for ln in changed) == 2 and any("in_port=107" in ln for ln in changed)
    eng = engine(ofapp, sw)
    eng.replace_desired(items, 3)
    sw.reconnect()
    assert eng.wait_realized(3, 30), eng.stats
    st = eng.stats
    # 100, 101: delete + add each; 102, 104: add (replaces); 105: delete 1001 + add 1000; 106: add; 107: delete
    assert st.last_resync_flow_mods == st.flow_mods_sent == 10, st
    # the six changed or extra entries were decoded the slow way; every other one recognised by its bytes
    assert st.last_dump_slow == 6 and st.last_dump_reordered == 0 and st.group_mods_sent == 0, st
    after = {strip_counters(ln) for ln in sw.flow_lines()}
    assert {lines[p] for p in ("100", "101", "102", "104", "105", "106")} <= after
    heads = [ln.split(" actions=")[0] for ln in after]  # (actions may hold a learn's timeouts)
    assert not [h for h in heads if "timeout=" in h or "in_port=107" in h or "priority=1001,in_port=105" in h]
    assert len(after) == len(flows_only(items))
    assert eng.verify().clean


def test_counter_dump_reads_every_entry_by_offset_and_folds_as_the_decoded_dump(
    ofapp: OFApp, sw: Switch
) -> None:
    """SwitchSync.counters (metrics: no entry decoded) against flow_stats (every entry decoded) on the same
    switch: every entry's owner bytes seen, the entries with counters reported as moved with their cookie
    and counts, nothing moved on a second scan without traffic, only the hit flow after one more packet;
    and FlowCounters over either gives the same per-owner totals."""
    from types import SimpleNamespace

    from controller.debug.metrics import Metrics

    clean_switch(sw)
    hit = Flow("classify", P.LOW, {"in_port": 0xFFFFFFFE}, [], Cookie.for_owner(APP_PORT, "counted"))
    items = [*pipeline_flows(4), hit]
    eng = install(ofapp, sw, items, revision=47)
    frame = (
        "ffffffffffff" + "020000000001" + "0800" + "45000014000000004011" + "0000" + "0a000001" + "0a000002"
    )

    def send() -> None:
        before = eng.activity()[0]
        sw.ch.ofctl("packet-out", "br-int", "LOCAL", "resubmit(,0)", frame)
        wait_for(lambda: eng.activity()[0] == before + 1, 5, "the packet counted")

    send()
    decoded = {f: c for f, c in eng.flow_stats().items() if c != (0, 0)}
    assert decoded == {hit: (1, len(frame) // 2)}
    scan = eng.counters({})
    assert scan.entries == len(flows_only(items))
    assert scan.owners == {int(f.cookie).to_bytes(8, "big")[1:6] for f in flows_only(items)}
    assert [
        (c, old, int.from_bytes(new[:8], "big"), int.from_bytes(new[8:], "big")) for c, old, new in scan.moved
    ] == [(int(hit.cookie), None, 1, len(frame) // 2)]
    assert len(scan.now) == 1
    again = eng.counters(scan.now)
    assert again.moved == [] and again.now == scan.now and again.entries == scan.entries
    send()
    third = eng.counters(again.now)
    assert [(c, old) for c, old, _ in third.moved] == [(int(hit.cookie), scan.now[next(iter(scan.now))])]
    assert int.from_bytes(third.moved[0][2][:8], "big") == 2

    def totals(engine: object) -> dict[tuple[str, str, str], tuple[int, int]]:
        plane = SimpleNamespace(chassis_id="s1", datapath_id=sw.dpid, engine=engine)
        m = Metrics(None, SimpleNamespace(planes={"s1": plane}))
        m.flow_counters.collect_once()
        return m.flow_counters.totals()

    decoding = SimpleNamespace(connected=True, flow_stats=eng.flow_stats)  # no counters(): decodes the dump
    raw = totals(eng)
    assert raw == totals(decoding) and list(raw.values()) == [(2, 2 * len(frame) // 2)]
