"""Per-chassis OVSDB agent: keeps br-int, its tunnel and patch ports configured and reports ofports.

One `ChassisAgent` per chassis owns one `ovs.db.idl.Idl` and drives it from its own thread (the IDL is not
thread-safe: only that thread touches it). Every time the replica changes, or the wanted configuration does,
the agent compares the database with what it wants and commits one transaction that fixes the difference, so
a port deleted behind its back comes back. From the same replica it derives `ChassisPorts` (iface-id, tunnel
and patch ofports) and reports each new value through `on_change`.

What the agent owns on the switch: br-int's settings and Controller rows, and the ports it creates, which it
marks with `external_ids:sdn-agent` so it can remove them later without touching anyone else's ports.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ovs.db.idl
import ovs.poller
import ovs.stream

from controller.pki import TlsFiles

log = logging.getLogger(__name__)

VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
TUNNEL_TYPES = ("vxlan", "gre", "geneve")
IFNAME_MAX = 15  # IFNAMSIZ - 1: longer port names are refused for netdev devices
CONTROLLER_MAX_BACKOFF_MS = 1000  # LAB.md: the default grows to 8 s
CONTROLLER_CONNECTION_MODE = "out-of-band"  # in-band adds hidden flows at priority 180000+
OVSDB_MAX_BACKOFF_MS = 2000  # our own reconnects to ovsdb-server (the ovs library's minimum is 1000)
RETRY_MIN_S, RETRY_MAX_S = 0.25, 8.0  # after a failed transaction

OWNER_KEY = "sdn-agent"  # Port external_ids key marking ports this agent created: value "tunnel" or "patch"
PHYSNET_KEY = "sdn-physnet"  # on patch ports: the physical network they serve

# Only these columns are replicated: vswitchd rewrites statistics and status columns constantly, and every
# update we don't need would wake the IDL thread for nothing.
MONITORED = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "ports", "controller", "datapath_type", "fail_mode", "protocols", "other_config"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error"],
    "Controller": ["target", "max_backoff", "connection_mode"],
}

Row = Any  # ovs.db.idl.Row: untyped, columns are attributes


_ssl_lock = threading.Lock()
_ssl_identity: TlsFiles | None = None


def set_ssl_identity(files: TlsFiles) -> None:
    """The key, certificate and CA every `ssl:` OVSDB connection of this process uses. The ovs library keeps
    them process-wide (class attributes of ovs.stream.Stream), so one identity serves every chassis: set it
    once, before any agent starts; setting other files later is an error, the same ones again a no-op."""
    global _ssl_identity
    with _ssl_lock:
        if _ssl_identity is not None:
            if _ssl_identity != files:
                raise RuntimeError(
                    f"the ovs library's SSL identity is process-wide and already {_ssl_identity}"
                )
            return
        for path in (files.key, files.cert, files.ca):
            if not os.path.exists(path):
                raise FileNotFoundError(f"OVSDB SSL: {path} does not exist")
        ovs.stream.Stream.ssl_set_private_key_file(str(files.key))
        ovs.stream.Stream.ssl_set_certificate_file(str(files.cert))
        ovs.stream.Stream.ssl_set_ca_cert_file(str(files.ca))
        _ssl_identity = files


def ssl_identity() -> TlsFiles | None:
    with _ssl_lock:
        return _ssl_identity


def _frozen(d: Mapping[str, int] | None = None) -> Mapping[str, int]:
    return types.MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ChassisPorts:
    """What the dataplane compiler needs from one chassis's switch."""

    vifs: Mapping[str, int] = field(default_factory=_frozen)  # iface-id -> ofport (> 0, on br-int)
    tunnels: Mapping[str, int] = field(default_factory=_frozen)  # "vxlan" | "gre" | "geneve" -> ofport
    patches: Mapping[str, int] = field(default_factory=_frozen)  # physnet -> br-int ofport of its patch port
    connected: bool = False  # the agent has a live, synchronized OVSDB session

    def __repr__(self) -> str:
        return (
            f"ChassisPorts(vifs={dict(self.vifs)}, tunnels={dict(self.tunnels)}, patches={dict(self.patches)}, "
            f"connected={self.connected})"
        )


