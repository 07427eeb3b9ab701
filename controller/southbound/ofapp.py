"""The os-ken application: accepts switch connections, keeps a registry of connected datapaths, and routes
connection events and replies (barrier, multipart, errors, bundle control) to the sync engines.

The sync engines (controller/southbound/sync.py) live in `OFApp.sync`, a SyncManager; they send pre-encoded bytes with
`Datapath.send` and correlate replies by xid.

Who may be which switch: over TLS (the default) the listener requires a client certificate signed by the
controller's CA, and a switch is admitted as datapath D only when its certificate names a chassis whose
registered datapath id is D (`OFApp.authorize`); without TLS (`insecure_openflow`) a datapath id already
connected from one address is refused from another. A refused connection is closed before it reaches the
sync engines (it never gets a flow), logged, and counted by reason (`OFApp.rejected`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import controller as osken_controller
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from apps import ids
from controller import latency
from controller.pki import TlsFiles, peer_common_name
from controller.southbound.sync import SyncManager
from controller.southbound.transport import RAW_SINKS_ATTR
from flows import pipeline

log = logging.getLogger(__name__)

#: replies the sync engines wait for
_REPLY_EVENTS = [
    ofp_event.EventOFPBarrierReply,
    ofp_event.EventOFPErrorMsg,
    ofp_event.EventOFPFlowStatsReply,
    ofp_event.EventOFPAggregateStatsReply,
    ofp_event.EventOFPGroupDescStatsReply,
    ofp_event.EventOFPMeterConfigStatsReply,
    ofp_event.EventONFBundleCtrlMsg,
]

#: OFPCR_ROLE_* by whether we are master
_ROLE_NAMES = {ofproto_v1_3.OFPCR_ROLE_MASTER: "master", ofproto_v1_3.OFPCR_ROLE_SLAVE: "slave"}

#: OpenFlow 1.3 packet-in reason codes, named for metrics
PACKET_IN_REASONS = {
    ofproto_v1_3.OFPR_NO_MATCH: "no_match",
    ofproto_v1_3.OFPR_ACTION: "action",
    ofproto_v1_3.OFPR_INVALID_TTL: "invalid_ttl",
}


def _wake_sender_on_eof() -> None:
    """Make os-ken notice a closed connection.

    With the native hub, Datapath.serve() joins its send thread after the receive loop ends, but that
    thread sleeps in send_q.get() until something is sent (hub.kill cannot stop a native thread); with
    echo requests off (the default) nothing ever is, so DEAD_DISPATCHER never fires and a switch that
    disconnected stays "connected". Queue an empty close-marker when the receive loop ends.
    """
    dp_cls = osken_controller.Datapath
    if getattr(dp_cls, "_sdn_eof_patch", False):
        return
    recv_loop = dp_cls._recv_loop

    def _recv_loop(self: Any) -> None:
        try:
            recv_loop(self)
        finally:
            try:
                self.send(b"", close_socket=True)
            except OSError:  # the send thread is already gone
                log.debug("datapath %s: close marker not queued", self.id)

    dp_cls._recv_loop = _recv_loop
    dp_cls._sdn_eof_patch = True


_wake_sender_on_eof()


def _raw_multipart_replies() -> None:
    """Let a sync engine take multipart replies (flow dumps) as raw bytes, skipping os-ken's parser.

    os-ken parses every reply into objects in the connection's receive thread (~7k flow entries/s here);
    a 50k-flow dump would take seconds before the engine sees it. An engine that registers a sink for an
    xid on the Datapath (attribute RAW_SINKS_ATTR: {xid: callable(bytes)}) gets those replies' bytes instead;
    every other reply is parsed as usual.
    """
    from os_ken.ofproto import ofproto_v1_3 as ofp13
    from os_ken.ofproto import ofproto_v1_3_parser as ofpp13

    parsers = ofpp13._MSG_PARSERS
    orig = parsers[ofp13.OFPT_MULTIPART_REPLY]
    if getattr(orig, "_sdn_raw", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        sinks = getattr(datapath, RAW_SINKS_ATTR, None)
        if sinks:
            sink = sinks.get(xid)
            if sink is not None:
                sink(bytes(buf[:msg_len]))
                return None  # os-ken dispatches nothing for a None message
        return orig(datapath, version, msg_type, msg_len, xid, buf)

    parse._sdn_raw = True  # type: ignore[attr-defined]
    parsers[ofp13.OFPT_MULTIPART_REPLY] = parse


_raw_multipart_replies()


def _stamp_barrier_replies() -> None:
    """Latency tracing (controller/latency.py): stamp each barrier reply as os-ken's receive thread parses it."""
    from os_ken.ofproto import ofproto_v1_3 as ofp13
    from os_ken.ofproto import ofproto_v1_3_parser as ofpp13

    parsers = ofpp13._MSG_PARSERS
    orig = parsers[ofp13.OFPT_BARRIER_REPLY]

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        latency.stamp("of.rx", f"{datapath.id or 0:x}")
        return orig(datapath, version, msg_type, msg_len, xid, buf)

    parsers[ofp13.OFPT_BARRIER_REPLY] = parse


