"""What a gateway chassis runs for the VPN services placed on it: per service a namespace attached to br-int
and one charon in it holding the service's IPsec site connections (apps/vpn.py's ServicePlan).

`VpnHost` is the interface (apply the wanted plans, report each connection's status). `LocalVpnHost`
implements it for a chassis whose network namespace is on the controller's own machine (the lab: every
chassis is a namespace here): it creates the namespace, a veth into the chassis's namespace plugged on br-int
(through the chassis's OVSDB, with the controller's TLS identity), addresses, routes and neighbours, then
starts charon and loads connections and keys over VICI. A chassis on another machine needs an agent there
implementing the same two calls (not built: README "VPNaaS").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import vici

from apps.vpn import EXT_HOP, INT_HOP, ConnPlan, ServicePlan
from controller.pki import TlsFiles
from controller.services.charon import Charon, reason_of
from topology.records import VPN_ACTIVE, VPN_DOWN, VPN_ERROR, VPN_PENDING_CREATE

log = logging.getLogger(__name__)

#: DPD actions (Neutron's) -> charon's; "hold" is realized as restart: the tunnel is re-established at once
#: rather than on the next packet (a trap policy needs the kernel's acquires; userspace ESP has none here)
DPD_ACTIONS = {"hold": "restart", "restart": "restart", "clear": "clear", "disabled": "clear"}
#: a service that could not be set up is tried again after this long (the same plan)
RETRY_S = 5.0
#: an initiator whose connection has had no IKE_SA this long initiates again
REINITIATE_S = 3.0


class VpnHost(Protocol):
    """The VPN side of one gateway chassis."""

    chassis_id: str

    def apply(self, plans: Sequence[ServicePlan]) -> None:
        """Run exactly these services (start, change, stop what differs)."""
        ...

    def statuses(self) -> dict[str, tuple[str, str]]:
        """IPsec site connection id -> (status, reason) of the connections running here."""
        ...

    def close(self) -> None:
        """Stop every service (the controller stops)."""
        ...


def _prefix(chassis_netns: str, workdir: Path) -> str:
    """Every VPN namespace of a chassis starts with it: unique per chassis namespace and controller (its run
    directory) on the machine, so that several controllers here never take each other's namespaces."""
    return (
        "vpn-" + hashlib.sha256(f"{chassis_netns}\0{Path(workdir).resolve()}".encode()).hexdigest()[:6] + "-"
    )


