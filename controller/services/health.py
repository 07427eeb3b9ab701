"""Load-balancer health monitors: real probes into the tenant network, from the VIP (as OVN's service monitor).

Every `delay` seconds each member of a pool with an admin-up health monitor gets a probe, made by the
controller and injected on the member's chassis with a packet-out that sets DATAPATH (the member's network)
and DST_PORT (the member's port) and resubmits to egress_dispatch, so it passes the member's security groups
(acl_ingress) like any packet: members must allow the VIP address (Octavia users add that rule too). The probe
comes from the VIP address and MAC; the member's answer goes to the VIP MAC, which l2_lookup sends to the
controller (apps/lb.py, cookie app LB, metered), and reaches `Prober.on_packet`:

- TCP: SYN; SYN-ACK -> healthy (then RST), RST or nothing within `timeout` -> unhealthy;
- PING: ICMP echo request; the echo reply -> healthy;
- HTTP: SYN; after the SYN-ACK, ACK + "<http_method> url_path HTTP/1.0"; the status line of the first data segment
  must be in `expected_codes` ("200", "200,202", "200-204"); then RST.

`max_retries` consecutive failures make a member ERROR (it leaves the rotation: its bucket is compiled away),
as many consecutive successes make it ONLINE again; written through the model
(topology.ops_lb.set_operating_status), so Watch shows it and the pool / load balancer statuses follow.
Time is passed in (`now`), so the state machine is tested without sleeping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps import ids
from apps import lb as lbapp
from flows.cookie import Cookie
from topology.model import Topology
from topology.records import ERROR, ONLINE

log = logging.getLogger(__name__)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
#: probes' source ports (TCP, HTTP) and ICMP ids cycle through this range
PORT_LO, PORT_HI = 32768, 60999


@dataclass(frozen=True)
class Target:
    """One member to probe, as the model says now."""

    member_id: str
    lb_id: str
    type: str
    delay: float
    timeout: float
    max_retries: int
    url_path: str
    expected_codes: str
    address: str
    protocol_port: int
    status: str  # the member's operating status in the model
    vip_address: str
    vip_mac: str
    http_method: str = "GET"
    # where to inject: None when the member's address is no located port of ours (its probes fail)
    chassis_id: str | None = None
    datapath_id: int = 0
    net_key: int = 0
    port_key: int = 0
    mac: str = ""


@dataclass(frozen=True)
class Send:
    """A packet to inject on a chassis: metadata := net_key, reg7 := port_key, resubmit to egress_dispatch."""

    datapath_id: int
    data: bytes
    net_key: int
    port_key: int


@dataclass
class _Probe:
    target: Target
    sport: int  # TCP/HTTP source port, or ICMP id
    isn: int  # our initial sequence number (TCP/HTTP)
    deadline: float
    stage: str = "syn"  # syn -> (http) request -> done


@dataclass
class _Member:
    ok_run: int = 0
    fail_run: int = 0
    next_at: float = 0.0
    probe: _Probe | None = None
    target: Target | None = None


def targets(topo: Topology) -> list[Target]:
    """Every member a health monitor watches now: pools with an admin-up monitor, under an up load balancer
    with a usable VIP; admin-down members are OFFLINE and not probed."""
    out = []
    for pool in sorted(topo.pools.values(), key=lambda p: p.id):
        hm = topo.health_monitors.get(topo.pool_monitor.get(pool.id, ""))
        lb = topo.load_balancers.get(pool.load_balancer_id)
        if (
            hm is None
            or not hm.admin_state_up
            or lb is None
            or not lb.admin_state_up
            or not pool.admin_state_up
        ):
            continue
        vip = lbapp.vip_port(topo, lb)
        if vip is None or not lb.vip_address:
            continue
        for m in lbapp.pool_members(topo, pool):
            if not m.admin_state_up:
                continue
            port = lbapp.member_port(topo, lb, m)
            where: dict[str, Any] = {}
            ch = topo.chassis.get(port.binding_chassis) if port is not None else None
            net = topo.networks.get(port.network_id) if port is not None else None
            if port is not None and ch is not None and net is not None and port.admin_state_up:
                where = {
                    "chassis_id": ch.id,
                    "datapath_id": ch.datapath_id,
                    "net_key": net.key,
                    "port_key": port.key,
                    "mac": port.mac,
                }
            out.append(
                Target(
                    m.id,
                    lb.id,
                    hm.type,
                    hm.delay,
                    hm.timeout,
                    hm.max_retries,
                    hm.url_path,
                    hm.expected_codes,
                    m.address,
                    m.protocol_port,
                    m.operating_status,
                    lb.vip_address,
                    vip.mac,
                    hm.http_method or "GET",
                    **where,
                )
            )
    return out


def code_expected(code: int, expected: str) -> bool:
    """`expected` as Octavia writes it: "200", "200,202", "200-204"."""
    for part in expected.replace(" ", "").split(","):
        if "-" in part:
            lo, _, hi = part.partition("-")
            if lo.isdigit() and hi.isdigit() and int(lo) <= code <= int(hi):
                return True
        elif part.isdigit() and int(part) == code:
            return True
    return False


class Prober:
    """The monitor's state machine: which probes to send when, what answers mean, which statuses change."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.members: dict[str, _Member] = {}
        self._by_key: dict[tuple[str, int], _Probe] = {}  # (member address, sport / icmp id) -> probe
        self._next_port = PORT_LO
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []  # status changes decided by answers, for the next tick

    # ------------------------------------------------------------------------------------------ time

    def tick(self, now: float, current: list[Target]) -> tuple[list[Send], list[tuple[str, str]]]:
        """Probes due at `now` and the timeouts reached; returns (packets to send, (member id, new status))."""
        sends: list[Send] = []
        changes: list[tuple[str, str]] = []
        with self._lock:
            seen = set()
            for t in current:
                seen.add(t.member_id)
                st = self.members.setdefault(t.member_id, _Member(next_at=now))
                st.target = t
                if st.probe is not None and now >= st.probe.deadline:
                    sends += self._abort(st.probe)
                    self._finish(st, False, changes)
                if st.probe is None and now >= st.next_at:
                    st.next_at = now + t.delay
                    if t.chassis_id is None:
                        self._finish(st, False, changes)  # nowhere to probe: it cannot answer
                    else:
                        sends += self._start(st, t, now)
            for mid in set(self.members) - seen:  # no longer monitored
                st = self.members.pop(mid)
                if st.probe is not None:
                    self._by_key.pop((st.probe.target.address, st.probe.sport), None)
        return sends, changes

    def _finish(self, st: _Member, ok: bool, changes: list[tuple[str, str]]) -> None:
        if st.probe is not None:
            self._by_key.pop((st.probe.target.address, st.probe.sport), None)
            st.probe = None
        t = st.target
        assert t is not None
        if ok:
            st.ok_run, st.fail_run = st.ok_run + 1, 0
            if t.status != ONLINE and st.ok_run >= t.max_retries:
                changes.append((t.member_id, ONLINE))
                st.target = t = _with_status(t, ONLINE)
        else:
            st.fail_run, st.ok_run = st.fail_run + 1, 0
            if t.status != ERROR and st.fail_run >= t.max_retries:
                changes.append((t.member_id, ERROR))
                st.target = t = _with_status(t, ERROR)

    def _port(self) -> int:
        for _ in range(PORT_HI - PORT_LO + 1):
            p = self._next_port
            self._next_port = PORT_LO if p >= PORT_HI else p + 1
            if not any(k[1] == p for k in self._by_key):
                return p
        raise RuntimeError("no free probe port")

    def _start(self, st: _Member, t: Target, now: float) -> list[Send]:
        probe = _Probe(t, self._port(), self._rng.randrange(1 << 32), now + t.timeout)
        st.probe = probe
        self._by_key[(t.address, probe.sport)] = probe
        if t.type == "PING":
            return [self._send(t, _icmp_echo(t, probe.sport, 1))]
        return [self._send(t, _tcp(t, probe.sport, probe.isn, 0, TCP_SYN))]

    def _abort(self, probe: _Probe) -> list[Send]:
        """What to tell the member when a probe is given up: a RST once its SYN was answered."""
        t = probe.target
        if t.type != "PING" and probe.stage == "request":
            return [self._send(t, _tcp(t, probe.sport, probe.isn + 1 + len(_request(t)), 0, TCP_RST))]
        return []

    @staticmethod
    def _send(t: Target, data: bytes) -> Send:
        return Send(t.datapath_id, data, t.net_key, t.port_key)

    # ------------------------------------------------------------------------------------------ answers

    def on_packet(self, data: bytes) -> list[Send]:
        """An answer to the VIP MAC (a packet-in): the probe it answers moves on; returns packets to send."""
        parsed = _parse(data)
        if parsed is None:
            return []
        src, dst, proto, key, l4 = parsed
        with self._lock:
            probe = self._by_key.get((src, key))
            if probe is None or probe.target.vip_address != dst:
                return []
            st = self.members.get(probe.target.member_id)
            if st is None or st.probe is not probe:
                return []
            t = probe.target
            changes: list[tuple[str, str]] = []
            sends: list[Send] = []
            if t.type == "PING":
                if proto == 1 and l4.get("type") == ICMP_ECHO_REPLY:
                    self._finish(st, True, changes)
            elif proto == 6 and l4["sport"] == t.protocol_port:
                flags, seq, ack, payload = l4["flags"], l4["seq"], l4["ack"], l4["payload"]
                if flags & TCP_RST:
                    self._finish(st, False, changes)
                elif (
                    probe.stage == "syn"
                    and flags & TCP_SYN
                    and flags & TCP_ACK
                    and ack == (probe.isn + 1) % (1 << 32)
                ):
                    if t.type == "TCP":
                        sends.append(self._send(t, _tcp(t, probe.sport, probe.isn + 1, 0, TCP_RST)))
                        self._finish(st, True, changes)
                    else:
                        probe.stage = "request"
                        probe.server_seq = (seq + 1) % (1 << 32)  # type: ignore[attr-defined]
                        sends.append(
                            self._send(
                                t,
                                _tcp(
                                    t,
                                    probe.sport,
                                    probe.isn + 1,
                                    probe.server_seq,  # type: ignore[attr-defined]
                                    TCP_ACK | TCP_PSH,
                                    _request(t),
                                ),
                            )
                        )
                elif probe.stage == "request" and payload:
                    ok = False
                    line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
                    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
                        ok = code_expected(int(line[1]), t.expected_codes)
                    sends.append(
                        self._send(t, _tcp(t, probe.sport, probe.isn + 1 + len(_request(t)), 0, TCP_RST))
                    )
                    self._finish(st, ok, changes)
            self._pending.extend(changes)
            return sends

    def take_changes(self) -> list[tuple[str, str]]:
        """Status changes decided by answers since the last call."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
            return out


def _with_status(t: Target, status: str) -> Target:
    from dataclasses import replace

    return replace(t, status=status)


# ---------------------------------------------------------------------------------------------------------
# packets (os-ken builds and parses them)
# ---------------------------------------------------------------------------------------------------------


def _request(t: Target) -> bytes:
    return f"{t.http_method} {t.url_path or '/'} HTTP/1.0\r\nHost: {t.address}\r\nUser-Agent: sdn-health\r\n\r\n".encode()


def _tcp(t: Target, sport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    from os_ken.lib.packet import ethernet, ipv4, packet, tcp

    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(t.mac, t.vip_mac, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=t.vip_address, dst=t.address, proto=6, ttl=64))
    pkt.add_protocol(
        tcp.tcp(
            src_port=sport,
            dst_port=t.protocol_port,
            seq=seq % (1 << 32),
            ack=ack % (1 << 32),
            bits=flags,
            window_size=64240,
            option=[tcp.TCPOptionMaximumSegmentSize(max_seg_size=1400)] if flags & TCP_SYN else None,
        )
    )
    if payload:
        pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def _icmp_echo(t: Target, ident: int, seq: int) -> bytes:
    from os_ken.lib.packet import ethernet, icmp, ipv4, packet

    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(t.mac, t.vip_mac, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=t.vip_address, dst=t.address, proto=1, ttl=64))
    pkt.add_protocol(
        icmp.icmp(
            type_=ICMP_ECHO_REQUEST, code=0, csum=0, data=icmp.echo(id_=ident, seq=seq, data=b"sdn-health")
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def _parse(data: bytes) -> tuple[str, str, int, int, dict[str, Any]] | None:
    """(src, dst, proto, key, l4 fields) of an IPv4 TCP / ICMP echo reply; key = our port or ICMP id."""
    from os_ken.lib.packet import icmp, ipv4, packet, tcp

    try:
        pkt = packet.Packet(data)
    except Exception:  # noqa: BLE001 - not a packet we can read: not an answer
        return None
    ip = pkt.get_protocol(ipv4.ipv4)
    if ip is None:
        return None
    seg = pkt.get_protocol(tcp.tcp)
    if seg is not None:
        payload = pkt.protocols[-1] if isinstance(pkt.protocols[-1], (bytes, bytearray)) else b""
        return (
            ip.src,
            ip.dst,
            6,
            seg.dst_port,
            {
                "sport": seg.src_port,
                "flags": seg.bits,
                "seq": seg.seq,
                "ack": seg.ack,
                "payload": bytes(payload),
            },
        )
    ic = pkt.get_protocol(icmp.icmp)
    if ic is not None and isinstance(ic.data, icmp.echo):
        return ip.src, ip.dst, 1, ic.data.id, {"type": ic.type}
    return None


# ---------------------------------------------------------------------------------------------------------
# the running service
# ---------------------------------------------------------------------------------------------------------


Inject = Callable[[int, bytes, int, int], bool]  # (datapath id, bytes, metadata, reg7) -> sent
PacketInSink = Callable[[int, bytes, dict[str, Any], int], None]  # (datapath id, data, match, cookie)


def answers_first(service: HealthService, rest: PacketInSink) -> PacketInSink:
    """The switch's packet-in callback: the LB app's packet-ins (probe answers) go straight to `service` on
    the receiving thread, everything else to `rest` (the dataplane's queue)."""

    def handle(dpid: int, data: bytes, match: dict[str, Any], cookie: int) -> None:
        c = Cookie.decode(cookie)
        if c is not None and c.app == ids.LB:
            service.on_answer(data)
        else:
            rest(dpid, data, match, cookie)

    return handle


class HealthService:
    """Runs a Prober against the model: a thread ticking every `interval` s, answers from the LB app's
    packet-ins as they arrive (`answers_first`), status changes written through the model."""

    def __init__(
        self, state: Any, inject: Inject, clock: Callable[[], float] = time.monotonic, interval: float = 0.1
    ) -> None:
        self.state = state
        self.inject = inject
        self.clock = clock
        self.interval = interval
        self.prober = Prober()
        self._rev = -1
        self._targets: list[Target] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lb-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def on_answer(self, data: bytes) -> None:
        """A packet-in of the LB app (an answer to the VIP MAC), handled as it arrives on os-ken's receive
        thread: the prober needs no model, and an answer queued behind compiles on the dataplane worker could
        miss its probe's deadline (a member marked ERROR because the controller was busy). Status writes wait
        for a tick."""
        for s in self.prober.on_packet(data):
            self._send(s)

    def _send(self, s: Send) -> None:
        try:
            self.inject(s.datapath_id, s.data, s.net_key, s.port_key)
        except Exception:
            log.exception("health probe injection failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:
                log.exception("health monitor step failed")

    def step(self) -> None:
        with self.state.lock:
            rev = self.state.topology.revision
            if rev != self._rev:  # the model changed: who to probe, and how, may have
                self._targets, self._rev = targets(self.state.topology), rev
            current = self._targets
        sends, changes = self.prober.tick(self.clock(), current)
        for s in sends:
            self._send(s)
        changes += self.prober.take_changes()
        if changes:
            self._write(changes)

    def _write(self, changes: list[tuple[str, str]]) -> None:
        from topology import ops_lb

        for member_id, status in changes:
            log.info("load-balancer member %s is %s", member_id, status)

            def fn(
                t: Topology, rev: int, now: float, member_id: str = member_id, status: str = status
            ) -> list[Any]:
                return ops_lb.set_operating_status(t, "member", member_id, status, rev, now)

            self.state.write(fn)
