"""The health monitor's state machine with a fake clock and fake member answers (no switch, no sleeping)."""

from __future__ import annotations

import random

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp

from apps import ids
from controller.services import health
from controller.services.health import TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, Prober, code_expected, targets
from flows.cookie import Cookie
from tests.test_apps_lb import VIP, lb_world
from topology import ops_lb
from topology.records import ERROR, ONLINE, HealthMonitor


def world(kind: str = "TCP", **kw):  # type: ignore[no-untyped-def]
    w, p = lb_world()
    w.put(
        HealthMonitor(
            id="hm", tenant="alice", pool_id="pool", type=kind, delay=5.0, timeout=2.0, max_retries=3, **kw
        )
    )
    for m in ("m1", "m2", "m3"):
        w.member(m, operating_status=ONLINE)
    return w, p


def parse(data: bytes):  # type: ignore[no-untyped-def]
    pkt = packet.Packet(data)
    return pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp), pkt


def answer(probe: bytes, flags: int, payload: bytes = b"", seq: int = 1000, ack: int | None = None) -> bytes:
    """The member's answer to `probe` (a TCP segment from the VIP), to the VIP MAC."""
    eth, ip, seg, _ = parse(probe)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(eth.src, eth.dst, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=6))
    sent = len(_payload(probe))
    pkt.add_protocol(
        tcp.tcp(
            src_port=seg.dst_port,
            dst_port=seg.src_port,
            seq=seq,
            ack=(seg.seq + 1 + sent) % (1 << 32) if ack is None else ack,
            bits=flags,
        )
    )
    if payload:
        pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def _payload(data: bytes) -> bytes:
    last = packet.Packet(data).protocols[-1]
    return bytes(last) if isinstance(last, (bytes, bytearray)) else b""


def by_member(w, sends):  # type: ignore[no-untyped-def]
    """member id -> the probe sent to it."""
    out = {}
    for s in sends:
        _eth, ip, _seg, _ = parse(s.data)
        out[next(m.id for m in w.topo.members.values() if m.address == ip.dst)] = s
    return out


def test_probes_go_from_the_vip_to_each_member_on_its_chassis_every_delay() -> None:
    w, p = world()
    prober = Prober(random.Random(1))
    sends, changes = prober.tick(100.0, targets(w.topo))
    assert changes == [] and len(sends) == 3
    for mid, s in by_member(w, sends).items():
        eth, ip, seg, _ = parse(s.data)
        port = p[mid]
        assert (eth.src, eth.dst, ip.src, ip.dst) == (p["vip"].mac, port.mac, VIP, port.fixed_ips[0][1])
        assert seg.bits == TCP_SYN and seg.dst_port == 8080
        assert (s.net_key, s.port_key) == (w.topo.networks["a"].key, port.key)
        assert s.datapath_id == w.topo.chassis[port.binding_chassis].datapath_id
    # nothing more until the delay has passed (and the answers' timeouts)
    for m_send in sends:
        prober.on_packet(answer(m_send.data, TCP_SYN | TCP_ACK))
    assert prober.tick(104.9, targets(w.topo))[0] == []
    assert len(prober.tick(105.0, targets(w.topo))[0]) == 3


def test_a_silent_member_is_error_after_max_retries_and_online_after_as_many_successes() -> None:
    w, _p = world()
    prober = Prober(random.Random(2))
    t, got = 0.0, []
    silent = True
    history = []
    while t < 60:
        sends, changes = prober.tick(t, targets(w.topo))
        for s in sends:
            mid = next(m.id for m in w.topo.members.values() if m.address == parse(s.data)[1].dst)
            if parse(s.data)[2].bits & TCP_SYN and not (mid == "m2" and silent):
                prober.on_packet(answer(s.data, TCP_SYN | TCP_ACK))
        changes += prober.take_changes()
        for mid, status in changes:
            got.append((t, mid, status))
            w.apply(ops_lb.set_operating_status(w.topo, "member", mid, status, w.rev + 1, t))
        history.append((t, w.topo.pools["pool"].operating_status))
        if t == 29.5:
            silent = False
        t = round(t + 0.5, 1)
    # probes at 0, 5, 10 time out 2 s later: ERROR at 12 = (retries - 1) x delay + timeout
    assert got[0] == (12.0, "m2", ERROR)
    assert dict(history)[12.0] == "DEGRADED" and dict(history)[11.5] == ONLINE
    # answers again from 30: probes at 30, 35, 40 succeed -> ONLINE at 40
    assert got[1] == (40.0, "m2", ONLINE) and len(got) == 2
    assert w.topo.pools["pool"].operating_status == ONLINE


def test_tcp_rst_is_a_failure_and_a_syn_ack_is_answered_with_a_rst() -> None:
    w, _p = world()
    prober = Prober(random.Random(3))
    sends = by_member(w, prober.tick(0.0, targets(w.topo))[0])
    out = prober.on_packet(answer(sends["m1"].data, TCP_SYN | TCP_ACK))
    assert len(out) == 1 and parse(out[0].data)[2].bits & TCP_RST
    assert prober.members["m1"].ok_run == 1
    assert prober.on_packet(answer(sends["m2"].data, TCP_RST | TCP_ACK)) == []
    assert prober.members["m2"].fail_run == 1
    # a SYN-ACK that does not acknowledge our SYN, or from elsewhere, is ignored
    assert prober.on_packet(answer(sends["m3"].data, TCP_SYN | TCP_ACK, ack=12345)) == []
    assert prober.members["m3"].ok_run == prober.members["m3"].fail_run == 0


