"""Controller configuration: defaults, then a TOML file, then command-line flags (each overrides the last)."""

from __future__ import annotations

import argparse
import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from apps.nat import REDIRECT_BASE
from controller.api.streams import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_TENANT
from topology.etcd_store import EtcdConfig
from topology.history import HistoryPolicy
from topology.model import ModelConfig
from topology.ops_security import DEFAULT_FLOW_BUDGET


def _ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """ "1000:1999,5000:5999" -> ((1000, 1999), (5000, 5999))."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition(":")
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


@dataclass(frozen=True)
class Config:
    openflow_listen: str = "0.0.0.0:6653"
    grpc_listen: str = "127.0.0.1:50051"
    data_dir: str = "data"
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json" (one object per line); README "Logs"
    grpc_workers: int = 32  # API threads for unary calls; streams get threads of their own (max_streams)
    # open streams (Watch, health Watch, reflection) at once, in total and per tenant; one over is refused
    # with RESOURCE_EXHAUSTED before it starts, so streams never take the unary calls' threads
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_tenant: int = DEFAULT_MAX_STREAMS_PER_TENANT
    underlay_mtu: int = 1500
    default_segment_type: str = "vxlan"
    vxlan_ranges: str = "1000:99999"
    gre_ranges: str = "1000:99999"
    geneve_ranges: str = "1000:99999"
    vlan_ranges: list[str] = field(default_factory=list)  # "physnet:low:high"
    shutdown_grace_s: float = 5.0
    # how switches reach this controller (the Controller row the OVSDB agent writes on each chassis);
    # default: tcp:<openflow_listen host, or 127.0.0.1 for 0.0.0.0>:<port>
    switch_target: str = ""
    datapath_type: str = "system"  # br-int's datapath: "system" (kernel) or "netdev" (userspace, the lab)
    metrics_listen: str = "127.0.0.1:9464"  # Prometheus endpoint ("" = off)
    dashboard_listen: str = "127.0.0.1:8080"  # read-only web dashboard, token-protected ("" = off)
    # Neutron's v2.0 REST API (and Octavia's v2) for the OpenStack tools; X-Auth-Token tokens ("" = off)
    neutron_listen: str = "127.0.0.1:9696"
    drift_interval_s: float = 30.0  # verify every switch's flows against the desired set (0 = off)
    stats_interval_s: float = 10.0  # collect flow counters for metrics and the dashboard (0 = off)
    # compare each chassis's incremental compile with a full compile, repair a divergence (0 = off)
    self_check_interval_s: float = 300.0
    self_check_every_change: bool = False  # the self-check after every change (tests; costly at scale)
    demo: bool = False
    # chassis that may hold routers' external gateways (SNAT, floating IPs), in order of preference
    gateway_chassis: list[str] = field(default_factory=list)
    # installed plug-ins not to load: as if uninstalled (their flows swept, their records kept)
    disabled_plugins: list[str] = field(default_factory=list)
    # a gateway chassis whose switch is disconnected (or OVSDB unknown) this long loses its routers to the
    # next candidate; healthy this long again, it takes them back
    gateway_failover_s: float = 3.0
    # learned external next hops not confirmed by an ARP reply this long are probed again (gone: removed)
    neighbor_ttl_s: float = 600.0
    # security-group flows a tenant may have on one chassis; writes going over it are refused (0 = no budget)
    flow_budget_per_tenant: int = DEFAULT_FLOW_BUDGET
    # DHCPv4 (controller/dhcp.py): the lease the controller gives, and each port's DHCP packets/s to it
    dhcp_lease_s: int = 43200
    dhcp_rate_pps: int = 10
    # change history kept for Watch resumes (topology/history.py): a change is compacted once it is this many
    # revisions behind or this old, whichever comes first (0 = that bound off; both 0 = keep everything)
    history_revisions: int = 10_000
    history_age_s: float = 3600.0
    history_interval_s: float = 5.0  # seconds between compaction rounds
    # TLS (README "Security"): the CA and the controller's certificate live in pki_dir (default DATA_DIR/pki,
    # created on first start); each insecure_* option turns one channel's TLS off, with a warning at start
    pki_dir: str = ""
    tls_san: list[str] = field(
        default_factory=list
    )  # more names the controller's certificate must be valid for
    insecure_openflow: bool = (
        False  # plaintext OpenFlow: no certificates, a datapath id is bound to an address
    )
    insecure_ovsdb: bool = False  # let chassis register plaintext tcp: OVSDB addresses
    insecure_grpc: bool = False  # plaintext gRPC on a non-loopback grpc_listen
    neutron_tls: str = "auto"  # "auto": HTTPS unless neutron_listen is a loopback address; "always"
    insecure_neutron: bool = False  # plain HTTP for the Neutron API on a non-loopback neutron_listen
    grpc_tls: str = "auto"  # "auto": TLS unless grpc_listen is a loopback address; "always"
    grpc_require_client_cert: bool = False  # gRPC clients must present a certificate of our CA (tokens still)
    # where co-located chassis keep their ovs-vswitchd control sockets, DIR/<chassis id>/ovs-vswitchd*.ctl, for
    # the switch's own ofproto/trace in diff traces when their OVSDB is not a local unix socket (the lab)
    vswitchd_ctl_dir: str = ""
    # VPNaaS (README "VPNaaS"): chassis whose network namespace is on this machine, "CHASSIS=NETNS" (the lab):
    # the controller runs their VPN services' namespaces and IKE daemons itself; the ESP backend of those
    # daemons: "kernel" (the kernel's xfrm ESP, real hosts) or "userspace" (strongSwan's kernel-libipsec,
    # for kernels without ESP, as here); vpn_dir: their run directories (default DATA_DIR/vpn)
    vpn_netns: list[str] = field(default_factory=list)
    vpn_esp: str = "kernel"
    vpn_dir: str = ""
    # where the model lives (README "Store on etcd"): "sqlite" (DATA_DIR/topology.sqlite, one controller) or
    # "etcd" (shared by every controller given the same endpoints and prefix; https:// endpoints use TLS with
    # the CA and the client certificate below)
    store: str = "sqlite"
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_prefix: str = "/sdn/v1/"
    etcd_ca_file: str = ""
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    etcd_timeout_s: float = 5.0
    # store = "etcd": several controllers split the chassis with OpenFlow roles (README "Several controllers").
    # switch_targets: every controller's target, written into each chassis's OVSDB by whichever controller
    # (all write the same list); controller_id: this one's name in etcd (default HOST:OPENFLOW_PORT);
    # a chassis's master holds it with an etcd lease of ownership_lease_s and steps down on its own once
    # its keepalives have failed for ownership_lease_s - ownership_margin_s
    switch_targets: list[str] = field(default_factory=list)
    controller_id: str = ""
    ownership_lease_s: float = 3.0
    ownership_margin_s: float = 1.0

    @property
    def switch_controller_targets(self) -> list[str]:
        """The targets each chassis's br-int gets: every controller's (switch_targets), or this one's."""
        return list(self.switch_targets) or [self.switch_controller_target]

    @property
    def switch_controller_target(self) -> str:
        if self.switch_target:
            return self.switch_target
        host, port = split_hostport(self.openflow_listen)
        scheme = "tcp" if self.insecure_openflow else "ssl"
        return f"{scheme}:{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"

    @property
    def pki_path(self) -> Path:
        return Path(self.pki_dir) if self.pki_dir else self.data_path / "pki"

    @property
    def neutron_uses_tls(self) -> bool:
        if self.neutron_tls == "always":
            return True
        return not (is_loopback(split_hostport(self.neutron_listen)[0]) or self.insecure_neutron)

    @property
    def grpc_uses_tls(self) -> bool:
        if self.grpc_tls == "always":
            return True
        return not (is_loopback(split_hostport(self.grpc_listen)[0]) or self.insecure_grpc)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def history_policy(self) -> HistoryPolicy:
        return HistoryPolicy(
            revisions=self.history_revisions, age_s=self.history_age_s, interval_s=self.history_interval_s
        )

    def etcd_config(self) -> EtcdConfig:
        return EtcdConfig(
            tuple(self.etcd_endpoints),
            prefix=self.etcd_prefix,
            ca_file=self.etcd_ca_file,
            cert_file=self.etcd_cert_file,
            key_file=self.etcd_key_file,
            timeout_s=self.etcd_timeout_s,
        )

    def model_config(self) -> ModelConfig:
        vlan: dict[str, list[tuple[int, int]]] = {}
        for spec in self.vlan_ranges:
            physnet, _, rng = spec.partition(":")
            vlan.setdefault(physnet, []).extend(_ranges(rng))
        return ModelConfig(
            underlay_mtu=self.underlay_mtu,
            default_segment_type=self.default_segment_type,
            tunnel_ranges={
                "vxlan": _ranges(self.vxlan_ranges),
                "gre": _ranges(self.gre_ranges),
                "geneve": _ranges(self.geneve_ranges),
            },
            vlan_ranges={k: tuple(v) for k, v in vlan.items()},
        )