if latency.ON:
    _stamp_barrier_replies()


#: why a switch connection was refused (label of sdn_southbound_rejected_total)
REJECT_REASONS = ("tls_handshake", "unknown_chassis", "wrong_datapath_id", "datapath_in_use")
TLS_HANDSHAKE_TIMEOUT_S = 10.0
IDENTITY_ATTR = "_sdn_identity"  # on a Datapath: "chassis:NAME" (its certificate) or "address:IP" (no TLS)
ADMITTED_ATTR = "_sdn_admitted"  # on a Datapath: True once admitted as its datapath id


class Rejections:
    """Refused switch connections by reason (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(REJECT_REASONS, 0)

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


_rejections = Rejections()
REFUSAL_LOG_INTERVAL_S = (
    30.0  # a refused switch retries every second: one log line per peer and reason per 30 s
)
_refusal_logged: dict[
    tuple[str, str], tuple[float, int]
] = {}  # (address, reason) -> (last logged, suppressed)
_refusal_lock = threading.Lock()


def _log_refusal(address: str, reason: str, msg: str, *args: object) -> None:
    now = time.monotonic()
    with _refusal_lock:
        last, suppressed = _refusal_logged.get((address, reason), (-1e9, 0))
        if now - last < REFUSAL_LOG_INTERVAL_S:
            _refusal_logged[(address, reason)] = (last, suppressed + 1)
            return
        _refusal_logged[(address, reason)] = (now, 0)
        if len(_refusal_logged) > 10_000:  # many peers: forget the old ones
            _refusal_logged.clear()
    more = f" ({suppressed} more like it not logged)" if suppressed else ""
    log.warning(msg + more, *args)


_listener_tls: TlsFiles | None = None  # set by ensure_started before os-ken's listener starts
#: how the listener's start went (None: listening; else why not), told by _server_loop to ensure_started
_listening: list[Exception | None] = []
_listen_done = threading.Event()
#: how long ensure_started waits for os-ken's listener to bind
LISTEN_WAIT_S = 10.0


class _OFSSLSocket(ssl.SSLSocket):
    """os-ken's receive loop retries on any ssl.SSLError (meant for eventlet's read timeouts), so a real TLS
    error would spin it forever: report one as the end of the connection instead."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as e:
            raise EOFError(f"TLS: {e}") from e


