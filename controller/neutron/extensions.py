"""/v2.0/extensions: the Neutron API extensions this server really has, each listed only when the resource
kinds (and message fields) it needs are there: a client deciding on an extension is never told one that
is not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proto.sdn.v1 import topology_pb2 as pb


@dataclass(frozen=True)
class Extension:
    alias: str
    name: str
    description: str
    present: Callable[[frozenset[str]], bool]  # given the kinds served


def _kinds(*kinds: str) -> Callable[[frozenset[str]], bool]:
    return lambda served: all(k in served for k in kinds)


def _field(message: Any, field: str) -> Callable[[frozenset[str]], bool]:
    return lambda t: field in message.DESCRIPTOR.fields_by_name


EXTENSIONS = (
    Extension(
        "provider",
        "Provider Network",
        "provider:network_type, physical_network, segmentation_id.",
        _kinds("network"),
    ),
    Extension("external-net", "Neutron external network", "router:external on networks.", _kinds("network")),
    Extension("net-mtu", "Network MTU", "The mtu attribute of networks.", _kinds("network")),
    Extension("net-mtu-writable", "Network MTU (writable)", "mtu set at create.", _kinds("network")),
    Extension(
        "router",
        "Neutron L3 Router",
        "Routers, interfaces and floating IPs.",
        _kinds("router", "floating_ip"),
    ),
    Extension(
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "enable_snat in external_gateway_info.",
        _kinds("router"),
    ),
    Extension("extraroute", "Neutron Extra Route", "Static routes on routers.", _kinds("router")),
    Extension(
        "security-group",
        "security-group",
        "Security groups and rules.",
        _kinds("security_group", "security_group_rule"),
    ),
    Extension("port-security", "Port Security", "port_security_enabled on ports.", _kinds("port")),
    Extension(
        "allowed-address-pairs", "Allowed Address Pairs", "allowed_address_pairs on ports.", _kinds("port")
    ),
    Extension(
        "binding", "Port Binding", "binding:host_id (the chassis) on ports, for admins.", _kinds("port")
    ),
    Extension(
        "standard-attr-revisions",
        "Resource revision numbers",
        "revision_number on resources.",
        _kinds("network"),
    ),
    Extension(
        "standard-attr-timestamp", "Resource timestamps", "created_at and updated_at.", _kinds("network")
    ),
    Extension(
        "standard-attr-description",
        "standard-attr-description",
        "description on networks and ports.",
        _field(pb.Network, "description"),
    ),
    Extension(
        "standard-attr-tag", "Tag support for resources", "tags on networks.", _field(pb.Network, "tags")
    ),
    Extension("pagination", "Pagination support", "limit, marker and page_reverse on lists.", lambda t: True),
    Extension("sorting", "Sorting support", "sort_key and sort_dir on lists.", lambda t: True),
    Extension("fields", "Fields", "fields= on lists and shows.", lambda t: True),
    Extension(
        "fwaas_v2",
        "Firewall service v2",
        "Firewall groups, policies and rules (/v2.0/fwaas).",
        _kinds("firewall_group", "firewall_policy", "firewall_rule"),
    ),
    Extension(
        "vpnaas",
        "VPN service",
        "IKE and IPsec policies, VPN services, site connections (/v2.0/vpn).",
        _kinds("vpn_service", "ipsec_site_connection"),
    ),
    Extension(
        "vpn-endpoint-groups",
        "VPN Endpoint Groups",
        "Endpoint groups of site connections.",
        _kinds("vpn_endpoint_group"),
    ),
    Extension(
        "qos",
        "Quality of Service",
        "QoS policies, bandwidth-limit and DSCP-marking rules (/v2.0/qos).",
        _kinds("qos_policy", "qos_rule"),
    ),
    Extension(
        "qos-bw-limit-direction",
        "Direction for QoS bandwidth limit rule",
        "direction (egress, ingress) on bandwidth limit rules.",
        _kinds("qos_rule"),
    ),
)


def supported(served: frozenset[str]) -> list[dict[str, Any]]:
    """The extensions of the kinds `served` (Neutron's extension list shape)."""
    return [
        {
            "alias": e.alias,
            "name": e.name,
            "description": e.description,
            "updated": "2026-12-07T00:00:00Z",
            "links": [],
        }
        for e in EXTENSIONS
        if e.present(served)
    ]