def is_loopback(host: str) -> bool:
    """`host` can only be reached from this machine (a loopback address or "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdn-controller",
        description="Run the SDN controller (OpenFlow listener + gRPC API) on a data directory.",
    )
    p.add_argument("--config", help="TOML file with any of the options below (flags win)")
    p.add_argument("--openflow-listen", help="HOST:PORT for switches (default 0.0.0.0:6653)")
    p.add_argument("--grpc-listen", help="HOST:PORT for the API (default 127.0.0.1:50051)")
    p.add_argument("--data-dir", help="where the store and token file live (default ./data)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (default text)",
    )
    p.add_argument(
        "--grpc-workers",
        type=int,
        help="API threads for unary calls (default 32); streams run "
        "on threads of their own, up to --max-streams",
    )
    p.add_argument(
        "--max-streams",
        type=int,
        metavar="N",
        help="open API streams (Watch, health Watch, reflection) at once; one more is refused "
        f"with RESOURCE_EXHAUSTED (default {DEFAULT_MAX_STREAMS})",
    )
    p.add_argument(
        "--max-streams-per-tenant",
        type=int,
        metavar="N",
        help="open API streams one tenant may hold (streams without a token share one bucket); "
        f"one more is refused with RESOURCE_EXHAUSTED (default {DEFAULT_MAX_STREAMS_PER_TENANT})",
    )
    p.add_argument("--underlay-mtu", type=int, help="MTU of the tunnel underlay (default 1500)")
    p.add_argument("--default-segment-type", choices=["vxlan", "gre", "geneve"])
    p.add_argument("--vxlan-ranges", help="VNIs tenants' networks get, e.g. 1000:1999,5000:5999")
    p.add_argument("--gre-ranges")
    p.add_argument("--geneve-ranges")
    p.add_argument(
        "--vlan-range",
        dest="vlan_ranges",
        action="append",
        help="PHYSNET:LOW:HIGH VLAN ids allocatable on a physical network (repeatable)",
    )
    p.add_argument(
        "--switch-target",
        help="controller target written into each chassis's OVSDB, "
        "e.g. tcp:192.0.2.1:6653 (default: from --openflow-listen)",
    )
    p.add_argument("--datapath-type", choices=["system", "netdev"], help="br-int datapath (default system)")
    p.add_argument("--metrics-listen", help='HOST:PORT of the Prometheus endpoint ("" = off)')
    p.add_argument("--dashboard-listen", help='HOST:PORT of the web dashboard ("" = off)')
    p.add_argument(
        "--neutron-listen",
        help='HOST:PORT of the Neutron v2.0 REST API for the OpenStack tools (default 127.0.0.1:9696; "" = off)',
    )
    p.add_argument(
        "--neutron-tls",
        choices=["auto", "always"],
        help="auto (default): HTTPS unless --neutron-listen is loopback; always: HTTPS on loopback too",
    )
    p.add_argument(
        "--insecure-neutron",
        action="store_true",
        default=None,
        help="plain HTTP on a non-loopback --neutron-listen (warned at start; tokens still needed)",
    )
    p.add_argument("--drift-interval-s", type=float, help="seconds between flow verifications (0 = off)")
    p.add_argument("--stats-interval-s", type=float, help="seconds between flow counter collections")
    p.add_argument(
        "--self-check-interval-s",
        type=float,
        help="seconds between compile self-checks: every "
        "chassis compiled from scratch and compared with the incremental state (default 300; 0 = off)",
    )
    p.add_argument(
        "--self-check-every-change",
        action="store_true",
        default=None,
        help="run the compile self-check after every change (tests; a full compile per change)",
    )
    p.add_argument(
        "--gateway-chassis",
        dest="gateway_chassis",
        action="append",
        help="CHASSIS that may hold routers' external gateways (SNAT, floating IPs); repeatable, "
        "in order of preference: a router's gateway goes to the first one mapping its external "
        "network's physical network",
    )
    p.add_argument(
        "--disable-plugin",
        dest="disabled_plugins",
        action="append",
        help="NAME of an installed plug-in not to load (repeatable): as if uninstalled, its flows and "
        "meters are swept and its stored records kept",
    )
    p.add_argument(
        "--gateway-failover-s",
        type=float,
        help="seconds a gateway chassis's switch may be "
        "disconnected (or its OVSDB facts unknown) before its routers move to the next gateway chassis; "
        "as long healthy again before they move back (default 3)",
    )
    p.add_argument(
        "--neighbor-ttl-s",
        type=float,
        help="seconds after which a learnt external next hop is "
        "probed again, and removed if it does not answer (default 600; 0 = never)",
    )
    p.add_argument(
        "--flow-budget-per-tenant",
        type=int,
        metavar="N",
        help="security-group flows a tenant may have per chassis; a rule or port change going over "
        f"it is refused with FAILED_PRECONDITION (default {DEFAULT_FLOW_BUDGET}; 0 = no budget)",
    )
    p.add_argument("--dhcp-lease-s", type=int, help="lease time of DHCPv4 answers (default 43200)")
    p.add_argument(
        "--dhcp-rate-pps",
        type=int,
        help="DHCP packets/s each port may send the controller; the "
        "excess is dropped in the switch by the port's meter (default 10, burst as many)",
    )
    p.add_argument(
        "--history-revisions",
        type=int,
        metavar="N",
        help="keep the changes of the newest N revisions for Watch resumes (default 10000; 0 = no "
        "count bound)",
    )
    p.add_argument(
        "--history-age-s",
        type=float,
        metavar="S",
        help="compact changes older than S seconds (default 3600; 0 = no age bound); a Watch "
        "resuming from a compacted revision gets OUT_OF_RANGE REVISION_COMPACTED and must re-list",
    )
    p.add_argument("--history-interval-s", type=float, help="seconds between compaction rounds (default 5)")
    p.add_argument(
        "--pki-dir",
        help="the CA and the controller's certificate (default DATA_DIR/pki, created "
        "on first start; see `sdn-controller pki --help`)",
    )
    p.add_argument(
        "--tls-san",
        dest="tls_san",
        action="append",
        help="a host name or address the controller's certificate must also be valid for (repeatable)",
    )
    p.add_argument(
        "--insecure-openflow",
        action="store_true",
        default=None,
        help="plaintext OpenFlow (tcp: targets): no switch certificates; a datapath id is bound to the "
        "address it first connects from (warned at start)",
    )
    p.add_argument(
        "--insecure-ovsdb",
        action="store_true",
        default=None,
        help="allow plaintext tcp: OVSDB addresses for chassis (warned at start)",
    )
    p.add_argument(
        "--insecure-grpc",
        action="store_true",
        default=None,
        help="plaintext gRPC on a non-loopback --grpc-listen (warned at start; tokens still needed)",
    )
    p.add_argument(
        "--grpc-tls",
        choices=["auto", "always"],
        help="auto (default): TLS unless --grpc-listen is loopback; always: TLS on loopback too",
    )
    p.add_argument(
        "--grpc-require-client-cert",
        action="store_true",
        default=None,
        help="gRPC clients must present a certificate issued by the CA (bearer tokens still required)",
    )
    p.add_argument(
        "--vswitchd-ctl-dir",
        help="DIR with CHASSIS/ovs-vswitchd*.ctl of chassis on this machine whose "
        "OVSDB is reached over ssl: (the lab): diff traces add the switch's ofproto/trace",
    )
    p.add_argument(
        "--vpn-netns",
        dest="vpn_netns",
        action="append",
        help="CHASSIS=NETNS: a chassis whose network namespace NETNS is on this machine; the controller runs "
        "the IKE daemons of the VPN services placed on it (repeatable)",
    )
    p.add_argument(
        "--vpn-esp",
        choices=["kernel", "userspace"],
        help="ESP of the VPN services' IKE daemons: kernel (xfrm, default) or userspace (strongSwan's "
        "kernel-libipsec: for kernels without ESP)",
    )
    p.add_argument(
        "--vpn-dir", help="run directories of the VPN services' IKE daemons (default DATA_DIR/vpn)"
    )
    p.add_argument("--store", choices=["sqlite", "etcd"], help="where the model lives (default sqlite)")
    p.add_argument(
        "--etcd-endpoints",
        type=lambda v: [e for e in v.split(",") if e],
        help="store=etcd: comma-separated client URLs, http://HOST:PORT or https://HOST:PORT (TLS)",
    )
    p.add_argument("--etcd-prefix", help="store=etcd: the key prefix of this deployment (default /sdn/v1/)")
    p.add_argument(
        "--switch-targets",
        type=lambda v: [e for e in v.split(",") if e],
        help="comma-separated targets of every controller, written into each chassis's OVSDB (store=etcd)",
    )
    p.add_argument("--controller-id", help="store=etcd: this controller's name (default HOST:OPENFLOW_PORT)")
    p.add_argument("--ownership-lease-s", type=float, help="store=etcd: a chassis master's lease (default 3)")
    p.add_argument(
        "--ownership-margin-s",
        type=float,
        help="store=etcd: step down this long before the lease can expire (default 1)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="create a demo topology (two tenants, overlapping subnets) if the store is empty",
    )
    return p


def load(argv: list[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        data = tomllib.loads(Path(args.config).read_text())
        known = {f.name for f in fields(Config)}
        unknown = set(data) - known
        if unknown:
            raise SystemExit(f"{args.config}: unknown option(s) {', '.join(sorted(unknown))}")
        values.update(data)
    for f in fields(Config):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    cfg = replace(Config(), **values)
    if cfg.gateway_failover_s <= 0 or cfg.neighbor_ttl_s < 0:
        raise SystemExit("gateway_failover_s must be above 0 and neighbor_ttl_s at least 0")
    if cfg.dhcp_rate_pps < 1 or cfg.dhcp_lease_s < 60:
        raise SystemExit("dhcp_rate_pps must be at least 1 and dhcp_lease_s at least 60")
    if cfg.history_revisions < 0 or cfg.history_age_s < 0 or cfg.history_interval_s <= 0:
        raise SystemExit(
            "history_revisions and history_age_s must be at least 0 (0 = off) and history_interval_s above 0"
        )
    if cfg.grpc_workers < 1 or cfg.max_streams < 1 or not 1 <= cfg.max_streams_per_tenant <= cfg.max_streams:
        raise SystemExit(
            "grpc_workers and max_streams must be at least 1, and max_streams_per_tenant "
            "between 1 and max_streams"
        )
    if cfg.log_format not in ("text", "json"):
        raise SystemExit(f"log_format must be text or json, not {cfg.log_format!r}")
    if cfg.store not in ("sqlite", "etcd"):
        raise SystemExit(f"store must be sqlite or etcd, not {cfg.store!r}")
    if cfg.store == "etcd" and not cfg.etcd_endpoints:
        raise SystemExit('store = "etcd" needs etcd_endpoints')
    if cfg.store == "etcd" and not (cfg.etcd_prefix.startswith("/") and cfg.etcd_prefix.endswith("/")):
        raise SystemExit(f"etcd_prefix must start and end with /, not {cfg.etcd_prefix!r}")
    if not 0 < cfg.ownership_margin_s < cfg.ownership_lease_s:
        raise SystemExit("ownership_margin_s must be above 0 and below ownership_lease_s")
    if cfg.vpn_esp not in ("kernel", "userspace"):
        raise SystemExit(f"vpn_esp must be kernel or userspace, not {cfg.vpn_esp!r}")
    if any("=" not in v or not all(v.split("=", 1)) for v in cfg.vpn_netns):
        raise SystemExit(f"vpn_netns entries are CHASSIS=NETNS, not {cfg.vpn_netns!r}")
    if cfg.neutron_tls not in ("auto", "always"):
        raise SystemExit(f"neutron_tls must be auto or always, not {cfg.neutron_tls!r}")
    if cfg.grpc_tls not in ("auto", "always"):
        raise SystemExit(f"grpc_tls must be auto or always, not {cfg.grpc_tls!r}")
    if cfg.insecure_openflow and cfg.switch_target.startswith("ssl:"):
        raise SystemExit("insecure_openflow listens without TLS: switch_target must be a tcp: target")
    if not cfg.insecure_openflow and cfg.switch_target and not cfg.switch_target.startswith("ssl:"):
        raise SystemExit(
            f"switch_target {cfg.switch_target!r}: the OpenFlow listener speaks TLS, so switches "
            "need an ssl: target (or set insecure_openflow)"
        )
    if any(hi >= REDIRECT_BASE for _lo, hi in _ranges(cfg.vxlan_ranges)):
        raise SystemExit(
            f"vxlan_ranges must stay below {REDIRECT_BASE}: VNIs from there up carry routers' "
            "packets to their gateway chassis"
        )
    return cfg