def _sh(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res


@dataclass
class _ConnState:
    plan: ConnPlan
    reason: str = ""  # the last failure charon logged for it (cleared when its CHILD_SA comes up)
    was_up: bool = False
    no_sa_since: float | None = None


@dataclass
class _Running:
    plan: ServicePlan
    netns: str
    port: str
    charon: Charon
    conns: dict[str, _ConnState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalVpnHost:
    """VPN services of a chassis whose network namespace `chassis_netns` is on this machine."""

    def __init__(
        self,
        chassis_id: str,
        chassis_netns: str,
        ovsdb: Callable[[], str],
        workdir: Path,
        esp: str = "userspace",
        tls: TlsFiles | None = None,
        integration_bridge: str = "br-int",
    ) -> None:
        self.chassis_id = chassis_id
        self.chassis_netns = chassis_netns
        self.ovsdb = ovsdb  # the chassis's OVSDB address, as its record has it now
        self.tls = tls
        self.esp = esp
        self.bridge = integration_bridge
        self.workdir = Path(workdir)
        # every namespace of this host starts with it: unique per chassis namespace on the machine
        self.prefix = _prefix(chassis_netns, self.workdir)
        self.running: dict[str, _Running] = {}
        # namespaces an earlier controller left (killed without stopping them): adopted by the first apply if
        # still wanted (their charon keeps its SAs: a controller restart does not drop the tunnels), else removed
        self._leftovers: set[str] | None = {n for n in _netns_names() if n.startswith(self.prefix)}
        # services that could not be set up: (the plan, why, when to try again); their connections are ERROR
        self.failed: dict[str, tuple[ServicePlan, str, float]] = {}

    def __repr__(self) -> str:
        return f"LocalVpnHost({self.chassis_id!r}, netns={self.chassis_netns!r})"

    # --- VpnHost -----------------------------------------------------------------------------------------

    def apply(self, plans: Sequence[ServicePlan]) -> None:
        wanted = {p.id: p for p in plans}
        if self._leftovers is not None:
            self._adopt_leftovers(wanted.values())
        for sid in [s for s in self.running if s not in wanted]:
            self._stop(sid)
        for sid in [s for s in self.failed if s not in wanted]:
            del self.failed[sid]
        now = time.monotonic()
        for sid, plan in wanted.items():
            run = self.running.get(sid)
            if run is not None and run.plan == plan and run.charon.running():
                continue
            failed = self.failed.get(sid)
            if failed is not None and failed[0] == plan and now < failed[2]:
                continue  # the same plan failed a moment ago: not again at every round
            try:
                self._start_or_update(plan)
                self.failed.pop(sid, None)
            except (
                RuntimeError,
                OSError,
                subprocess.SubprocessError,
                vici.exception.CommandException,
                vici.exception.SessionException,
            ) as e:
                log.error("VPN service %s on %s: %s", sid, self.chassis_id, e)
                self._stop(sid)
                self.failed[sid] = (plan, f"could not be set up on {self.chassis_id}: {e}", now + RETRY_S)

    def statuses(self) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {
            c.id: (VPN_ERROR, why[:500]) for plan, why, _at in self.failed.values() for c in plan.connections
        }
        now = time.monotonic()
        for run in list(self.running.values()):
            try:
                sas = run.charon.list_sas() if run.charon.running() else []
            except (OSError, RuntimeError, vici.exception.SessionException) as e:
                log.warning("VPN %s: list-sas: %s", run.plan.id, e)
                sas = []
            by_ike: dict[str, dict[str, Any]] = {}
            for entry in sas:
                for name, sa in entry.items():
                    if sa.get("state") == "ESTABLISHED" or name not in by_ike:
                        by_ike[name] = sa
            for cid, cs in run.conns.items():
                sa = by_ike.get(cid)
                up = sa is not None and any(
                    c.get("state") == "INSTALLED" for c in (sa.get("child-sas") or {}).values()
                )
                with run.lock:
                    if up:
                        cs.reason, cs.was_up, cs.no_sa_since = "", True, None
                        out[cid] = (VPN_ACTIVE, "")
                        continue
                    if cs.reason:
                        out[cid] = (VPN_DOWN, cs.reason)
                    elif cs.was_up:
                        out[cid] = (VPN_DOWN, "tunnel down")
                    else:
                        out[cid] = (VPN_PENDING_CREATE, "")
                if sa is None and cs.plan.initiator and run.charon.running():
                    if cs.no_sa_since is None:
                        cs.no_sa_since = now
                    elif now - cs.no_sa_since > REINITIATE_S:
                        cs.no_sa_since = now
                        self._initiate(run, cid)
                elif sa is not None:
                    cs.no_sa_since = None
        return out

    def close(self) -> None:
        for sid in list(self.running):
            self._stop(sid)

    # --- namespaces and charon ------------------------------------------------------------------------

    def _names(self, service_id: str) -> tuple[str, str]:
        """(namespace, br-int port name <= 15 chars) of a service on this chassis."""
        h = hashlib.sha256(service_id.encode()).hexdigest()[:10]
        return self.prefix + h, "vpn" + h

    def _vsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        db = self.ovsdb()
        if not db:
            raise RuntimeError(f"chassis {self.chassis_id} has no OVSDB address")
        argv = [
            "ovs-vsctl",
            f"--db={db}",
            "--timeout=10",
            "--no-wait",
        ]  # the database only: vswitchd may be down
        if db.startswith("ssl:"):
            if self.tls is None:
                raise RuntimeError(f"{db}: an ssl: OVSDB needs the controller's TLS identity")
            argv += [
                f"--private-key={self.tls.key}",
                f"--certificate={self.tls.cert}",
                f"--ca-cert={self.tls.ca}",
            ]
        return _sh([*argv, *args], check=check)

    def _plumb(self, plan: ServicePlan, netns: str, port: str, old: ServicePlan | None) -> None:
        """The namespace, its veth on br-int, address, neighbours and routes (idempotent)."""
        if _sh(["ip", "netns", "exec", netns, "true"], check=False).returncode != 0:
            _sh(["ip", "netns", "add", netns])
        ch, ns = ["ip", "-n", self.chassis_netns], ["ip", "-n", netns]
        if _sh([*ch, "link", "show", port], check=False).returncode != 0:
            _sh([*ch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns])
        _sh([*ns, "link", "set", "eth0", "address", plan.ns_mac, "mtu", "1500", "up"])
        _sh([*ns, "link", "set", "lo", "up"])
        _sh([*ch, "link", "set", port, "up"])
        # TSO off: large segments would not cross the userspace datapath (LAB.md)
        _sh(["ip", "netns", "exec", netns, "ethtool", "-K", "eth0", "tx", "off"], check=False)
        _sh(
            ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]
            + [f"net.ipv4.conf.{i}.rp_filter=0" for i in ("all", "default", "eth0")]
        )
        _sh([*ns, "addr", "replace", f"{plan.gateway_ip}/32", "dev", "eth0"])
        # the router's addresses in its local subnets: charon's routes to the peer subnets take their source
        # from the local traffic selector (without one it installs no CHILD_SA)
        for addr in plan.local_addresses:
            _sh([*ns, "addr", "replace", f"{addr}/32", "dev", "eth0"])
        for addr in set(old.local_addresses if old else ()) - set(plan.local_addresses):
            _sh([*ns, "addr", "del", f"{addr}/32", "dev", "eth0"], check=False)
        for hop, mac in ((EXT_HOP, plan.gateway_mac), (INT_HOP, plan.int_mac)):
            _sh([*ns, "neigh", "replace", hop, "lladdr", mac, "dev", "eth0", "nud", "permanent"])
            _sh([*ns, "route", "replace", hop, "dev", "eth0", "scope", "link"])
        _sh([*ns, "route", "replace", "default", "via", EXT_HOP, "dev", "eth0"])
        for cidr in plan.local_cidrs:
            _sh([*ns, "route", "replace", cidr, "via", INT_HOP, "dev", "eth0"])
        for cidr in set(old.local_cidrs if old else ()) - set(plan.local_cidrs):
            _sh([*ns, "route", "del", cidr, "via", INT_HOP], check=False)
        self._vsctl(
            "--", "--may-exist", "add-port", self.bridge, port,
            "--", "set", "Interface", port, f"external_ids:iface-id={plan.iface_id}",
        )  # fmt: skip

    def _start_or_update(self, plan: ServicePlan) -> None:
        netns, port = self._names(plan.id)
        run = self.running.get(plan.id)
        t0 = time.monotonic()
        self._plumb(plan, netns, port, run.plan if run else None)
        plumbed = time.monotonic() - t0
        if run is None or not run.charon.running():
            if run is not None:
                run.charon.stop()
            rundir = self.workdir / netns
            rundir.mkdir(parents=True, exist_ok=True)
            holder: dict[str, _Running] = {}
            charon = Charon(netns, rundir, self.esp, on_event=self._handler(holder))
            run = _Running(plan, netns, port, charon)
            holder["run"] = run
            charon.start()
            self.running[plan.id] = run
        old = {cid: cs.plan for cid, cs in run.conns.items()}
        new = {c.id: c for c in plan.connections}
        for cid in [c for c in old if c not in new or old[c] != new[c]]:
            self._unload(run, cid)
        for cid, cp in new.items():
            if old.get(cid) != cp:
                self._load(run, plan, cp)
        run.plan = plan
        log.info("VPN service %s on %s: %d connection(s) in %s (namespace and port %.2f s, then charon %.2f s)",
                 plan.id, self.chassis_id, len(new), netns, plumbed, time.monotonic() - t0 - plumbed)  # fmt: skip

    def _load(self, run: _Running, plan: ServicePlan, cp: ConnPlan) -> None:
        dpd = DPD_ACTIONS.get(cp.dpd_action, "restart")
        child = {
            "local_ts": list(cp.local_cidrs),
            "remote_ts": list(cp.peer_cidrs),
            "esp_proposals": [cp.esp_proposal],
            "mode": "tunnel",
            "life_time": f"{cp.esp_lifetime_s}s",
            "rekey_time": f"{max(1, cp.esp_lifetime_s * 9 // 10)}s",
            "dpd_action": dpd,
            "close_action": dpd if cp.initiator else "none",
            "start_action": "start" if cp.initiator else "none",
        }
        conn = {
            "version": cp.ike_version,
            "local_addrs": [plan.gateway_ip],
            "remote_addrs": [cp.peer_address],
            "proposals": [cp.ike_proposal],
            "encap": "yes" if self.esp == "userspace" else "no",  # userspace ESP travels in UDP 4500 only
            "mobike": "no",
            "unique": "replace",
            "keyingtries": 0 if cp.initiator else 1,
            "rekey_time": f"{max(1, cp.ike_lifetime_s * 9 // 10)}s",
            "dpd_delay": "0" if cp.dpd_action == "disabled" else f"{cp.dpd_interval_s}s",
            "dpd_timeout": f"{cp.dpd_timeout_s}s",  # IKEv1 only (IKEv2 uses its retransmissions)
            "local": {"auth": "psk", "id": cp.local_id},
            "remote": {"auth": "psk", "id": cp.peer_id},
            "children": {cp.id: child},
        }
        with run.lock:
            run.conns[cp.id] = _ConnState(cp)
        run.charon.call(
            lambda s: s.load_shared(
                {"id": f"psk-{cp.id}", "type": "IKE", "data": cp.psk, "owners": [cp.local_id, cp.peer_id]}
            )
        )
        run.charon.call(lambda s: s.load_conn({cp.id: conn}))

    def _unload(self, run: _Running, cid: str) -> None:
        with run.lock:
            run.conns.pop(cid, None)
        for fn in (
            lambda s: list(s.terminate({"ike": cid, "force": "yes", "timeout": -1})),
            lambda s: s.unload_conn({"name": cid}),
            lambda s: s.unload_shared({"id": f"psk-{cid}"}),
        ):
            try:
                run.charon.call(fn)
            except (vici.exception.CommandException, RuntimeError, OSError) as e:
                log.debug("VPN %s: unload %s: %s", run.plan.id, cid, e)

    def _initiate(self, run: _Running, cid: str) -> None:
        threading.Thread(
            target=run.charon.initiate, args=(cid, cid, 10_000), name=f"vpn-init-{cid[:8]}", daemon=True
        ).start()

    def _handler(self, holder: Mapping[str, _Running]) -> Callable[[str, Mapping[str, Any]], None]:
        return lambda kind, msg: self._on_event(holder, kind, msg)

    def _on_event(self, holder: Mapping[str, _Running], kind: str, msg: Mapping[str, Any]) -> None:
        run = holder.get("run")
        if run is None:
            return
        name = str(msg.get("ikesa-name", "")) if kind == "log" else ""
        if kind == "log":
            text = str(msg.get("msg", ""))
            with run.lock:
                cs = run.conns.get(name)
                if cs is not None and reason_of(text):
                    cs.reason = text
        elif kind == "child-updown":
            for ike, sa in msg.items():
                if ike != "up" and isinstance(sa, Mapping):
                    log.info("VPN %s: %s CHILD_SA %s", run.plan.id, ike, "up" if msg.get("up") else "down")

    def _stop(self, sid: str) -> None:
        run = self.running.pop(sid, None)
        netns, port = self._names(sid)
        if run is not None:
            for cid in list(run.conns):
                self._unload(run, cid)
            run.charon.stop()
        self._teardown(netns, port)
        log.info("VPN service %s stopped on %s", sid, self.chassis_id)

    def _teardown(self, netns: str, port: str) -> None:
        try:
            self._vsctl("--", "--if-exists", "del-port", self.bridge, port, check=False)
        except RuntimeError as e:
            log.warning("%s: %s", self, e)
        pids = _sh(["ip", "netns", "pids", netns], check=False).stdout.split()
        for pid in pids:  # its charon (a controller killed earlier left it running)
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _sh(["ip", "-n", self.chassis_netns, "link", "del", port], check=False)
        _sh(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(self.workdir / netns, ignore_errors=True)

    def _adopt_leftovers(self, plans: Iterable[ServicePlan]) -> None:
        leftovers, self._leftovers = self._leftovers or set(), None
        for plan in plans:
            netns, port = self._names(plan.id)
            if netns not in leftovers:
                continue
            holder: dict[str, _Running] = {}
            charon = Charon(netns, self.workdir / netns, self.esp, on_event=self._handler(holder))
            if charon.adopt():
                leftovers.discard(netns)
                # its connections are loaded again (identical ones keep their SAs): the plan without them
                run = _Running(dataclasses.replace(plan, connections=()), netns, port, charon)
                holder["run"] = run
                self.running[plan.id] = run
        for name in leftovers:
            self._teardown(name, "vpn" + name[len(self.prefix) :])


def _netns_names() -> list[str]:
    res = _sh(["ip", "-j", "netns", "list"], check=False)
    try:
        return [n["name"] for n in json.loads(res.stdout or "[]")]
    except ValueError:
        return []


def remove_namespaces_of(chassis_netns: str, workdir: Path) -> list[str]:
    """Kill and remove the VPN namespaces a controller with run directory `workdir` made for the chassis in
    `chassis_netns` (a test's teardown after killing the controller); returns their names."""
    prefix = _prefix(chassis_netns, workdir)
    gone = []
    for name in _netns_names():
        if name.startswith(prefix):
            for pid in _sh(["ip", "netns", "pids", name], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _sh(["ip", "netns", "del", name], check=False)
            gone.append(name)
    return gone