def test_http_sends_the_request_after_the_handshake_and_checks_the_status_line() -> None:
    w, _p = world("HTTP", url_path="/healthz", expected_codes="200-204")
    prober = Prober(random.Random(4))
    sends = by_member(w, prober.tick(0.0, targets(w.topo))[0])
    for mid, status_line, ok in (
        ("m1", b"HTTP/1.0 204 No Content", True),
        ("m2", b"HTTP/1.1 503 Busy", False),
    ):
        req = prober.on_packet(answer(sends[mid].data, TCP_SYN | TCP_ACK, seq=5000))
        assert len(req) == 1
        _eth, _ip, seg, _ = parse(req[0].data)
        assert seg.bits == TCP_ACK | TCP_PSH and seg.ack == 5001
        assert _payload(req[0].data).startswith(b"GET /healthz HTTP/1.0\r\n")
        rst = prober.on_packet(answer(req[0].data, TCP_ACK | TCP_PSH, status_line + b"\r\n\r\n", seq=5001))
        assert len(rst) == 1 and parse(rst[0].data)[2].bits & TCP_RST
        st = prober.members[mid]
        assert (st.ok_run, st.fail_run) == ((1, 0) if ok else (0, 1))


def test_ping_monitor_uses_echo_requests() -> None:
    w, _p = world("PING")
    prober = Prober(random.Random(5))
    sends = prober.tick(0.0, targets(w.topo))[0]
    assert len(sends) == 3
    req = packet.Packet(sends[0].data)
    ip, ic = req.get_protocol(ipv4.ipv4), req.get_protocol(icmp.icmp)
    assert ip.src == VIP and ic.type == 8
    rep = packet.Packet()
    rep.add_protocol(ethernet.ethernet(req.get_protocol(ethernet.ethernet).src, "00:00:00:00:00:01", 0x0800))
    rep.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1))
    rep.add_protocol(
        icmp.icmp(type_=0, code=0, csum=0, data=icmp.echo(id_=ic.data.id, seq=ic.data.seq, data=b"x"))
    )
    rep.serialize()
    prober.on_packet(bytes(rep.data))
    mid = next(m.id for m in w.topo.members.values() if m.address == ip.dst)
    assert prober.members[mid].ok_run == 1


def test_unmonitored_and_admin_down_members_are_not_probed_and_a_memberless_port_fails() -> None:
    w, _p = world()
    w.member("m1", admin_state_up=False)
    ids = {t.member_id for t in targets(w.topo)}
    assert ids == {"m2", "m3"}
    w.put(HealthMonitor(id="hm", tenant="alice", pool_id="pool", admin_state_up=False))
    assert targets(w.topo) == []
    # an address that is no port of ours: no probe to send, every round a failure
    w.put(HealthMonitor(id="hm", tenant="alice", pool_id="pool", delay=1.0, max_retries=2))
    w.member("m3", address="10.0.0.99")
    prober = Prober()
    changes = []
    for t in (0.0, 1.0):
        changes += prober.tick(t, targets(w.topo))[1]
    assert changes == [("m3", ERROR)]


def test_expected_codes() -> None:
    assert code_expected(200, "200") and not code_expected(201, "200")
    assert (
        code_expected(202, "200,202") and code_expected(203, "200-204") and not code_expected(205, "200-204")
    )


class FakeState:
    """What HealthService reads of controller State: the lock, the model, write()."""

    def __init__(self, w) -> None:  # type: ignore[no-untyped-def]
        import threading

        self.w = w
        self.lock = threading.RLock()
        self.topology = w.topo

    def write(self, fn):  # type: ignore[no-untyped-def]
        changes = fn(self.topology, self.w.rev + 1, 0.0)
        if changes:
            self.w.apply(changes)
        return self.w.rev, changes


def test_the_service_writes_statuses_through_the_model() -> None:
    w, _p = world()
    sent = []
    now = [0.0]
    svc = health.HealthService(FakeState(w), lambda *a: sent.append(a) or True, clock=lambda: now[0])
    for i in range(20):
        now[0] = i * 1.0
        svc.step()
    assert len(sent) >= 9  # three members, every 5 s
    assert {m.operating_status for m in w.topo.members.values()} == {ERROR}
    assert w.topo.load_balancers["lb"].operating_status == ERROR


def test_answers_count_when_they_arrive_not_when_a_busy_dataplane_gets_to_them() -> None:
    """A probe answer (an LB-app packet-in) is handled on arrival, beside a dataplane worker that is stuck
    behind a long compile: the member stays healthy past its probe's deadline; other packet-ins still go to
    the dataplane."""
    w, _p = world()
    sent: list[tuple] = []  # type: ignore[type-arg]
    now = [0.0]
    svc = health.HealthService(FakeState(w), lambda *a: sent.append(a) or True, clock=lambda: now[0])
    queued: list[int] = []  # the dataplane worker's queue: nothing in it runs during this test
    handle = health.answers_first(svc, lambda dpid, data, match, cookie: queued.append(cookie))
    lb_cookie = Cookie.for_owner(ids.LB, "lb").value
    svc.step()
    probes = [s for s in sent if parse(s[1])[2].bits == TCP_SYN]
    assert len(probes) == 3
    for dpid, data, _md, _reg7 in probes:
        handle(dpid, answer(data, TCP_SYN | TCP_ACK), {}, lb_cookie)
    other = Cookie.for_owner(ids.DHCP, "net").value
    handle(1, b"dhcp", {}, other)
    assert queued == [other]  # only the non-LB packet-in waits for the worker
    for i in range(1, 4):  # well past the 2 s timeout: nothing fails
        now[0] = float(i)
        svc.step()
    assert all(st.fail_run == 0 and st.ok_run == 1 for st in svc.prober.members.values())
    assert {m.operating_status for m in w.topo.members.values()} == {ONLINE}
