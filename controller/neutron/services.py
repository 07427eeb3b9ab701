"""The advanced services as their OpenStack APIs show them: FWaaS v2 (/v2.0/fwaas), VPNaaS (/v2.0/vpn) and
Octavia v2 (/v2/lbaas), each a mapping over the same tables the gRPC services use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.api import convert
from controller.neutron.mapping import (
    Attr,
    BadInput,
    Getter,
    Kind,
    View,
    as_dict,
    as_int,
    as_list,
    as_str,
    common,
    computed,
    const,
    flag,
    has_field,
    ident,
    number,
    ref,
    refs,
    text,
)
from proto.sdn.v1 import topology_pb2 as pb

FWAAS = "/v2.0/fwaas"
VPN = "/v2.0/vpn"
LBAAS = "/v2/lbaas"
LBAAS_V20 = "/v2.0/lbaas"  # the same API: Octavia answers both, python-octaviaclient asks this one

# ------------------------------------------------------------------------------------------ FWaaS v2


def _port_range(name: str, low: str, high: str) -> Attr:
    """FWaaS's "80" or "8000:8080" (null: any) over a min and a max field."""

    def get(v: View, m: Any) -> str | None:
        lo, hi = getattr(m, low), getattr(m, high)
        if not lo:
            return None
        return str(lo) if hi in (0, lo) else f"{lo}:{hi}"

    def put(m: Any, value: Any) -> list[str]:
        text_value = "" if value is None else str(value)
        lo_s, _, hi_s = text_value.partition(":")
        setattr(m, low, as_int(name, lo_s or None))
        setattr(m, high, as_int(name, hi_s or lo_s or None))
        return [low, high]

    return Attr(name, get, put, field=low)


def _policy_of_rule(v: View, m: Any) -> str | None:
    rule = ident(m.name)
    with v.tables.state.lock:
        policies: list[Any] = list(v.tables.state.topology.table("firewall_policy").values())
        for policy in policies:
            if rule in policy.rules:
                return str(policy.id)
    return None


FIREWALL_RULE = Kind(
    "firewall_rule",
    "firewall_rule",
    "firewall_rules",
    FWAAS,
    (
        *common(pb.FirewallRule),
        text("protocol", null=True),
        number("ip_version"),
        text("source_ip_address", null=True),
        text("destination_ip_address", null=True),
        _port_range("source_port", "source_port_min", "source_port_max"),
        _port_range("destination_port", "destination_port_min", "destination_port_max"),
        text("action"),
        flag("enabled"),
        const("shared", False),
        computed("firewall_policy_id", _policy_of_rule),
    ),
)

FIREWALL_POLICY = Kind(
    "firewall_policy",
    "firewall_policy",
    "firewall_policies",
    FWAAS,
    (
        *common(pb.FirewallPolicy),
        refs("firewall_rules", "firewall_rules", "firewall_rule"),
        const("audited", False),
        const("shared", False),
    ),
)

FIREWALL_GROUP = Kind(
    "firewall_group",
    "firewall_group",
    "firewall_groups",
    FWAAS,
    (
        *common(pb.FirewallGroup),
        ref("ingress_firewall_policy_id", "ingress_firewall_policy", "firewall_policy"),
        ref("egress_firewall_policy_id", "egress_firewall_policy", "firewall_policy"),
        refs("ports", "ports", "port"),
        flag("admin_state_up"),
        computed("status", lambda v, m: "ACTIVE" if m.ports and m.admin_state_up else "INACTIVE"),
        const("shared", False),
    ),
)

# ------------------------------------------------------------------------------------------ VPNaaS


def _lifetime() -> Attr:
    """{"units": "seconds", "value": N}."""

    def put(m: Any, value: Any) -> list[str]:
        life = as_dict("lifetime", value)
        if life.get("units", "seconds") != "seconds":
            raise BadInput("lifetime", "only seconds are supported as units")
        m.lifetime = as_int("lifetime", life.get("value"))
        return ["lifetime"]

    return Attr("lifetime", lambda v, m: {"units": "seconds", "value": m.lifetime}, put, field="lifetime")


IKE_POLICY = Kind(
    "ike_policy",
    "ikepolicy",
    "ikepolicies",
    VPN,
    (
        *common(pb.IkePolicy),
        text("ike_version"),
        text("encryption_algorithm"),
        text("auth_algorithm"),
        text("pfs"),
        text("phase1_negotiation_mode"),
        _lifetime(),
    ),
)

IPSEC_POLICY = Kind(
    "ipsec_policy",
    "ipsecpolicy",
    "ipsecpolicies",
    VPN,
    (
        *common(pb.IpsecPolicy),
        text("transform_protocol"),
        text("encapsulation_mode"),
        text("encryption_algorithm"),
        text("auth_algorithm"),
        text("pfs"),
        _lifetime(),
    ),
)

