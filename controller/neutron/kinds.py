"""Neutron's core resources as mappings over this project's tables: networks, subnets, ports, routers,
floating IPs, security groups and their rules. What is not here is not claimed (README "Neutron API")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.api import convert
from controller.neutron.mapping import (
    Attr,
    BadInput,
    Kind,
    Sub,
    View,
    as_bool,
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
    items,
    number,
    ref,
    refs,
    strings,
    text,
)
from controller.neutron.qos import KINDS as QOS_KINDS
from controller.neutron.qos import qos_policy_id
from controller.neutron.services import SERVICES
from proto.sdn.v1 import topology_pb2 as pb

V2 = "/v2.0"


def _extras(message: Any) -> tuple[Attr, ...]:
    """shared and tags where the message has them (Neutron's defaults otherwise: not shared, no tags)."""
    out: list[Attr] = []
    out.append(flag("shared", default=False) if has_field(message, "shared") else const("shared", False))
    if has_field(message, "tags"):
        out.append(strings("tags"))
    return tuple(out)


# ------------------------------------------------------------------------------------------ networks


def _segment_get(v: View, m: pb.Network) -> str | None:
    return convert.SEGMENT_FROM_PB.get(m.segment_type) or None


def _segment_put(m: pb.Network, value: Any) -> list[str]:
    kind = as_str("provider:network_type", value)
    if kind not in convert.SEGMENT_TO_PB:
        raise BadInput("provider:network_type", f"'{kind}' is not one of {sorted(convert.SEGMENT_TO_PB)}")
    m.segment_type = convert.SEGMENT_TO_PB[kind]
    return ["segment_type"]


def _subnets_of(v: View, m: pb.Network) -> list[str]:
    net = ident(m.name)
    with v.tables.state.lock:
        return sorted(v.tables.state.topology.network_subnets.get(net, ()))


NETWORK = Kind(
    "network",
    "network",
    "networks",
    V2,
    (
        *common(pb.Network),
        flag("admin_state_up"),
        computed("status", lambda v, m: "ACTIVE" if m.admin_state_up else "DOWN"),
        computed("subnets", _subnets_of),
        number("mtu"),
        Attr("provider:network_type", _segment_get, _segment_put, admin=True, field="segment_type"),
        text("provider:physical_network", "physical_network", null=True, admin=True),
        number("provider:segmentation_id", "segment_id", null=True, admin=True),
        flag("router:external", "external", default=False),
        qos_policy_id("network"),
        *_extras(pb.Network),
    ),
)

# ------------------------------------------------------------------------------------------ subnets


def _gateway_get(v: View, m: pb.Subnet) -> str | None:
    return m.gateway_ip or None


def _gateway_put(m: pb.Subnet, value: Any) -> list[str]:
    m.gateway_ip = as_str("gateway_ip", value)  # null: no gateway (set, empty)
    return ["gateway_ip"]


SUBNET = Kind(
    "subnet",
    "subnet",
    "subnets",
    V2,
    (
        *common(pb.Subnet),
        ref("network_id", "network", "network"),
        text("cidr"),
        replace(number("ip_version", ro=True), accept=True),
        Attr("gateway_ip", _gateway_get, _gateway_put, field="gateway_ip"),
        items("allocation_pools", "allocation_pools", (Sub("start", "start"), Sub("end", "end"))),
        items("host_routes", "host_routes", (Sub("destination", "destination"), Sub("nexthop", "nexthop"))),
        strings("dns_nameservers", "dns_servers"),
        flag("enable_dhcp"),
        text("ipv6_ra_mode", null=True),  # immutable: a PUT naming it is refused, as Neutron does
        text("ipv6_address_mode", null=True),
        const("subnetpool_id", None),
        *_extras(pb.Subnet)[1:],  # (subnets have no "shared" of their own)
    ),
)

# ------------------------------------------------------------------------------------------ ports

PORT = Kind(
    "port",
    "port",
    "ports",
    V2,
    (
        *common(pb.Port),
        ref("network_id", "network", "network"),
        text("mac_address"),
        items(
            "fixed_ips", "fixed_ips", (Sub("subnet_id", "subnet", "subnet"), Sub("ip_address", "ip_address"))
        ),
        text("device_owner"),
        text("device_id"),
        flag("admin_state_up"),
        flag("port_security_enabled"),
        items(
            "allowed_address_pairs",
            "allowed_address_pairs",
            (Sub("ip_address", "ip_address"), Sub("mac_address", "mac_address")),
        ),
        refs("security_groups", "security_groups", "security_group"),
        computed("status", lambda v, m: pb.Port.Status.Name(m.status).replace("STATUS_UNSPECIFIED", "DOWN")),
        replace(ref("binding:host_id", "binding_chassis", "chassis"), admin=True),
        computed("binding:vif_type", lambda v, m: "ovs" if m.binding_chassis else "unbound", admin=True),
        qos_policy_id("port"),
        *_extras(pb.Port)[1:],
    ),
)

# ------------------------------------------------------------------------------------------ routers


def _gateway_info_get(v: View, m: pb.Router) -> dict[str, Any] | None:
    if not m.HasField("external_gateway"):
        return None
    eg = m.external_gateway
    fixed = [{"subnet_id": ident(f.subnet), "ip_address": f.ip_address} for f in eg.fixed_ips]
    if not fixed and eg.fixed_ip.ip_address:
        fixed.append({"subnet_id": ident(eg.fixed_ip.subnet), "ip_address": eg.fixed_ip.ip_address})
    return {
        "network_id": ident(eg.network),
        "enable_snat": eg.enable_snat if eg.HasField("enable_snat") else True,
        "external_fixed_ips": fixed,
    }


def _gateway_info_put(m: pb.Router, value: Any) -> list[str]:
    name = "external_gateway_info"
    m.ClearField("external_gateway")
    if value is None or value == {}:
        return ["external_gateway"]  # no gateway (an update removes it)
    info = as_dict(name, value)
    unknown = set(info) - {"network_id", "enable_snat", "external_fixed_ips"}
    if unknown:
        raise BadInput(name, f"unrecognized key(s) {', '.join(sorted(unknown))}")
    eg = m.external_gateway
    eg.network = convert.name_of("network", as_str("network_id", info.get("network_id")))
    if "enable_snat" in info:
        eg.enable_snat = as_bool("enable_snat", info["enable_snat"])
    fixed = as_list("external_fixed_ips", info.get("external_fixed_ips"))
    # exactly the gateway's addresses, at most one per family, an IPv4 one among them (dual stack)
    for f in fixed:
        entry = as_dict("external_fixed_ips", f)
        subnet = as_str("subnet_id", entry.get("subnet_id")) if entry.get("subnet_id") else ""
        one = eg.fixed_ips.add()
        one.subnet = convert.name_of("subnet", subnet) if subnet else ""
        one.ip_address = as_str("ip_address", entry.get("ip_address")) if entry.get("ip_address") else ""
    return ["external_gateway"]


ROUTER = Kind(
    "router",
    "router",
    "routers",
    V2,
    (
        *common(pb.Router),
        flag("admin_state_up"),
        computed("status", lambda v, m: "ACTIVE" if m.admin_state_up else "DOWN"),
        Attr("external_gateway_info", _gateway_info_get, _gateway_info_put, field="external_gateway"),
        items("routes", "routes", (Sub("destination", "destination"), Sub("nexthop", "nexthop"))),
        *_extras(pb.Router)[1:],
    ),
)

# ------------------------------------------------------------------------------------------ floating IPs

FLOATING_IP = Kind(
    "floating_ip",
    "floatingip",
    "floatingips",
    V2,
    (
        *common(pb.FloatingIp),
        ref("floating_network_id", "floating_network", "network"),
        text("floating_ip_address"),
        ref("port_id", "port", "port"),
        text("fixed_ip_address", null=True),
        ref("router_id", "router", "router", ro=True),
        computed("status", lambda v, m: "ACTIVE" if m.port else "DOWN"),
        *_extras(pb.FloatingIp)[1:],
    ),
)

# ------------------------------------------------------------------------------------------ security groups

ICMP = ("icmp", "icmpv6", "ipv6-icmp", "1", "58")


def _is_icmp(m: pb.SecurityGroupRule) -> bool:
    return m.protocol in ICMP


def _range_get(which: str, icmp_field: str) -> Any:
    def get(v: View, m: pb.SecurityGroupRule) -> int | None:
        if _is_icmp(m):
            return getattr(m, icmp_field) if m.HasField(icmp_field) else None
        return getattr(m, which) or None

    return get


def _range_put(which: str) -> Any:
    def put(m: pb.SecurityGroupRule, value: Any) -> list[str]:
        setattr(m, which, as_int(which, value))
        return [which]

    return put


def _icmp_put(which: str) -> Any:
    def put(m: pb.SecurityGroupRule, value: Any) -> list[str]:
        if value is not None:
            setattr(m, which, as_int(which, value))
        return [which]

    return put


def _rule_body(body: dict[str, Any], create: bool) -> dict[str, Any]:
    """Neutron carries an ICMP type and code in port_range_min and port_range_max, and calls ICMPv6
    "ipv6-icmp"; the message has fields of their own."""
    out = dict(body)
    if out.get("protocol") == "ipv6-icmp":
        out["protocol"] = "icmpv6"
    if out.get("protocol") in ICMP:
        if "port_range_min" in out:
            out["icmp_type"] = out.pop("port_range_min")
        if "port_range_max" in out:
            out["icmp_code"] = out.pop("port_range_max")
    return out


def _rule_attrs() -> tuple[Attr, ...]:
    return (
        *common(pb.SecurityGroupRule),
        ref("security_group_id", "security_group", "security_group"),
        text("direction"),
        text("ethertype"),
        text("protocol", null=True),
        Attr("port_range_min", _range_get("port_range_min", "icmp_type"), _range_put("port_range_min")),
        Attr("port_range_max", _range_get("port_range_max", "icmp_code"), _range_put("port_range_max")),
        Attr("icmp_type", lambda v, m: None, _icmp_put("icmp_type"), field="icmp_type", shown=False),
        Attr("icmp_code", lambda v, m: None, _icmp_put("icmp_code"), field="icmp_code", shown=False),
        text("remote_ip_prefix", null=True),
        ref("remote_group_id", "remote_group", "security_group"),
    )


SECURITY_GROUP_RULE = Kind(
    "security_group_rule",
    "security_group_rule",
    "security-group-rules",
    V2,
    _rule_attrs(),
    body=_rule_body,
)


def _rules_get(v: View, m: pb.SecurityGroup) -> list[dict[str, Any]]:
    return [{a.name: a.get(v, r) for a in SECURITY_GROUP_RULE.attrs if a.shown} for r in m.rules]


SECURITY_GROUP = Kind(
    "security_group",
    "security_group",
    "security-groups",
    V2,
    (
        *common(pb.SecurityGroup),
        computed("security_group_rules", _rules_get),
        const("stateful", True),
        *_extras(pb.SecurityGroup),
    ),
)

CORE = (NETWORK, SUBNET, PORT, ROUTER, FLOATING_IP, SECURITY_GROUP, SECURITY_GROUP_RULE)
#: every mapping: the core, the advanced services (FWaaS, VPNaaS, Octavia), QoS (while its plug-in is loaded)
ALL = (*CORE, *SERVICES, *QOS_KINDS)