def tunnel_port_name(tunnel_type: str) -> str:
    return f"tun-{tunnel_type}"


def patch_port_names(physnet: str) -> tuple[str, str]:
    """(br-int side, provider side) patch port names for `physnet`, each at most 15 characters."""
    return _short_name("pi-", physnet), _short_name("pp-", physnet)


def _short_name(prefix: str, physnet: str) -> str:
    name = prefix + physnet
    if len(name) <= IFNAME_MAX:
        return name
    digest = hashlib.sha256(physnet.encode()).hexdigest()[:6]
    return f"{prefix}{physnet[: IFNAME_MAX - len(prefix) - len(digest) - 1]}-{digest}"


def _ofport(iface: Row) -> int:
    """The interface's OpenFlow port, or 0 while it has none (column empty, or -1 when vswitchd failed)."""
    value = iface.ofport
    return int(value[0]) if value and value[0] > 0 else 0


@dataclass(frozen=True)
class _WantedPort:
    bridge: str
    name: str
    iface_type: str
    options: Mapping[str, str]
    external_ids: Mapping[str, str]


@dataclass(frozen=True)
class _Config:
    controller_targets: tuple[str, ...]
    bridge_mappings: Mapping[str, str]


class ChassisAgent:
    """Keeps one chassis's OVSDB configured (br-int, controllers, tunnel ports, patch ports) and watches ports.

    `start()` runs a background thread that connects (retrying with backoff), converges, and keeps
    converging on every database change. `on_change(chassis_id, ports)` is called from that thread each time
    the `ChassisPorts` value changes; it must be quick and must not call back into this agent's `stop()`.
    """

    def __init__(
        self,
        chassis_id: str,
        address: str,
        *,
        controller_targets: Sequence[str],
        datapath_id: int,
        bridge_mappings: Mapping[str, str] = {},  # read only: copied
        tunnel_types: Sequence[str] = TUNNEL_TYPES,
        integration_bridge: str = "br-int",
        datapath_type: str = "netdev",
        on_change: Callable[[str, ChassisPorts], None] | None = None,
        allow_tcp: bool = False,
    ) -> None:
        bad = [t for t in tunnel_types if t not in TUNNEL_TYPES]
        if bad:
            raise ValueError(f"unknown tunnel types {bad}: expected some of {TUNNEL_TYPES}")
        if not 0 <= datapath_id < 1 << 64:
            raise ValueError(f"datapath_id {datapath_id:#x} does not fit in 64 bits")
        self.chassis_id = chassis_id
        self.address = address
        self.allow_tcp = allow_tcp  # plaintext tcp: addresses (insecure_ovsdb); unix: and ssl: always work
        self.datapath_id = datapath_id
        self.tunnel_types = tuple(dict.fromkeys(tunnel_types))
        self.integration_bridge = integration_bridge
        self.datapath_type = datapath_type
        self._on_change = on_change
        self._lock = threading.Lock()  # guards _config, _config_version and _snapshot
        self._config = self._make_config(controller_targets, bridge_mappings)
        self._config_version = 0
        self._snapshot = ChassisPorts()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._idl: Any = None
        self._reset_thread_state()

    def _reset_thread_state(self) -> None:
        """State only the IDL thread touches (reset on every start)."""
        self._txn: Any = None
        self._txn_actions: list[str] = []
        self._seen_seqno = -1
        self._applied_version = -1
        self._converged = False
        self._retry_at: float | None = None
        self._retry_delay = RETRY_MIN_S
        self._was_connected = False
        self._published: tuple[Any, ...] | None = None  # what the last _publish was computed from
        self._disconnected_since: float | None = None
        self._warned_disconnected = False
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"ChassisAgent({self.chassis_id!r}, {self.address!r})"

    # --- public API (any thread) -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the IDL thread. Raises at once if the schema can't be read; connection errors are retried."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        scheme = self.address.partition(":")[0]
        if scheme == "tcp" and not self.allow_tcp:
            log.error(
                "%s: refusing plaintext OVSDB address %s: use ssl:HOST:PORT (or set insecure_ovsdb)",
                self.chassis_id,
                self.address,
            )
            return
        if scheme == "ssl" and ssl_identity() is None:
            log.error(
                "%s: OVSDB address %s needs the controller's SSL identity, which is not set",
                self.chassis_id,
                self.address,
            )
            return
        helper = ovs.db.idl.SchemaHelper(location=VSWITCH_SCHEMA)
        for table, columns in MONITORED.items():
            helper.register_columns(table, columns)
        self._idl = ovs.db.idl.Idl(self.address, helper)
        # Reach a restarted ovsdb-server within ~2 s instead of the library's 8 s maximum backoff.
        self._idl._session.reconnect.set_backoff(1000, OVSDB_MAX_BACKOFF_MS)
        self._reset_thread_state()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"ovsdb-{self.chassis_id}", daemon=True)
        log.info("%s: connecting to %s", self.chassis_id, self.address)
        self._thread.start()

    def stop(self) -> None:
        """Stop the IDL thread and close the connection. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        if thread is threading.current_thread():
            return  # called from on_change: the thread closes the connection as it exits
        thread.join(timeout=10)
        if thread.is_alive():
            log.error("%s: OVSDB thread did not stop within 10 s", self.chassis_id)
            return
        self._thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def snapshot(self) -> ChassisPorts:
        """The latest ports seen (kept while disconnected, with `connected=False`)."""
        with self._lock:
            return self._snapshot

    def update(
        self,
        *,
        controller_targets: Sequence[str] | None = None,
        bridge_mappings: Mapping[str, str] | None = None,
    ) -> None:
        """The chassis record changed: converge to the new targets and/or mappings (None = unchanged)."""
        with self._lock:
            old = self._config
            self._config = self._make_config(
                old.controller_targets if controller_targets is None else controller_targets,
                old.bridge_mappings if bridge_mappings is None else bridge_mappings,
            )
            if self._config == old:
                return
            self._config_version += 1
            self._ready.clear()
        self._wake()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the database matches the configuration and every tunnel port, and the patch port of
        every mapping whose provider bridge exists, has an ofport. False on timeout."""
        return self._ready.wait(timeout)

    # --- IDL thread -------------------------------------------------------------------------------------

    @staticmethod
    def _make_config(targets: Sequence[str], mappings: Mapping[str, str]) -> _Config:
        if isinstance(targets, str):
            raise TypeError("controller_targets must be a sequence of targets, not a string")
        return _Config(tuple(dict.fromkeys(targets)), types.MappingProxyType(dict(mappings)))

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (a wake-up is pending anyway) or already closed

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._iterate()
                except Exception:
                    # A bug or an unexpected row must not end the agent: drop any half-built transaction,
                    # look again in a second.
                    log.exception("%s: OVSDB agent error; retrying in 1 s", self.chassis_id)
                    if self._idl.txn is not None:
                        self._idl.txn.abort()
                    self._txn, self._txn_actions = None, []
                    self._converged = False
                    self._seen_seqno = -1
                    self._published = None
                    self._stopping.wait(1.0)
        finally:
            self._ready.clear()
            self._idl.close()
            log.info("%s: OVSDB agent stopped", self.chassis_id)

    def _iterate(self) -> None:
        idl = self._idl
        idl.run()
        self._drain_wakeups()
        connected = self._is_connected()
        now = time.monotonic()
        if connected:
            self._disconnected_since = None
        elif self._disconnected_since is None:
            self._disconnected_since = now
        elif now - self._disconnected_since > 5 and not self._warned_disconnected:
            self._warned_disconnected = True
            log.warning(
                "%s: still no OVSDB connection to %s after 5 s; retrying", self.chassis_id, self.address
            )
        if connected != self._was_connected:
            if connected:
                self._warned_disconnected = False
                log.info("%s: OVSDB %s connected and synchronized", self.chassis_id, self.address)
            else:
                log.warning("%s: lost OVSDB connection to %s, reconnecting", self.chassis_id, self.address)
                self._converged = False
        if self._txn is not None:
            status = self._txn.commit()
            if status != ovs.db.idl.Transaction.INCOMPLETE:
                self._finish_txn(status)
        if connected and self._txn is None:
            with self._lock:
                version, config = self._config_version, self._config
            due = self._retry_at is not None and now >= self._retry_at
            if (
                idl.change_seqno != self._seen_seqno
                or version != self._applied_version
                or due
                or not self._was_connected
            ):
                self._seen_seqno = idl.change_seqno
                self._applied_version = version
                self._retry_at = None
                self._reconcile(config)
        self._was_connected = connected
        # What the ports and the readiness _publish reports depend on. The loop also wakes for probes, config
        # updates that change nothing and transaction replies: reading every port again through the IDL (a
        # third of the controller's samples at 20 chassis x 500 VIFs, bench_scale.py) would give the same answer.
        key = (
            idl.change_seqno,
            connected,
            self._converged,
            self._txn is None,
            self._config_version,
            self._applied_version,
        )
        if key != self._published:
            self._publish(connected)
            self._published = key

        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
        if self._txn is not None:
            self._txn.wait(poller)
        if self._retry_at is not None:
            poller.timer_wait(max(0, int((self._retry_at - time.monotonic()) * 1000)))
        poller.block()

    def _is_connected(self) -> bool:
        # The Idl has no public "connected" test; its session and state machine are what ovsdbapp uses too.
        idl = self._idl
        return bool(
            idl._session.is_connected() and idl.state == idl.IDL_S_MONITORING and idl.has_ever_connected()
        )

    def _finish_txn(self, status: str) -> None:
        txn, actions = self._txn, self._txn_actions
        self._txn, self._txn_actions = None, []
        what = "; ".join(actions)
        if status in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            log.info("%s: OVSDB updated: %s", self.chassis_id, what)
            self._retry_delay = RETRY_MIN_S
            return
        if status == ovs.db.idl.Transaction.TRY_AGAIN:
            # The database changed under us or the connection dropped: recompute once the replica moves on
            # (or after a short delay, in case it already has).
            log.info("%s: OVSDB transaction must be retried (%s)", self.chassis_id, what)
            self._retry_at = time.monotonic() + RETRY_MIN_S
            return
        log.error(
            "%s: OVSDB transaction failed (%s: %s) doing: %s; retrying in %.1f s",
            self.chassis_id, status, txn.get_error() or "no error text", what, self._retry_delay,
        )  # fmt: skip
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    # --- converging -------------------------------------------------------------------------------------

    def _reconcile(self, config: _Config) -> None:
        """Compare the replica with `config`; commit one transaction with whatever differs."""
        idl = self._idl
        txn = ovs.db.idl.Transaction(idl)
        txn.add_comment(f"sdn-controller: chassis {self.chassis_id}")
        actions: list[str] = []
        try:
            self._plan(txn, config, actions)
        except Exception:
            txn.abort()
            raise
        if not actions:
            txn.abort()
            self._converged = True
            return
        self._converged = False
        status = txn.commit()
        self._txn, self._txn_actions = txn, actions
        if status != ovs.db.idl.Transaction.INCOMPLETE:
            self._finish_txn(status)

    def _plan(self, txn: Any, config: _Config, actions: list[str]) -> None:
        tables = self._idl.tables
        roots = list(tables["Open_vSwitch"].rows.values())
        if roots:
            root = roots[0]
        else:
            root = txn.insert(tables["Open_vSwitch"])
            actions.append("create Open_vSwitch row")
        bridges = {br.name: br for br in tables["Bridge"].rows.values()}
        br_int = bridges.get(self.integration_bridge)
        if br_int is None:
            self._create_integration_bridge(txn, root, config, actions)
            return  # ports are added by the next pass, once the bridge has a committed row
        self._ensure_bridge_settings(br_int, actions)
        self._ensure_controllers(txn, br_int, config.controller_targets, actions)

        groups = self._wanted_ports(config, bridges)
        wanted_keys = {(w.bridge, w.name) for group in groups for w in group}
        port_home: dict[str, str] = {}  # port name -> bridge, for every port that stays
        for bridge in bridges.values():
            for port in bridge.ports:
                if OWNER_KEY in port.external_ids and (bridge.name, port.name) not in wanted_keys:
                    bridge.delvalue("ports", port)
                    actions.append(f"remove port {port.name} from {bridge.name}")
                else:
                    port_home[port.name] = bridge.name
        iface_home = {i.name: p.name for p in tables["Port"].rows.values() for i in p.interfaces}
        for group in groups:
            # Port and Interface names are unique database-wide: a name someone else uses would fail the
            # whole transaction, so that port (and its patch peer) waits until the name is free.
            taken = [
                (w.name, port_home.get(w.name), iface_home.get(w.name))
                for w in group
                if port_home.get(w.name, w.bridge) != w.bridge or iface_home.get(w.name, w.name) != w.name
            ]
            key = "conflict:" + ",".join(w.name for w in group)
            if taken:
                self._warn_once(key, "cannot create %s: name in use (name, bridge, port): %s",
                                " + ".join(f"{w.name} on {w.bridge}" for w in group), taken)  # fmt: skip
                continue
            self._warned.discard(key)
            for w in group:
                self._ensure_port(txn, bridges[w.bridge], w, actions)

    def _create_integration_bridge(self, txn: Any, root: Row, config: _Config, actions: list[str]) -> None:
        tables = self._idl.tables
        name = self.integration_bridge
        iface = txn.insert(tables["Interface"])
        iface.name = name
        iface.type = "internal"
        port = txn.insert(tables["Port"])
        port.name = name
        port.interfaces = [iface]
        bridge = txn.insert(tables["Bridge"])
        bridge.name = name
        bridge.ports = [port]
        bridge.datapath_type = self.datapath_type
        bridge.fail_mode = ["secure"]
        bridge.protocols = ["OpenFlow13"]
        bridge.other_config = {"datapath-id": self._dpid_hex}
        bridge.controller = [self._new_controller(txn, target) for target in config.controller_targets]
        root.addvalue("bridges", bridge)
        actions.append(
            f"create bridge {name} (dpid {self._dpid_hex}, controllers {config.controller_targets})"
        )

    @property
    def _dpid_hex(self) -> str:
        return f"{self.datapath_id:016x}"

    def _ensure_bridge_settings(self, br: Row, actions: list[str]) -> None:
        name = br.name
        if br.datapath_type != self.datapath_type:
            br.datapath_type = self.datapath_type
            actions.append(f"set {name} datapath_type={self.datapath_type}")
        if br.fail_mode != ["secure"]:
            br.fail_mode = ["secure"]
            actions.append(f"set {name} fail_mode=secure")
        if set(br.protocols) != {"OpenFlow13"}:
            br.protocols = ["OpenFlow13"]
            actions.append(f"set {name} protocols=OpenFlow13")
        if br.other_config.get("datapath-id") != self._dpid_hex:
            br.setkey("other_config", "datapath-id", self._dpid_hex)  # a mutation: other keys are kept
            actions.append(f"set {name} other_config:datapath-id={self._dpid_hex}")

    def _new_controller(self, txn: Any, target: str) -> Row:
        ctl = txn.insert(self._idl.tables["Controller"])
        ctl.target = target
        ctl.max_backoff = [CONTROLLER_MAX_BACKOFF_MS]
        ctl.connection_mode = [CONTROLLER_CONNECTION_MODE]
        return ctl

    def _ensure_controllers(self, txn: Any, br: Row, targets: tuple[str, ...], actions: list[str]) -> None:
        """Exactly one Controller row per target. A row whose target went away is re-pointed at a new target
        rather than replaced: removing a bridge's last controller and adding one deletes all its flows."""
        existing = sorted(br.controller, key=lambda c: (c.target, str(c.uuid)))
        by_target: dict[str, Row] = {}
        spare: list[Row] = []
        for ctl in existing:
            if ctl.target in targets and ctl.target not in by_target:
                by_target[ctl.target] = ctl
            else:
                spare.append(ctl)
        for target in targets:
            if target in by_target:
                continue
            if spare:
                ctl = spare.pop(0)
                actions.append(f"retarget controller {ctl.target} -> {target}")
                ctl.target = target
                by_target[target] = ctl
            else:
                br.addvalue("controller", self._new_controller(txn, target))
                actions.append(f"add controller {target}")
        for ctl in spare:
            br.delvalue("controller", ctl)
            actions.append(f"remove controller {ctl.target}")
        for target, ctl in by_target.items():
            if ctl.max_backoff != [CONTROLLER_MAX_BACKOFF_MS]:
                ctl.max_backoff = [CONTROLLER_MAX_BACKOFF_MS]
                actions.append(f"set controller {target} max_backoff={CONTROLLER_MAX_BACKOFF_MS}")
            if ctl.connection_mode != [CONTROLLER_CONNECTION_MODE]:
                ctl.connection_mode = [CONTROLLER_CONNECTION_MODE]
                actions.append(f"set controller {target} connection_mode={CONTROLLER_CONNECTION_MODE}")

    def _wanted_ports(self, config: _Config, bridges: Mapping[str, Row]) -> list[tuple[_WantedPort, ...]]:
        """The ports this agent should have, in groups that only make sense together (a patch pair)."""
        br_int = self.integration_bridge
        flow_based = {"remote_ip": "flow", "key": "flow"}
        wanted: list[tuple[_WantedPort, ...]] = [
            (_WantedPort(br_int, tunnel_port_name(t), t, flow_based, {OWNER_KEY: "tunnel"}),)
            for t in self.tunnel_types
        ]
        for physnet, bridge in sorted(config.bridge_mappings.items()):
            if bridge == br_int or bridge not in bridges:
                problem = "is the integration bridge" if bridge == br_int else "does not exist (yet)"
                self._warn_once(f"{physnet}->{bridge}", "bridge mapping %s -> %s skipped: bridge %s",
                                physnet, bridge, problem)  # fmt: skip
                continue
            self._warned.discard(f"{physnet}->{bridge}")
            int_side, provider_side = patch_port_names(physnet)
            ids = {OWNER_KEY: "patch", PHYSNET_KEY: physnet}
            wanted.append((
                _WantedPort(br_int, int_side, "patch", {"peer": provider_side}, ids),
                _WantedPort(bridge, provider_side, "patch", {"peer": int_side}, ids),
            ))  # fmt: skip
        return wanted

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: " + msg, self.chassis_id, *args)

    def _ensure_port(self, txn: Any, bridge: Row, w: _WantedPort, actions: list[str]) -> None:
        tables = self._idl.tables
        port = next((p for p in bridge.ports if p.name == w.name), None)
        if port is None:
            iface = txn.insert(tables["Interface"])
            iface.name = w.name
            iface.type = w.iface_type
            iface.options = dict(w.options)
            port = txn.insert(tables["Port"])
            port.name = w.name
            port.interfaces = [iface]
            port.external_ids = dict(w.external_ids)
            bridge.addvalue("ports", port)
            actions.append(f"add {w.iface_type} port {w.name} to {w.bridge} {dict(w.options)}")
            return
        for key, value in w.external_ids.items():
            if port.external_ids.get(key) != value:
                port.setkey("external_ids", key, value)
                actions.append(f"mark port {w.name} {key}={value}")
        iface = next((i for i in port.interfaces if i.name == w.name), None)
        if iface is None or len(port.interfaces) != 1:
            iface = txn.insert(tables["Interface"])
            iface.name = w.name
            iface.type = w.iface_type
            iface.options = dict(w.options)
            port.interfaces = [iface]
            actions.append(f"rebuild interface of port {w.name}")
            return
        if iface.type != w.iface_type:
            iface.type = w.iface_type
            actions.append(f"set interface {w.name} type={w.iface_type}")
        if iface.options != dict(w.options):
            iface.options = dict(w.options)
            actions.append(f"set interface {w.name} options={dict(w.options)}")

    # --- reporting --------------------------------------------------------------------------------------

    def _publish(self, connected: bool) -> None:
        ports = self._read_ports(connected)
        with self._lock:  # decided under the lock so that a concurrent update() can't be missed
            changed = ports != self._snapshot
            self._snapshot = ports
            ready = (
                connected
                and self._converged
                and self._txn is None
                and self._config_version == self._applied_version
                and all(t in ports.tunnels for t in self.tunnel_types)
                and all(
                    p in ports.patches
                    for p, b in self._config.bridge_mappings.items()
                    if self._bridge_exists(b)
                )
            )
            if ready:
                self._ready.set()
            else:
                self._ready.clear()
        if changed:
            log.debug("%s: ports %s", self.chassis_id, ports)
            if self._on_change is not None:
                try:
                    self._on_change(self.chassis_id, ports)
                except Exception:
                    log.exception("%s: on_change callback failed", self.chassis_id)

    def _bridge_exists(self, name: str) -> bool:
        return name != self.integration_bridge and any(
            br.name == name for br in self._idl.tables["Bridge"].rows.values()
        )

    def _read_ports(self, connected: bool) -> ChassisPorts:
        if not self._idl.has_ever_connected():
            return ChassisPorts(connected=connected)
        br_int = next(
            (br for br in self._idl.tables["Bridge"].rows.values() if br.name == self.integration_bridge),
            None,
        )
        if br_int is None:
            return ChassisPorts(connected=connected)
        vifs: dict[str, int] = {}
        tunnels: dict[str, int] = {}
        patches: dict[str, int] = {}
        tunnel_names = {tunnel_port_name(t): t for t in self.tunnel_types}
        for port in br_int.ports:
            owner = port.external_ids.get(OWNER_KEY)
            for iface in port.interfaces:
                ofport = _ofport(iface)
                if not ofport:
                    if iface.error:
                        self._warn_once(f"error:{iface.name}", "interface %s: %s", iface.name, iface.error[0])
                    continue
                self._warned.discard(f"error:{iface.name}")
                if owner == "tunnel" and port.name in tunnel_names:
                    tunnels[tunnel_names[port.name]] = ofport
                elif owner == "patch" and PHYSNET_KEY in port.external_ids:
                    patches[port.external_ids[PHYSNET_KEY]] = ofport
                elif owner is None and (iface_id := iface.external_ids.get("iface-id")):
                    if iface_id in vifs and vifs[iface_id] != ofport:
                        self._warn_once(f"dup:{iface_id}", "iface-id %s is on ofports %d and %d; using the lower",
                                        iface_id, vifs[iface_id], ofport)  # fmt: skip
                        ofport = min(ofport, vifs[iface_id])
                    vifs[iface_id] = ofport
        return ChassisPorts(_frozen(vifs), _frozen(tunnels), _frozen(patches), connected)