VPN_SERVICE = Kind(
    "vpn_service",
    "vpnservice",
    "vpnservices",
    VPN,
    (
        *common(pb.VpnService),
        ref("router_id", "router", "router"),
        const("subnet_id", None),  # the legacy form; endpoint groups name the subnets
        flag("admin_state_up"),
        text("status", ro=True),
        text("external_v4_ip", null=True, ro=True),
        text("external_v6_ip", null=True, ro=True),
    ),
)


def _endpoints() -> Attr:
    """Subnet ids (type "subnet"; the message names them "subnets/ID") or CIDRs (type "cidr", as they are:
    a CIDR has a "/", an id never does)."""

    def put(m: Any, value: Any) -> list[str]:
        del m.endpoints[:]
        for x in as_list("endpoints", value):
            endpoint = as_str("endpoints", x)
            m.endpoints.append(endpoint if "/" in endpoint else convert.name_of("subnet", endpoint))
        return ["endpoints"]

    def get(v: View, m: Any) -> list[str]:
        return [e.removeprefix("subnets/") for e in m.endpoints]

    return Attr("endpoints", get, put, field="endpoints")


ENDPOINT_GROUP = Kind(
    "vpn_endpoint_group",
    "endpoint_group",
    "endpoint-groups",
    VPN,
    (*common(pb.VpnEndpointGroup), text("type"), _endpoints()),
)


def _dpd() -> Attr:
    def get(v: View, m: Any) -> dict[str, Any]:
        return {
            "action": m.dpd_action or "hold",
            "interval": m.dpd_interval if m.HasField("dpd_interval") else 30,
            "timeout": m.dpd_timeout if m.HasField("dpd_timeout") else 120,
        }

    def put(m: Any, value: Any) -> list[str]:
        dpd = as_dict("dpd", value)
        paths = []
        if "action" in dpd:
            m.dpd_action = as_str("dpd", dpd["action"])
            paths.append("dpd_action")
        if "interval" in dpd:
            m.dpd_interval = as_int("dpd", dpd["interval"])
            paths.append("dpd_interval")
        if "timeout" in dpd:
            m.dpd_timeout = as_int("dpd", dpd["timeout"])
            paths.append("dpd_timeout")
        return paths

    return Attr("dpd", get, put, field="dpd_action")


def _mtu() -> Attr:
    def put(m: Any, value: Any) -> list[str]:
        m.mtu = as_int("mtu", value)
        return ["mtu"]

    return Attr("mtu", lambda v, m: m.mtu if m.HasField("mtu") else 1500, put, field="mtu")


IPSEC_SITE_CONNECTION = Kind(
    "ipsec_site_connection",
    "ipsec_site_connection",
    "ipsec-site-connections",
    VPN,
    (
        *common(pb.IpsecSiteConnection),
        ref("vpnservice_id", "vpnservice", "vpn_service"),
        ref("ikepolicy_id", "ikepolicy", "ike_policy"),
        ref("ipsecpolicy_id", "ipsecpolicy", "ipsec_policy"),
        ref("local_ep_group_id", "local_ep_group", "vpn_endpoint_group"),
        ref("peer_ep_group_id", "peer_ep_group", "vpn_endpoint_group"),
        text("peer_address"),
        text("peer_id"),
        text("local_id"),
        Attr("psk", lambda v, m: "******" if m.psk_set else None, lambda m, x: _psk(m, x), field="psk"),
        _mtu(),
        _dpd(),
        text("initiator"),
        flag("admin_state_up"),
        text("status", ro=True),
        const("route_mode", "static"),
        const("auth_mode", "psk"),
        const("peer_cidrs", []),  # the legacy form; endpoint groups name the peer's CIDRs
    ),
)


def _psk(m: Any, value: Any) -> list[str]:
    m.psk = as_str("psk", value)
    return ["psk"]


# ------------------------------------------------------------------------------------------ Octavia v2


def _ids(kind: str, field: str, match: Callable[[Any, str], bool] | None = None) -> Getter:
    """[{"id": ...}] of the records of `kind` whose `field` is this one's id (Octavia's references)."""

    def get(v: View, m: Any) -> list[dict[str, str]]:
        me = ident(m.name)
        with v.tables.state.lock:
            records = list(v.tables.state.topology.table(kind).values())
        return [{"id": r.id} for r in sorted(records, key=lambda r: r.id) if getattr(r, field) == me]

    return get