def tls_server_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+, our certificate, and a client certificate signed by our CA required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.load_verify_locations(str(files.ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sslsocket_class = _OFSSLSocket
    return ctx


def _server_loop(self: Any, _tcp_port: int, _ssl_port: int) -> None:
    """Replaces os-ken's OpenFlowController.server_loop: one listener on ofp_listen_host and
    ofp_tcp_listen_port, TLS with required client certificates unless started without TLS files. The
    handshake runs in the connection's own thread (a slow or silent peer holds up nobody); a failed one is
    logged and counted."""
    from os_ken import cfg

    host, port = cfg.CONF.ofp_listen_host, cfg.CONF.ofp_tcp_listen_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = hub.listen((host, port), family=family)
        ctx = tls_server_context(_listener_tls) if _listener_tls is not None else None
    except Exception as err:  # noqa: BLE001 - told to ensure_started, which refuses to go on
        _listening.append(err)
        _listen_done.set()
        return
    _listening.append(None)
    _listen_done.set()
    while True:
        conn, addr = server.accept()
        hub.spawn(_handle_connection, conn, addr, ctx)


class _StampedSocket:
    """Latency tracing: a switch connection's socket that stamps each write (os-ken's send thread)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendall(self, data: Any, *args: Any) -> Any:
        got = self._sock.sendall(data, *args)
        if data:
            latency.stamp("of.tx", len(data))
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _handle_connection(conn: Any, addr: Any, ctx: ssl.SSLContext | None) -> None:
    if ctx is not None:
        conn.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except OSError as e:  # ssl.SSLError included: no or a foreign certificate, plaintext, timeout
            _rejections.add("tls_handshake")
            _log_refusal(
                addr[0],
                "tls_handshake",
                "OpenFlow connection from %s refused: TLS handshake failed (%s)",
                addr[0],
                getattr(e, "reason", None) or e,
            )
            conn.close()
            return
    if latency.ON:
        conn = _StampedSocket(conn)
    osken_controller.datapath_connection_factory(conn, addr)


osken_controller.OpenFlowController.server_loop = _server_loop


def _peer_chassis(dp: Any) -> str | None:
    """The chassis named by the switch's certificate (its CN), None without TLS."""
    getpeercert = getattr(dp.socket, "getpeercert", None)
    return peer_common_name(getpeercert()) if getpeercert is not None else None


def _drop_connection(dp: Any) -> None:
    """Close a refused switch's connection in both directions (its receive loop then ends: DEAD)."""
    try:
        socket.socket.shutdown(dp.socket, socket.SHUT_RDWR)  # below TLS: no close_notify to wait for
    except OSError:
        pass


class DatapathRegistry:
    """Connected datapaths by id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dpid: dict[int, Any] = {}

    def add(self, dp: Any) -> None:
        with self._lock:
            self._by_dpid[dp.id] = dp

    def remove(self, dp: Any) -> bool:
        """Forget `dp` if it is still the current connection of its id; True if it was."""
        dpid = dp.id
        with self._lock:
            if self._by_dpid.get(dpid) is dp:
                del self._by_dpid[dpid]
                return True
            return False

    def get(self, dpid: int) -> Any | None:
        with self._lock:
            return self._by_dpid.get(dpid)

    def connected(self) -> dict[int, Any]:
        with self._lock:
            return dict(self._by_dpid)


class OFApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registry = DatapathRegistry()
        self.sync = SyncManager()
        self.packet_ins: dict[int, int] = {}  # datapath id -> count (nothing we compile sends any yet)
        self.packet_ins_by_reason: dict[tuple[int, str], int] = {}  # (datapath id, reason name) -> count
        # who gets packet-ins (the dataplane: probe answers, unresolved external next hops)
        self.packet_in_handler: Any = None
        self._meter_xids: set[tuple[int, int]] = set()  # (datapath id, xid) of meter-mods we sent
        self._meter_lock = threading.Lock()
        # (datapath id, chassis named by the certificate) -> None if that switch may be that datapath, else
        # the reason it may not (REJECT_REASONS); None = no certificate check (no TLS)
        self.authorize: Callable[[int, str], str | None] | None = None
        # OpenFlow roles (several controllers, controller/southbound/roles.py): datapath id -> (master?,
        # generation). None: one controller, no role requests, every switch is ours (the default)
        self.roles: dict[int, tuple[bool, int]] | None = None
        self._role_lock = threading.Lock()
        # per datapath id, held while its role is decided and its request sent (set_role, activate, a new
        # connection's first request): a connection's requests go out in the order the roles were decided,
        # so an older role read by on_state is never sent after a newer one (the same generation would not
        # be refused as stale)
        self._role_sends: dict[int, threading.Lock] = {}
        self._role_xids: dict[tuple[int, int], bool] = {}  # (datapath id, xid) of a role request -> master?
        self.role_requests = 0
        self.role_errors = 0

    # --- OpenFlow roles ----------------------------------------------------------------------------------

    def enable_roles(self) -> None:
        """Several controllers: every switch starts as another's (slave) until set_role makes it ours."""
        with self._role_lock:
            if self.roles is None:
                self.roles = {}
        self.sync.active = set()

    def is_master(self, dpid: int) -> bool:
        roles = self.roles
        if roles is None:
            return True
        with self._role_lock:
            return roles.get(dpid, (False, 0))[0]

    def _role_send(self, dpid: int) -> threading.Lock:
        with self._role_lock:
            lock = self._role_sends.get(dpid)
            if lock is None:
                lock = self._role_sends[dpid] = threading.Lock()
            return lock

    def set_role(self, dpid: int, master: bool, generation: int, activate: bool = True) -> None:
        """Become master (ROLE_REQUEST MASTER with `generation`, then the sync engine adopts what the switch
        holds) or slave of switch `dpid` (the engine stops first, then ROLE_REQUEST SLAVE). Any thread.

        activate=False: as master, the role request only; the engine talks to the switch once
        `activate(dpid, generation)` is called (the caller's model has caught up first)."""
        if self.roles is None:
            self.enable_roles()
        assert self.roles is not None
        with self._role_send(dpid):
            with self._role_lock:
                self.roles[dpid] = (master, generation)
            dp = self.registry.get(dpid)
            if not master:
                self.sync.set_active(dpid, False)
            if dp is not None:
                self._send_role(dp, master, generation)
            if master and activate:
                self.sync.set_active(dpid, True)

    def activate(self, dpid: int, generation: int) -> bool:
        """Start the sync engine of switch `dpid` if we are still its master with `generation` (see
        set_role's activate); False if that role is gone (stepped down meanwhile)."""
        with self._role_send(dpid):
            with self._role_lock:
                still = self.roles is not None and self.roles.get(dpid) == (True, generation)
            if still:
                self.sync.set_active(dpid, True)
            return still

    def _send_role(self, dp: Any, master: bool, generation: int) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        role = ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
        msg = parser.OFPRoleRequest(dp, role, generation & 0xFFFFFFFFFFFFFFFF)
        dp.set_xid(msg)
        with self._role_lock:
            self._role_xids[(dp.id, msg.xid)] = master
            self.role_requests += 1
        log.info("datapath %016x: role request %s, generation %d", dp.id, _ROLE_NAMES[role], generation)
        dp.send_msg(msg)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def on_role_reply(self, ev: Any) -> None:
        msg = ev.msg
        with self._role_lock:
            self._role_xids.pop((msg.datapath.id, msg.xid), None)
        log.debug("datapath %016x: role %s, generation %d", msg.datapath.id, msg.role, msg.generation_id)

    def _role_error(self, msg: Any) -> bool:
        """A role request we sent was refused (a stale generation: a newer master exists): we are not
        master. True if `msg` was that error."""
        with self._role_lock:
            master = self._role_xids.pop((msg.datapath.id, msg.xid), None)
        if master is None:
            return False
        self.role_errors += 1
        log.warning("datapath %016x: role request refused by the switch: %s", msg.datapath.id, msg)
        if master and self.roles is not None:
            with self._role_send(msg.datapath.id):
                with self._role_lock:
                    gen = self.roles.get(msg.datapath.id, (False, 0))[1]
                    self.roles[msg.datapath.id] = (False, gen)
                self.sync.set_active(msg.datapath.id, False)
        return True

    def rejected(self) -> dict[str, int]:
        """Refused switch connections by reason, since the process started."""
        return _rejections.counts()

    def _refuse(self, dp: Any, reason: str, detail: str) -> None:
        _rejections.add(reason)
        _log_refusal(
            dp.address[0],
            reason,
            "refused switch from %s claiming datapath %016x: %s (%s)",
            dp.address[0],
            dp.id,
            reason,
            detail,
        )
        _drop_connection(dp)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[misc]
    def on_features(self, ev: Any) -> None:
        """Admit or refuse the connection as its claimed datapath id, before it can reach MAIN (and the
        sync engine). Runs in this app's event thread, like on_state: decisions are serialized."""
        dp = ev.msg.datapath
        chassis = _peer_chassis(dp)
        identity = f"chassis:{chassis}" if chassis is not None else f"address:{dp.address[0]}"
        setattr(dp, IDENTITY_ATTR, identity)
        if self.authorize is not None:
            if chassis is None:
                self._refuse(dp, "tls_handshake", "no certificate")
                return
            reason = self.authorize(dp.id, chassis)
            if reason is not None:
                self._refuse(dp, reason, f"its certificate names chassis {chassis!r}")
                return
        current = self.registry.get(dp.id)
        if current is not None and current is not dp and getattr(current, IDENTITY_ATTR, None) != identity:
            self._refuse(
                dp,
                "datapath_in_use",
                f"connected as {getattr(current, IDENTITY_ATTR, '?')}, this one is {identity}",
            )
            return
        setattr(dp, ADMITTED_ATTR, True)
        log.info("switch connected: datapath %016x from %s (%s)", dp.id, dp.address, identity)

    def _current(self, dp: Any) -> bool:
        """`dp` is the admitted connection of its datapath id (messages from any other are ignored)."""
        return dp.id is not None and self.registry.get(dp.id) is dp

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])  # type: ignore[misc]
    def on_state(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None or not getattr(dp, ADMITTED_ATTR, False):
            return
        if ev.state == MAIN_DISPATCHER:
            current = self.registry.get(dp.id)
            identity = getattr(dp, IDENTITY_ATTR, None)
            if (
                current is not None
                and current is not dp
                and getattr(current, IDENTITY_ATTR, None) != identity
            ):
                setattr(dp, ADMITTED_ATTR, False)  # another identity got in between features and now
                self._refuse(dp, "datapath_in_use", f"connected as {getattr(current, IDENTITY_ATTR, '?')}")
                return
            self.registry.add(dp)
            if self.roles is not None:  # before anything else on this connection: it starts as EQUAL
                with self._role_send(dp.id):
                    with self._role_lock:
                        master, generation = self.roles.get(dp.id, (False, 0))
                    self._send_role(dp, master, generation)
            self._add_meters(dp)  # before the sync engine's first flows (same connection: in order)
            self.sync.switch_connected(dp)
        elif ev.state == DEAD_DISPATCHER:
            log.info("switch disconnected: datapath %016x", dp.id)
            self.registry.remove(dp)
            self.sync.switch_disconnected(dp)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[misc]
    def on_packet_in(self, ev: Any) -> None:
        if not self._current(ev.msg.datapath):
            return  # a refused connection, or one already replaced
        dpid = ev.msg.datapath.id
        if not self.is_master(dpid):
            return  # another controller's switch (a slave gets none; this covers the moment before)
        self.packet_ins[dpid] = self.packet_ins.get(dpid, 0) + 1
        key = (dpid, PACKET_IN_REASONS.get(ev.msg.reason, str(ev.msg.reason)))
        self.packet_ins_by_reason[key] = self.packet_ins_by_reason.get(key, 0) + 1
        handler = self.packet_in_handler
        if handler is not None:
            try:
                match = dict(ev.msg.match.items())
            except Exception:  # noqa: BLE001 - a match os-ken cannot list: the packet alone must do
                match = {}
            handler(dpid, bytes(ev.msg.data), match, int(ev.msg.cookie))

    def packet_out(self, dpid: int, data: bytes, port: int) -> bool:
        """Send `data` out `port` of switch `dpid` (from the controller, no pipeline); False if not connected."""
        dp = self.registry.get(dpid)
        if dp is None or not self.is_master(dpid):
            return False
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(
            parser.OFPPacketOut(
                datapath=dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=ofp.OFPP_CONTROLLER,
                actions=[parser.OFPActionOutput(port)],
                data=data,
            )
        )
        return True

    def inject(self, dpid: int, data: bytes, metadata: int, reg7: int) -> bool:
        """Send `data` into switch `dpid`'s pipeline as if the logical network `metadata` delivered it to
        logical port `reg7`: set both and resubmit to egress_dispatch (the port's security groups apply).
        The load balancers' health probes (controller/health.py). False if not connected."""
        dp = self.registry.get(dpid)
        if dp is None or not self.is_master(dpid):
            return False
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [
            parser.OFPActionSetField(metadata=metadata),
            parser.OFPActionSetField(reg7=reg7),
            parser.NXActionResubmitTable(in_port=0xFFF8, table_id=pipeline.table_of("egress_dispatch")),
        ]
        dp.send_msg(
            parser.OFPPacketOut(
                datapath=dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=ofp.OFPP_CONTROLLER,
                actions=actions,
                data=data,
            )
        )
        return True

    def _add_meters(self, dp: Any) -> None:
        """The packet-in meter (apps.ids.PACKET_IN_METER). On a reconnect it exists already: the switch's
        METER_EXISTS error for this xid is expected and dropped (flows referencing the meter stay)."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        msg = parser.OFPMeterMod(
            dp,
            command=ofp.OFPMC_ADD,
            flags=ofp.OFPMF_PKTPS,
            meter_id=ids.PACKET_IN_METER,
            bands=[parser.OFPMeterBandDrop(rate=ids.PACKET_IN_RATE_PPS, burst_size=0)],
        )
        dp.set_xid(msg)
        with self._meter_lock:
            self._meter_xids.add((dp.id, msg.xid))
        dp.send_msg(msg)

    @set_ev_cls(_REPLY_EVENTS, MAIN_DISPATCHER)  # type: ignore[misc]
    def on_reply(self, ev: Any) -> None:
        msg = ev.msg
        if latency.ON:
            latency.stamp("of.event", f"{msg.datapath.id or 0:x}")
        if not self._current(msg.datapath):
            return
        if isinstance(msg, ofproto_v1_3_parser.OFPErrorMsg):
            with self._meter_lock:
                ours = (msg.datapath.id, msg.xid) in self._meter_xids
                self._meter_xids.discard((msg.datapath.id, msg.xid))
            if ours:
                log.debug("datapath %016x: packet-in meter: %s", msg.datapath.id, msg)
                return
            if self._role_error(msg):
                return
        self.sync.dispatch(msg.datapath, msg)


_started: OFApp | None = None
_started_lock = threading.Lock()


def ensure_started(host: str, port: int, tls: TlsFiles | None = None) -> OFApp:
    """Start os-ken listening on host:port in this process once (AppManager is a process-wide singleton);
    later calls return the same app whatever they ask for. With `tls`, the listener speaks only TLS and
    requires a client certificate signed by `tls.ca`; set `OFApp.authorize` to check which chassis it names.

    os-ken's hub threads are not daemonic; started from a daemon thread they inherit daemon=True, so a
    test process (or any embedder) can exit without stopping them.
    """
    global _started, _listener_tls
    with _started_lock:
        if _started is None:
            _listener_tls = tls
            result: list[Any] = []

            def start() -> None:
                from os_ken import cfg
                from os_ken.base.app_manager import AppManager

                cfg.CONF(
                    args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)], project="os_ken"
                )
                # echo requests detect a switch that vanished without closing the connection (~20 s)
                cfg.CONF.set_override("echo_request_interval", 5.0)
                cfg.CONF.set_override("maximum_unreplied_echo_requests", 3)
                mgr = AppManager.get_instance()
                mgr.load_apps(["controller.southbound.ofapp"])
                contexts = mgr.create_contexts()
                mgr.instantiate_apps(**contexts)
                result.append(mgr.applications["OFApp"])

            t = threading.Thread(target=start, name="os-ken-start", daemon=True)
            t.start()
            t.join()
            if not result:
                raise RuntimeError("os-ken did not start (see the log)")
            # the listener binds in os-ken's own thread: a port in use must stop the start, not pass silently
            if not _listen_done.wait(LISTEN_WAIT_S):
                raise OSError(
                    f"the OpenFlow listener on {host}:{port} did not start within {LISTEN_WAIT_S:g} s"
                )
            if _listening and _listening[-1] is not None:
                raise OSError(f"cannot listen for OpenFlow on {host}:{port}: {_listening[-1]}")
            _started = result[0]
        return _started