def _one(field: str) -> Getter:
    """[{"id": ...}] of the one record the message names in `field` (a pool's load balancer)."""
    return lambda v, m: [{"id": ident(getattr(m, field))}] if getattr(m, field) else []


def _seconds(name: str) -> Attr:
    def put(m: Any, value: Any) -> list[str]:
        setattr(m, name, float(as_int(name, value)))
        return [name]

    return Attr(name, lambda v, m: int(getattr(m, name)), put, field=name)


def _octavia_common(message: Any) -> tuple[Attr, ...]:
    return (
        *common(message),
        const("provisioning_status", "ACTIVE"),  # every write is done when it returns
        text("operating_status", ro=True)
        if has_field(message, "operating_status")
        else computed("operating_status", lambda v, m: "ONLINE" if m.admin_state_up else "OFFLINE"),
    )


def _octavia_up() -> Attr:
    return flag("admin_state_up")


LOAD_BALANCER = Kind(
    "load_balancer",
    "loadbalancer",
    "loadbalancers",
    LBAAS,
    (
        *_octavia_common(pb.LoadBalancer),
        ref("vip_subnet_id", "vip_subnet", "subnet"),
        text("vip_address"),
        ref("vip_port_id", "vip_port", "port", ro=True),
        _octavia_up(),
        computed("listeners", _ids("listener", "load_balancer_id")),
        computed("pools", _ids("pool", "load_balancer_id")),
        const("provider", "sdn"),
        const("flavor_id", None),
    ),
    octavia=True,
    aliases=(LBAAS_V20,),
)

LISTENER = Kind(
    "listener",
    "listener",
    "listeners",
    LBAAS,
    (
        *_octavia_common(pb.Listener)[:-1],
        computed("operating_status", lambda v, m: "ONLINE" if m.admin_state_up else "OFFLINE"),
        ref("loadbalancer_id", "load_balancer", "load_balancer"),
        computed("loadbalancers", _one("load_balancer")),
        text("protocol"),
        number("protocol_port"),
        ref("default_pool_id", "default_pool", "pool"),
        _octavia_up(),
        const("connection_limit", -1),
    ),
    octavia=True,
    aliases=(LBAAS_V20,),
)

POOL = Kind(
    "pool",
    "pool",
    "pools",
    LBAAS,
    (
        *_octavia_common(pb.Pool),
        ref("loadbalancer_id", "load_balancer", "load_balancer"),
        computed("loadbalancers", _one("load_balancer")),
        ref("listener_id", "listener", "listener"),
        computed("listeners", _ids("listener", "default_pool_id")),
        computed("members", _ids("member", "pool_id")),
        computed(
            "healthmonitor_id",
            lambda v, m: next((x["id"] for x in _ids("health_monitor", "pool_id")(v, m)), None),
        ),
        text("protocol"),
        text("lb_algorithm"),
        _octavia_up(),
        const("session_persistence", None),
    ),
    octavia=True,
    aliases=(LBAAS_V20,),
)


def _weight() -> Attr:
    def put(m: Any, value: Any) -> list[str]:
        m.weight = as_int("weight", value)
        return ["weight"]

    return Attr("weight", lambda v, m: m.weight if m.HasField("weight") else 1, put, field="weight")


MEMBER = Kind(
    "member",
    "member",
    "members",
    LBAAS,
    (
        *_octavia_common(pb.Member),
        text("address"),
        number("protocol_port"),
        ref("subnet_id", "subnet", "subnet"),
        _weight(),
        _octavia_up(),
        const("backup", False),
        const("monitor_address", None),
        const("monitor_port", None),
    ),
    parent="pools",
    parent_kind="pool",
    octavia=True,
    aliases=(LBAAS_V20,),
)

HEALTH_MONITOR = Kind(
    "health_monitor",
    "healthmonitor",
    "healthmonitors",
    LBAAS,
    (
        *_octavia_common(pb.HealthMonitor),
        ref("pool_id", "pool", "pool"),
        computed("pools", _one("pool")),
        text("type"),
        _seconds("delay"),
        _seconds("timeout"),
        number("max_retries"),
        text("http_method", null=True),
        text("url_path", null=True),
        text("expected_codes", null=True),
        _octavia_up(),
    ),
    octavia=True,
    aliases=(LBAAS_V20,),
)

SERVICES = (
    FIREWALL_RULE,
    FIREWALL_POLICY,
    FIREWALL_GROUP,
    IKE_POLICY,
    IPSEC_POLICY,
    VPN_SERVICE,
    ENDPOINT_GROUP,
    IPSEC_SITE_CONNECTION,
    LOAD_BALANCER,
    LISTENER,
    POOL,
    MEMBER,
    HEALTH_MONITOR,
)
