"""Write operations: validate a request against the model's invariants and return the changes it makes.

Each function reads the Topology and returns a list of changes without touching it; the caller persists them
and then applies them, so a refused or failed write leaves the model as it was. Field paths in errors are
relative to the resource ("cidr", "fixed_ips[1].ip_address"); the API layer (controller/api/resources.py)
names them from the request, and owns the request's shape (FieldMask paths: an update gets mutable fields).
Authorization (who may set what, tenant visibility) is the northbound's job, not this module's.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import netaddr

from topology import errors, ipv6, portkeys
from topology.model import OVERLAY_OVERHEAD, Change, Topology
from topology.records import (
    OVERLAY_TYPES,
    OWNER_FLOATING_IP,
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    PORT_DOWN,
    SEGMENT_TYPES,
    Chassis,
    FloatingIp,
    Network,
    Port,
    Router,
    Subnet,
)

ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
PHYSNET_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
OVSDB_RE = re.compile(r"^(unix:/\S+|(tcp|ssl):\[?[0-9A-Fa-f.:]+\]?:\d{1,5})$")
MAX_SEGMENT_ID = {"vxlan": 2**24 - 1, "geneve": 2**24 - 1, "gre": 2**32 - 1, "vlan": 4094}
MAX_NAME = 255

# ------------------------------------------------------------------------------------------------ helpers


def check_id(ident: str, field_path: str) -> None:
    if not ID_RE.match(ident):
        raise errors.invalid(
            field_path,
            "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        )


def _check_name(name: str, field_path: str = "display_name") -> None:
    if len(name) > MAX_NAME:
        raise errors.invalid(field_path, f"longer than {MAX_NAME} characters")


def _ip(value: str, field_path: str, version: int | None = None) -> netaddr.IPAddress:
    try:
        addr = netaddr.IPAddress(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise errors.invalid(field_path, f"{value!r} is not an IP address") from None
    if "/" in value or (version is not None and addr.version != version):
        raise errors.invalid(field_path, f"{value!r} is not an IPv{version or 4}/6 address")
    return addr


def _cidr(value: str, field_path: str) -> netaddr.IPNetwork:
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise errors.invalid(field_path, f"{value!r} is not a CIDR") from None
    if "/" not in value:
        raise errors.invalid(field_path, f"{value!r} has no prefix length")
    return net


def _mac(value: str, field_path: str) -> str:
    try:
        mac = netaddr.EUI(value, dialect=netaddr.mac_unix_expanded)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise errors.invalid(field_path, f"{value!r} is not a MAC address") from None
    if mac.words[0] & 1:
        raise errors.invalid(field_path, f"{value!r} is a multicast MAC address")
    if int(mac) == 0:
        raise errors.invalid(field_path, "the all-zero MAC address is not allowed")
    return str(mac)


def _host_range(net: netaddr.IPNetwork) -> tuple[int, int]:
    """First and last usable host: IPv4 excludes network and broadcast addresses (except /31 and /32)."""
    if net.version == 4 and net.prefixlen < 31:
        return net.first + 1, net.last - 1
    if net.version == 6 and net.prefixlen < 127:
        return net.first + 1, net.last
    return net.first, net.last


def _ip_str(n: int, version: int) -> str:
    return str(netaddr.IPAddress(n, version))


def _stamp(rec: Any, rev: int, now: float, created: bool) -> Any:
    if created:
        return dataclasses.replace(rec, revision=rev, create_time=now, update_time=now)
    return dataclasses.replace(rec, revision=rev, update_time=now)


def _check_fields(fields: Mapping[str, Any], mutable: set[str]) -> None:
    """An update changes only mutable fields: the API layer refuses every other path of a FieldMask by name
    (controller/api/resources.py), so another one here is a caller's bug."""
    if not fields.keys() <= mutable:
        raise ValueError(f"not mutable: {sorted(set(fields) - mutable)}")


def new_id(topo: Topology, kind: str, requested: str, field_path: str) -> str:
    """The client-chosen id, checked, or a fresh UUID."""
    import uuid

    if requested:
        check_id(requested, field_path)
        if requested in topo.table(kind):
            raise errors.already_exists(kind, requested)
        return requested
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------------------------ networks


def create_network(topo: Topology, net: Network, rev: int, now: float) -> list[Change]:
    """`net` carries the request (segment_id None = allocate, mtu 0 = default)."""
    _check_name(net.display_name)
    check_description(net.description)
    net = dataclasses.replace(net, tags=normalize_tags(net.tags))
    stype = net.segment_type or topo.config.default_segment_type
    if stype not in SEGMENT_TYPES:
        raise errors.invalid("segment_type", f"must be one of {', '.join(SEGMENT_TYPES)}")
    physnet = net.physical_network
    seg = net.segment_id
    if stype in OVERLAY_TYPES:
        if physnet:
            raise errors.invalid("physical_network", f"a {stype} network has no physical network")
    else:
        if not physnet:
            raise errors.invalid("physical_network", f"a {stype} network needs a physical network")
        if not PHYSNET_RE.match(physnet):
            raise errors.invalid("physical_network", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if stype == "flat":
        if seg:
            raise errors.invalid("segment_id", "a flat network has no segment id")
        seg = None
        for other in topo.networks.values():
            if other.segment_type == "flat" and other.physical_network == physnet:
                raise errors.already_exists(
                    "network",
                    other.id,
                    reason="SEGMENT_IN_USE",
                    message=f"physical network {physnet!r} already has flat network {other.id!r}",
                )
    else:
        alloc = topo.segment_allocator(stype, physnet)
        if seg:
            if not 1 <= seg <= MAX_SEGMENT_ID[stype]:
                raise errors.invalid("segment_id", f"must be 1-{MAX_SEGMENT_ID[stype]} for {stype}")
            if seg in alloc.allocated:
                where = f" on {physnet!r}" if stype == "vlan" else ""
                raise errors.already_exists(
                    "network",
                    str(seg),
                    reason="SEGMENT_IN_USE",
                    message=f"{stype} segment {seg}{where} is in use",
                )
        else:
            chosen = alloc.choose()
            if chosen is None:
                where = f" on physical network {physnet!r}" if stype == "vlan" else ""
                raise errors.exhausted(
                    "SEGMENT_POOL_EXHAUSTED", f"no free {stype} segment id{where}", segment_type=stype
                )
            seg = chosen
    max_mtu = topo.config.underlay_mtu - OVERLAY_OVERHEAD[stype]
    mtu = net.mtu or max_mtu
    if not 68 <= mtu <= max_mtu:
        raise errors.invalid(
            "mtu", f"must be 68-{max_mtu} for {stype} on a {topo.config.underlay_mtu} underlay"
        )
    key = topo.datapath_keys.choose()
    if key is None:
        raise errors.exhausted("DATAPATH_KEYS_EXHAUSTED", "no free datapath key")
    rec = dataclasses.replace(net, segment_type=stype, segment_id=seg, mtu=mtu, key=key)
    return [("network", rec.id, None, _stamp(rec, rev, now, True))]


NETWORK_MUTABLE = {"display_name", "mtu", "admin_state_up", "external", "description", "tags", "shared"}
MAX_DESCRIPTION = 255
MAX_TAG, MAX_TAGS = 60, 50  # Neutron's tag length; a bound on how many


def check_description(text: str, field_path: str = "description") -> None:
    if len(text) > MAX_DESCRIPTION:
        raise errors.invalid(field_path, f"longer than {MAX_DESCRIPTION} characters")


def normalize_tags(tags: Sequence[str], field_path: str = "tags") -> tuple[str, ...]:
    """Neutron's tags: each 1-60 characters without ',' (its filter's separator); a set, kept sorted."""
    for i, tag in enumerate(tags):
        if not tag or len(tag) > MAX_TAG or "," in tag or tag != tag.strip():
            raise errors.invalid(
                f"{field_path}[{i}]", f"{tag!r}: a tag is 1-{MAX_TAG} characters, no ',' or outer spaces"
            )
    unique = tuple(sorted(set(tags)))
    if len(unique) > MAX_TAGS:
        raise errors.invalid(field_path, f"at most {MAX_TAGS} tags")
    return unique


def _check_labels(fields: dict[str, Any]) -> None:
    """description and tags of a create or update (in place: tags normalized)."""
    if "description" in fields:
        check_description(fields["description"])
    if "tags" in fields:
        fields["tags"] = normalize_tags(fields["tags"])


def update_network(
    topo: Topology, old: Network, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, NETWORK_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    _check_labels(fields)
    if "external" in fields and fields["external"] != old.external:
        _check_external_flip(topo, old, bool(fields["external"]))
    if old.shared and fields.get("shared") is False:
        others = sorted({p.tenant for p in topo.ports_of(old.id) if p.tenant != old.tenant})
        if others:
            raise errors.failed_precondition(
                "NETWORK_IN_USE",
                f"network {named(old)} has ports of {len(others)} other tenant(s); it stays shared until "
                "they are gone",
                network=old.id,
            )
    if "mtu" in fields:
        max_mtu = topo.config.underlay_mtu - OVERLAY_OVERHEAD[old.segment_type]
        fields["mtu"] = fields["mtu"] or max_mtu
        if not 68 <= fields["mtu"] <= max_mtu:
            raise errors.invalid("mtu", f"must be 68-{max_mtu} for {old.segment_type}")
    new = dataclasses.replace(old, **fields)
    return [("network", old.id, old, _stamp(new, rev, now, False))]


def _check_external_flip(topo: Topology, old: Network, external: bool) -> None:
    """An external network in use by gateways or floating IPs stays external; one with router interfaces
    cannot become external (Neutron's rules)."""
    owners = {p.device_owner for p in topo.ports_of(old.id)}
    if not external and owners & {OWNER_ROUTER_GATEWAY, OWNER_FLOATING_IP}:
        raise errors.failed_precondition(
            "NETWORK_IN_USE",
            f"network {named(old)} holds router gateways or floating IPs; it stays external "
            "until they are gone",
            network=old.id,
        )
    if external and topo.routers_of(old.id):
        raise errors.failed_precondition(
            "NETWORK_IN_USE",
            f"network {named(old)} has interfaces of router(s) "
            f"{', '.join(named_ref(topo.routers, r, old.tenant) for r in sorted(topo.routers_of(old.id)))}; "
            "an external network cannot",
            network=old.id,
        )


def named(rec: Any) -> str:
    """How a message names a record: "'web' (id 73cf...)" when it has a display name other than its id,
    else its id quoted. Only for a record of the caller's own (the one acted on, or `named_ref`'s check)."""
    label = getattr(rec, "display_name", "") or ""
    return f"{label!r} (id {rec.id})" if label and label != rec.id else repr(rec.id)


def named_ref(table: Mapping[str, Any], rid: str, tenant: str) -> str:
    """A record a message refers to by id: named by display name and id when it is `tenant`'s (the tenant
    of the record the call acts on), by id alone otherwise: never another tenant's name."""
    rec = table.get(rid)
    return named(rec) if rec is not None and getattr(rec, "tenant", None) == tenant else repr(rid)


def _network_named(topo: Topology, network_id: str) -> str:
    """A network a port is on (the caller's, or shared or external: visible to it), named."""
    net = topo.networks.get(network_id)
    return named(net) if net is not None else repr(network_id)


_OWNER_TABLE = {
    OWNER_ROUTER_INTERFACE: "routers",
    OWNER_ROUTER_GATEWAY: "routers",
    OWNER_FLOATING_IP: "floatingips",
    OWNER_LOAD_BALANCER: "load_balancers",
}


def _owner(topo: Topology, p: Port, tenant: str | None = None) -> str:
    """The router, floating IP or load balancer owning port `p`, named as `named_ref` does for `tenant` (the
    tenant of the record acted on; default the port's own)."""
    table = getattr(topo, _OWNER_TABLE.get(p.device_owner, "routers"))
    return named_ref(table, p.device_id, p.tenant if tenant is None else tenant)


def _refuse_router_owned(
    topo: Topology, ports: Sequence[Port], what: str, reason: str, tenant: str, **metadata: str
) -> None:
    """Even `force` does not remove router interfaces, gateways or floating IP addresses (Neutron refuses
    too): they are removed through their router or floating IP."""
    for p in ports:
        if p.device_owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY):
            kind = "an interface" if p.device_owner == OWNER_ROUTER_INTERFACE else "the external gateway"
            raise errors.failed_precondition(
                reason,
                f"{what} holds {kind} of router {_owner(topo, p, tenant)} "
                f"(port {named_ref(topo.ports, p.id, tenant)}); remove it from the "
                "router first (force does not)",
                router=p.device_id,
                port=p.id,
                **metadata,
            )
        if p.device_owner == OWNER_FLOATING_IP:
            raise errors.failed_precondition(
                reason,
                f"{what} holds floating IP {_owner(topo, p, tenant)} (port {named_ref(topo.ports, p.id, tenant)}); "
                "delete the floating IP "
                "first (force does not)",
                floating_ip=p.device_id,
                port=p.id,
                **metadata,
            )
        if p.device_owner == OWNER_LOAD_BALANCER:
            raise errors.failed_precondition(
                reason,
                f"{what} holds the VIP of load balancer {_owner(topo, p, tenant)} "
                f"(port {named_ref(topo.ports, p.id, tenant)}); delete the load "
                "balancer first (force does not)",
                load_balancer=p.device_id,
                port=p.id,
                **metadata,
            )


def _refuse_lb_members(
    topo: Topology, subnet_id: str, what: str, reason: str, tenant: str, **metadata: str
) -> None:
    """A subnet named by load balancer members goes only after them (force does not remove them)."""
    members = sorted(m.id for m in topo.members.values() if m.subnet_id == subnet_id)
    if members:
        named_members = ", ".join(named_ref(topo.members, m, tenant) for m in members)
        raise errors.failed_precondition(
            reason,
            f"{what}: subnet {named_ref(topo.subnets, subnet_id, tenant)} is the subnet of load balancer "
            f"member(s) {named_members}; "
            "delete them first (force does not)",
            member=members[0],
            **metadata,
        )


def _refuse_vpn_subnets(
    topo: Topology, subnet_ids: Iterable[str], what: str, reason: str, **metadata: str
) -> None:
    """A subnet listed by a VPN endpoint group goes only after the group (force does not remove it)."""
    for sid in sorted(subnet_ids):
        groups = sorted(topo.subnet_epgs.get(sid, ()))
        if groups:
            raise errors.failed_precondition(
                reason,
                f"{what}: subnet {sid!r} is in VPN endpoint group(s) {', '.join(groups)}; delete them first "
                "(force does not)",
                vpn_endpoint_group=groups[0],
                **metadata,
            )


def _refuse_vpn_router(topo: Topology, router_id: str, what: str, reason: str) -> None:
    """A router with a VPN service keeps its gateway (the tunnels' local address) until the service goes."""
    service = topo.router_vpn.get(router_id)
    if service is not None:
        err = errors.failed_precondition(
            reason,
            f"router {named(topo.routers[router_id])} has VPN service "
            f"{named_ref(topo.vpn_services, service, topo.routers[router_id].tenant)}, whose tunnels end at its "
            "gateway address: "
            f"delete the VPN service before {what}",
            router=router_id,
            vpn_service=service,
        )
        err.violations = (
            [("external_gateway", f"in use by VPN service {service!r}")] if "gateway" in what else []
        )
        raise err


def delete_network(
    topo: Topology, old: Network, force: bool, rev: int | None = None, now: float = 0.0
) -> list[Change]:
    subnets = topo.subnets_of(old.id)
    ports = topo.ports_of(old.id)
    _refuse_router_owned(topo, ports, f"network {named(old)}", "NETWORK_IN_USE", old.tenant, network=old.id)
    for sub in subnets:
        _refuse_lb_members(
            topo, sub.id, f"network {named(old)}", "NETWORK_IN_USE", old.tenant, network=old.id
        )
    _refuse_vpn_subnets(
        topo, [s.id for s in subnets], f"network {named(old)}", "NETWORK_IN_USE", network=old.id
    )
    if (subnets or ports) and not force:
        raise errors.failed_precondition(
            "NETWORK_IN_USE",
            f"network {named(old)} has {len(subnets)} subnet(s) and {len(ports)} port(s); "
            "delete them first or use force",
            network=old.id,
        )
    changes: list[Change] = _dissociate_ports(topo, {p.id for p in ports}, _rev(topo, rev), now)
    changes += [("port", p.id, p, None) for p in ports]
    changes += [("subnet", s.id, s, None) for s in subnets]
    changes.append(("network", old.id, old, None))
    return changes


# ------------------------------------------------------------------------------------------------ subnets


def _check_pools_and_gateway(
    net: netaddr.IPNetwork, gateway: str | None, pools: Sequence[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """Validate (or, for an empty `pools`, derive) allocation pools; returns them normalized."""
    lo, hi = _host_range(net)
    gw = int(netaddr.IPAddress(gateway)) if gateway else None
    if not pools:
        if lo > hi:
            return ()
        ranges: list[tuple[int, int]] = []
        if gw is not None and lo <= gw <= hi:
            if lo <= gw - 1:
                ranges.append((lo, gw - 1))
            if gw + 1 <= hi:
                ranges.append((gw + 1, hi))
        else:
            ranges.append((lo, hi))
        return tuple((_ip_str(a, net.version), _ip_str(b, net.version)) for a, b in ranges)
    parsed: list[tuple[int, int, int]] = []
    for i, (start, end) in enumerate(pools):
        a = _ip(start, f"allocation_pools[{i}].start", net.version)
        b = _ip(end, f"allocation_pools[{i}].end", net.version)
        for addr, which in ((a, "start"), (b, "end")):
            if not lo <= int(addr) <= hi:
                raise errors.invalid(
                    f"allocation_pools[{i}].{which}", f"{addr} is not a usable host address of {net}"
                )
        if int(a) > int(b):
            raise errors.invalid(f"allocation_pools[{i}]", f"start {a} is after end {b}")
        if gw is not None and int(a) <= gw <= int(b):
            raise errors.invalid(f"allocation_pools[{i}]", f"contains the gateway {gateway}")
        parsed.append((int(a), int(b), i))
    parsed.sort()
    for (_a1, b1, i1), (a2, _b2, i2) in zip(parsed, parsed[1:]):
        if a2 <= b1:
            raise errors.invalid(
                f"allocation_pools[{max(i1, i2)}]", f"overlaps allocation_pools[{min(i1, i2)}]"
            )
    return tuple((_ip_str(a, net.version), _ip_str(b, net.version)) for a, b, _ in parsed)


def _check_gateway(net: netaddr.IPNetwork, gateway: str | None) -> str | None:
    if gateway is None:
        lo, hi = _host_range(net)
        return _ip_str(lo, net.version) if lo <= hi else None
    if gateway == "":
        return None
    gw = _ip(gateway, "gateway_ip", net.version)
    if gw not in net:
        raise errors.invalid("gateway_ip", f"{gateway} is outside {net}")
    lo, hi = _host_range(net)
    if not lo <= int(gw) <= hi:
        raise errors.invalid("gateway_ip", f"{gateway} is the network or broadcast address of {net}")
    return str(gw)


def _check_dns_and_routes(
    dns: Sequence[str], routes: Sequence[tuple[str, str]]
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    dns_out = tuple(str(_ip(d, f"dns_servers[{i}]")) for i, d in enumerate(dns))
    routes_out = []
    for i, (dest, nexthop) in enumerate(routes):
        d = _cidr(dest, f"host_routes[{i}].destination")
        n = _ip(nexthop, f"host_routes[{i}].nexthop")
        routes_out.append((str(d.cidr), str(n)))
    return dns_out, tuple(routes_out)


def create_subnet(topo: Topology, sub: Subnet, gateway_given: bool, rev: int, now: float) -> list[Change]:
    """`sub.gateway_ip` is the request's value; `gateway_given` False means "default: first host"."""
    _check_name(sub.display_name)
    net = _cidr(sub.cidr, "cidr")
    if net.ip != net.network:
        raise errors.invalid("cidr", f"{sub.cidr} has host bits set (did you mean {net.cidr}?)")
    if net.version == 4 and net.prefixlen > 30 or net.version == 6 and net.prefixlen > 126:
        raise errors.invalid("cidr", f"{sub.cidr} is too small for hosts")
    for other in topo.subnets_of(sub.network_id):
        if netaddr.IPNetwork(other.cidr) in net or net in netaddr.IPNetwork(other.cidr):
            raise errors.invalid(
                "cidr",
                f"overlaps {other.cidr} of subnet {named_ref(topo.subnets, other.id, sub.tenant)} on the same "
                "network",
                reason="OVERLAPPING_CIDR",
            )
    _check_ipv6_modes(sub, net)
    gateway = _check_gateway(net, sub.gateway_ip if gateway_given else None)
    pools = _check_pools_and_gateway(net, gateway, sub.allocation_pools)
    dns, routes = _check_dns_and_routes(sub.dns_servers, sub.host_routes)
    rec = dataclasses.replace(
        sub,
        cidr=str(net.cidr),
        ip_version=net.version,
        gateway_ip=gateway,
        allocation_pools=pools,
        dns_servers=dns,
        host_routes=routes,
    )
    changes: list[Change] = [("subnet", rec.id, None, _stamp(rec, rev, now, True))]
    if ipv6.is_auto_address(rec):  # the network's tenant ports form an address there: it is theirs (Neutron)
        for p in topo.ports_of(rec.network_id):
            if not p.device_owner.startswith("network:"):
                fixed = (*p.fixed_ips, (rec.id, ipv6.eui64_address(rec.cidr, p.mac)))
                changes.append(
                    ("port", p.id, p, _stamp(dataclasses.replace(p, fixed_ips=fixed), rev, now, False))
                )
    return changes


def _check_ipv6_modes(sub: Subnet, net: netaddr.IPNetwork) -> None:
    """Neutron's rules: IPv6 only; both set means the same; not without DHCP; SLAAC and stateless need a
    /64 (the EUI-64 interface identifier is 64 bits)."""
    for path in ("ipv6_ra_mode", "ipv6_address_mode"):
        mode = getattr(sub, path)
        if mode and mode not in ipv6.MODES:
            raise errors.invalid(path, f"{mode!r} is not one of {', '.join(ipv6.MODES)} (or empty)")
        if mode and net.version == 4:
            raise errors.invalid(path, f"{sub.cidr} is an IPv4 subnet: {path} is for IPv6 subnets only")
    ra, am = sub.ipv6_ra_mode, sub.ipv6_address_mode
    if ra and am and ra != am:
        raise errors.invalid(
            "ipv6_address_mode",
            f"ipv6_ra_mode {ra!r} with ipv6_address_mode {am!r}: when both are set they must be the same",
        )
    if (ra or am) and not sub.enable_dhcp:
        raise errors.invalid(
            "enable_dhcp", "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is false"
        )
    if ipv6.is_auto_address(sub) and net.prefixlen != 64:
        raise errors.invalid(
            "cidr", f"{sub.cidr}: SLAAC and dhcpv6-stateless form EUI-64 addresses, which need a /64 prefix"
        )


SUBNET_MUTABLE = {
    "display_name",
    "gateway_ip",
    "allocation_pools",
    "enable_dhcp",
    "dns_servers",
    "host_routes",
}


def update_subnet(topo: Topology, old: Subnet, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    _check_fields(fields, SUBNET_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if fields.get("enable_dhcp") is False and (old.ipv6_ra_mode or old.ipv6_address_mode):
        raise errors.invalid(
            "enable_dhcp", f"subnet {named(old)} has IPv6 modes set: DHCP cannot be disabled (as in Neutron)"
        )
    net = netaddr.IPNetwork(old.cidr)
    gateway = old.gateway_ip
    if "gateway_ip" in fields:
        gateway = _check_gateway(net, fields["gateway_ip"] or "")
        fields["gateway_ip"] = gateway
        holder = _gateway_holder(topo, old)
        if gateway != old.gateway_ip and holder is not None:
            raise errors.failed_precondition(
                "GATEWAY_IN_USE",
                f"gateway {old.gateway_ip} of subnet {named(old)} is router {_owner(topo, holder, old.tenant)}'s "
                f"interface (port {named_ref(topo.ports, holder.id, old.tenant)}); remove the interface first",
                subnet=old.id,
                port=holder.id,
            )
    if "allocation_pools" in fields or "gateway_ip" in fields:
        pools = fields.get("allocation_pools", old.allocation_pools)
        if "allocation_pools" in fields and not pools:
            pools = ()  # explicit empty: derive from the CIDR and gateway again
        fields["allocation_pools"] = _check_pools_and_gateway(net, gateway, pools)
    if "dns_servers" in fields or "host_routes" in fields:
        dns, routes = _check_dns_and_routes(
            fields.get("dns_servers", old.dns_servers), fields.get("host_routes", old.host_routes)
        )
        fields["dns_servers"], fields["host_routes"] = dns, routes
    new = dataclasses.replace(old, **fields)
    return [("subnet", old.id, old, _stamp(new, rev, now, False))]


def _gateway_holder(topo: Topology, sub: Subnet) -> Port | None:
    """The router interface port holding the subnet's gateway address, if any."""
    if not sub.gateway_ip:
        return None
    pid = topo.ip_owner.get(sub.id, {}).get(int(netaddr.IPAddress(sub.gateway_ip)))
    port = topo.ports.get(pid) if pid is not None else None
    return port if port is not None and port.device_owner == OWNER_ROUTER_INTERFACE else None


def delete_subnet(
    topo: Topology, old: Subnet, force: bool, rev: int | None = None, now: float = 0.0
) -> list[Change]:
    ports = topo.ports_with_ip_in(old.id)
    changes: list[Change] = []
    if ipv6.is_auto_address(old):  # tenant ports' EUI-64 addresses go with the subnet (Neutron)
        auto = [p for p in ports if not p.device_owner.startswith("network:")]
        for p in auto:
            fixed = tuple((s, a) for s, a in p.fixed_ips if s != old.id)
            changes.append(
                (
                    "port",
                    p.id,
                    p,
                    _stamp(dataclasses.replace(p, fixed_ips=fixed), _rev(topo, rev), now, False),
                )
            )
        ports = [p for p in ports if p not in auto]
    _refuse_router_owned(topo, ports, f"subnet {named(old)}", "SUBNET_IN_USE", old.tenant, subnet=old.id)
    _refuse_lb_members(topo, old.id, f"subnet {named(old)}", "SUBNET_IN_USE", old.tenant, subnet=old.id)
    _refuse_vpn_subnets(topo, [old.id], f"subnet {named(old)}", "SUBNET_IN_USE", subnet=old.id)
    if ports and not force:
        raise errors.failed_precondition(
            "SUBNET_IN_USE",
            f"subnet {named(old)} has addresses on {len(ports)} port(s); delete them first or use force",
            subnet=old.id,
        )
    changes += _dissociate_ports(topo, {p.id for p in ports}, _rev(topo, rev), now)
    changes += [("port", p.id, p, None) for p in ports]
    changes.append(("subnet", old.id, old, None))
    return changes


# ------------------------------------------------------------------------------------------------ ports


def _generate_mac(topo: Topology, rng: random.Random) -> str:
    prefix = topo.config.mac_prefix
    for _ in range(64):
        tail = ":".join(f"{b:02x}" for b in rng.getrandbits(24).to_bytes(3, "big"))
        mac = f"{prefix}:{tail}"
        if mac not in topo.macs:
            return mac
    raise errors.exhausted("MAC_POOL_EXHAUSTED", f"no free MAC address under {prefix}")


_rng = random.Random(int.from_bytes(os.urandom(16), "big"))  # unpredictable enough, one syscall


def _eui64_slot(topo: Topology, port_id: str, sub: Subnet, mac: str, field_path: str) -> int:
    """The port's EUI-64 address on an auto-address subnet (SLAAC, dhcpv6-stateless), if free."""
    address = ipv6.eui64_address(sub.cidr, mac)
    n = int(netaddr.IPAddress(address))
    owner = topo.ip_owner.get(sub.id, {}).get(n)
    if owner is not None and owner != port_id:
        err = errors.in_use(
            "IP_ADDRESS_IN_USE",
            f"{address}, the EUI-64 address of {mac} on subnet {named(sub)}, is in use",
            subnet=sub.id,
            ip_address=address,
        )
        err.violations = [(field_path, f"{address} on subnet {named(sub)} is in use")]
        raise err
    return n


def _default_fixed_ips(
    topo: Topology, port_id: str, network_id: str, mac: str, dual_stack: bool
) -> tuple[tuple[str, str], ...]:
    """No request: an address of the first IPv4 subnet with room; with `dual_stack` (a tenant's port) also
    one of the first IPv6 subnet allocating addresses (stateful or without modes) and the EUI-64 address on
    every SLAAC / dhcpv6-stateless subnet (Neutron's defaults)."""
    subnets = topo.subnets_of(network_id)
    families = [(4, [s for s in subnets if s.ip_version == 4])]
    if dual_stack:
        families.append((6, [s for s in subnets if s.ip_version == 6 and not ipv6.is_auto_address(s)]))
    out: list[tuple[str, str]] = []
    for version, candidates in families:
        for candidate in candidates:
            n = topo.ipam[candidate.id].choose()
            if n is not None:
                out.append((candidate.id, _ip_str(n, version)))
                break
        else:
            if candidates:
                raise errors.exhausted(
                    "IP_POOL_EXHAUSTED",
                    f"no free IPv{version} address on network {_network_named(topo, network_id)}",
                    network=network_id,
                )
    if dual_stack and mac:
        for sub in subnets:
            if sub.ip_version == 6 and ipv6.is_auto_address(sub):
                out.append((sub.id, _ip_str(_eui64_slot(topo, port_id, sub, mac, "fixed_ips"), 6)))
    return tuple(out)


def _resolve_fixed_ips(
    topo: Topology,
    port_id: str,
    network_id: str,
    requests: Sequence[tuple[str, str]],
    keep: Sequence[tuple[str, str]] = (),
    mac: str = "",
) -> tuple[tuple[str, str], ...]:
    """Turn (subnet id or "", address or "") requests into (subnet id, address), allocating as needed.

    `keep` are the port's current addresses (on update): asking for one of them again is not a conflict.
    `mac` given (a tenant's port, not one the controller makes for a router or floating IP): no request
    means an address of each family, and on an auto-address subnet the address is the MAC's EUI-64 one.
    """
    subnets = topo.subnets_of(network_id)
    kept = {(s, int(netaddr.IPAddress(a))) for s, a in keep}
    result: list[tuple[str, str]] = []
    taken: dict[str, set[int]] = {}
    if not requests:
        return _default_fixed_ips(topo, port_id, network_id, mac, bool(mac))
    explicit: list[tuple[int, str, int]] = []
    pending: list[tuple[int, str]] = []
    for i, (subnet_id, address) in enumerate(requests):
        fp = f"fixed_ips[{i}]"
        sub: Subnet | None = None
        if subnet_id:
            sub = topo.subnets.get(subnet_id)
            if sub is None or sub.network_id != network_id:
                raise errors.invalid(
                    f"{fp}.subnet",
                    f"subnet {subnet_id!r} is not on network {_network_named(topo, network_id)}",
                )
        if address:
            addr = _ip(address, f"{fp}.ip_address")
            if sub is None:
                sub = next((s for s in subnets if addr in netaddr.IPNetwork(s.cidr)), None)
                if sub is None:
                    raise errors.invalid(
                        f"{fp}.ip_address",
                        f"{address} is in no subnet of network {_network_named(topo, network_id)}",
                    )
            net = netaddr.IPNetwork(sub.cidr)
            if addr not in net:
                raise errors.invalid(f"{fp}.ip_address", f"{address} is outside {sub.cidr}")
            lo, hi = _host_range(net)
            if not lo <= int(addr) <= hi:
                raise errors.invalid(f"{fp}.ip_address", f"{address} is the network or broadcast address")
            if mac and ipv6.is_auto_address(sub) and str(addr) != ipv6.eui64_address(sub.cidr, mac):
                raise errors.invalid(
                    f"{fp}.ip_address",
                    f"subnet {named(sub)} is {sub.ipv6_address_mode or sub.ipv6_ra_mode}: a port's address there "
                    f"is the EUI-64 address of its MAC ({ipv6.eui64_address(sub.cidr, mac)}), not another",
                    reason="AUTO_ADDRESS_SUBNET",
                )
            n = int(addr)
            owner = topo.ip_owner.get(sub.id, {}).get(n)
            if (owner is not None and owner != port_id) or n in taken.get(sub.id, set()):
                if n in taken.get(sub.id, set()):
                    raise errors.invalid(f"{fp}.ip_address", f"{address} is requested twice")
                # an external network's subnets are the operator's: by id only
                net_rec = topo.networks.get(network_id)
                label = repr(sub.id) if net_rec is None or net_rec.external else named(sub)
                err = errors.in_use(
                    "IP_ADDRESS_IN_USE",
                    f"{address} on subnet {label} is in use",
                    subnet=sub.id,
                    ip_address=address,
                )
                err.violations = [(f"{fp}.ip_address", f"{address} on subnet {label} is in use")]
                raise err
            taken.setdefault(sub.id, set()).add(n)
            explicit.append((i, sub.id, n))
        elif sub is not None:
            pending.append((i, sub.id))
        else:
            raise errors.invalid(fp, "needs a subnet or an ip_address")
    slots: dict[int, tuple[str, str]] = {}
    for i, sid, n in explicit:
        slots[i] = (sid, _ip_str(n, topo.subnets[sid].ip_version))
    for i, sid in pending:
        exclude = taken.setdefault(sid, set())
        sub = topo.subnets[sid]
        if mac and ipv6.is_auto_address(sub):
            auto = _eui64_slot(topo, port_id, sub, mac, f"fixed_ips[{i}].subnet")
            if auto in exclude:
                raise errors.invalid(f"fixed_ips[{i}].subnet", f"subnet {named(sub)} is requested twice")
            exclude.add(auto)
            slots[i] = (sid, _ip_str(auto, 6))
            continue
        # on update, a kept address of this subnet satisfies a bare-subnet request first
        reuse = next((n for s, n in sorted(kept) if s == sid and n not in exclude), None)
        got = reuse if reuse is not None else topo.ipam[sid].choose(exclude)
        if got is None:
            raise errors.exhausted(
                "IP_POOL_EXHAUSTED", f"subnet {named(sub)} has no free address", subnet=sid
            )
        exclude.add(got)
        slots[i] = (sid, _ip_str(got, sub.ip_version))
    result = [slots[i] for i in range(len(requests))]
    return tuple(result)


def _check_pairs(pairs: Sequence[tuple[str, str]], mac: str) -> tuple[tuple[str, str], ...]:
    out = []
    for i, (ip, pair_mac) in enumerate(pairs):
        fp = f"allowed_address_pairs[{i}]"
        try:
            net = netaddr.IPNetwork(ip)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise errors.invalid(f"{fp}.ip_address", f"{ip!r} is not an address or CIDR") from None
        ip_out = str(net.ip) if "/" not in ip else str(net.cidr)
        out.append((ip_out, _mac(pair_mac, f"{fp}.mac_address") if pair_mac else mac))
    return tuple(out)


def _check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    for i, g in enumerate(groups):
        check_id(g, f"security_groups[{i}]")
    return tuple(dict.fromkeys(groups))


def _check_port_security(port: Port) -> None:
    if not port.port_security_enabled and (port.security_groups or port.allowed_address_pairs):
        raise errors.failed_precondition(
            "PORT_SECURITY_REQUIRED",
            "port_security_enabled=false needs the port to have no security groups "
            "and no allowed address pairs",
            port=port.id,
        )


def _check_binding(topo: Topology, chassis_id: str) -> None:
    if chassis_id and chassis_id not in topo.chassis:
        raise errors.invalid("binding_chassis", f"chassis {chassis_id!r} does not exist")


ROUTER_OWNERS = portkeys.CONTROLLER_OWNERS
#: who a controller-made port belongs to, as errors name it
OWNER_LABEL = {OWNER_FLOATING_IP: "floating IP", OWNER_LOAD_BALANCER: "load balancer"}


def _check_device_owner(owner: str) -> None:
    """The owners that make a port part of a router, floating IP or load balancer are set only by those
    resources' calls
    (otherwise anyone could plug a port into someone else's router by naming its id)."""
    if owner in ROUTER_OWNERS:
        raise errors.invalid(
            "device_owner",
            f"{owner!r} is set by the router, floating IP and load balancer calls, not on ports",
            reason="RESERVED_DEVICE_OWNER",
        )


def create_port(
    topo: Topology, port: Port, ip_requests: Sequence[tuple[str, str]], rev: int, now: float
) -> list[Change]:
    """`port.mac` empty = generate; `ip_requests` are (subnet id, address) with either part possibly empty."""
    _check_name(port.display_name)
    check_description(port.description)
    port = dataclasses.replace(port, tags=normalize_tags(port.tags))
    _check_device_owner(port.device_owner)
    if port.mac:
        mac = _mac(port.mac, "mac_address")
        if mac in topo.macs:
            err = errors.in_use("MAC_ADDRESS_IN_USE", f"MAC {mac} is in use", mac_address=mac)
            err.violations = [("mac_address", f"{mac} is in use")]
            raise err
    else:
        mac = _generate_mac(topo, _rng)
    fixed = _resolve_fixed_ips(topo, port.id, port.network_id, ip_requests, mac=mac)
    _check_binding(topo, port.binding_chassis)
    rec = dataclasses.replace(
        port,
        mac=mac,
        fixed_ips=fixed,
        status=PORT_DOWN,
        key=_port_key(topo, dataclasses.replace(port, key=0)),
        requested_chassis=port.binding_chassis,
        allowed_address_pairs=_check_pairs(port.allowed_address_pairs, mac),
        security_groups=_check_groups(port.security_groups),
    )
    _check_port_security(rec)
    return [("port", rec.id, None, _stamp(rec, rev, now, True))]


PORT_MUTABLE = {
    "display_name",
    "fixed_ips",
    "device_owner",
    "device_id",
    "admin_state_up",
    "port_security_enabled",
    "allowed_address_pairs",
    "security_groups",
    "binding_chassis",
    "description",
    "tags",
}


def update_port(topo: Topology, old: Port, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    """`fields` maps record field names to new values; fixed_ips holds (subnet id, address) requests."""
    _check_fields(fields, PORT_MUTABLE)
    if old.device_owner == OWNER_LOAD_BALANCER and fields:  # a VIP port is the load balancer's, all of it
        err = errors.failed_precondition(
            "PORT_OWNED_BY_LOAD_BALANCER",
            f"port {named(old)} holds the VIP of load balancer {_owner(topo, old)}: it "
            "changes only with the load balancer",
            port=old.id,
            owner=old.device_owner,
        )
        err.violations = [(sorted(fields)[0], f"owned by load balancer {old.device_id!r}")]
        raise err
    if "display_name" in fields:
        _check_name(fields["display_name"])
    _check_labels(fields)
    if "fixed_ips" in fields:
        fields["fixed_ips"] = _resolve_fixed_ips(
            topo, old.id, old.network_id, fields["fixed_ips"] or (), keep=old.fixed_ips, mac=old.mac
        )
    if "allowed_address_pairs" in fields:
        fields["allowed_address_pairs"] = _check_pairs(fields["allowed_address_pairs"], old.mac)
    if "security_groups" in fields:
        fields["security_groups"] = _check_groups(fields["security_groups"])
    if "binding_chassis" in fields:
        _check_binding(topo, fields["binding_chassis"])
        fields["requested_chassis"] = fields["binding_chassis"]  # a client's binding pins the port
        if fields["binding_chassis"] != old.binding_chassis:
            fields["status"] = PORT_DOWN  # the new chassis has not realized it yet
    new = dataclasses.replace(old, **fields)
    if portkeys.zoned_on(new) != portkeys.zoned_on(old):
        new = dataclasses.replace(new, key=_port_key(topo, new))
    if old.device_owner in ROUTER_OWNERS:
        for name in ("fixed_ips", "device_owner", "device_id", "binding_chassis"):
            if getattr(new, name) != getattr(old, name):
                owner = OWNER_LABEL.get(old.device_owner, "router")
                err = errors.failed_precondition(
                    f"PORT_OWNED_BY_{owner.upper().replace(' ', '_')}",
                    f"port {named(old)} belongs to {owner} {_owner(topo, old)}: its {name} change only through "
                    f"the {owner}",
                    port=old.id,
                    owner=old.device_owner,
                )
                err.violations = [(name, f"owned by {owner} {old.device_id!r}")]
                raise err
    elif new.device_owner != old.device_owner:
        _check_device_owner(new.device_owner)
    if new.fixed_ips != old.fixed_ips:
        kept = set(new.fixed_ips)
        for fip in _fips_of_port(topo, old.id):
            if not any(a == fip.fixed_ip for _s, a in kept):
                raise errors.failed_precondition(
                    "FLOATING_IP_ASSOCIATED",
                    f"floating IP {named_ref(topo.floatingips, fip.id, old.tenant)} ({fip.address}) maps {fip.fixed_ip} of "
                    f"port {named(old)}; dissociate it before removing that address",
                    floating_ip=fip.id,
                    port=old.id,
                )
    _check_port_security(new)
    return [("port", old.id, old, _stamp(new, rev, now, False))]


def bind_port(
    topo: Topology, old: Port, chassis_id: str, rev: int, now: float, claims: portkeys.Claims | None = None
) -> list[Change]:
    """The dataplane's binding (topology/binding.py), not a client's: the port goes where its VIF is.
    `claims`: keys and zones other ports of the same write took (bound in it, not applied yet)."""
    if old.binding_chassis == chassis_id:
        return []
    new = dataclasses.replace(old, binding_chassis=chassis_id, status=PORT_DOWN)
    if portkeys.zoned_on(new) != portkeys.zoned_on(old):
        new = dataclasses.replace(new, key=_port_key(topo, new, claims))
    return [("port", old.id, old, _stamp(new, rev, now, False))]


def _port_key(topo: Topology, port: Port, claims: portkeys.Claims | None = None) -> int:
    """The key `port` (as it is about to be written) must have: its own key if still valid where it is now
    bound (a VM port's zone free on its chassis), else a new one (topology/portkeys.py). 0 for a new port."""
    zones = topo.zones
    chassis_id = portkeys.zoned_on(port)
    if portkeys.shared(port):
        if port.key:
            return port.key
        key = zones.choose_shared_key(claims)
    elif not chassis_id:
        if port.key:
            return port.key
        key = zones.choose_key(claims)
    elif port.key and zones.zone_free(chassis_id, portkeys.zone_of(port.key), claims):
        key = port.key
    else:
        key = zones.choose_zoned_key(chassis_id, claims)
        if key is None:
            raise errors.exhausted(
                "CONNTRACK_ZONES_EXHAUSTED",
                f"chassis {chassis_id!r} has no free conntrack zone (it holds {zones.holders(chassis_id)} ports)",
                chassis=chassis_id,
            )
    if key is None:
        raise errors.exhausted("PORT_KEYS_EXHAUSTED", "no free port key")
    if claims is not None:
        claims.keys.add(key)
        if portkeys.shared(port):
            claims.shared.add(portkeys.zone_of(key))
        elif chassis_id:
            claims.zones.setdefault(chassis_id, set()).add(portkeys.zone_of(key))
    return key


def set_port_status(old: Port, status: str, rev: int, now: float) -> list[Change]:
    """The dataplane's report (not a client field): DOWN or ACTIVE."""
    if old.status == status:
        return []
    return [("port", old.id, old, _stamp(dataclasses.replace(old, status=status), rev, now, False))]


def delete_port(topo: Topology, old: Port, rev: int | None = None, now: float = 0.0) -> list[Change]:
    """Router and floating IP ports go with their owner; a deleted port's floating IPs are dissociated
    (as Neutron does)."""
    if old.device_owner in ROUTER_OWNERS:
        owner = OWNER_LABEL.get(old.device_owner, "router")
        how = {
            "router": "RemoveRouterInterface or the router gateway",
            "floating IP": "DeleteFloatingIp",
            "load balancer": "DeleteLoadBalancer",
        }[owner]
        raise errors.failed_precondition(
            f"PORT_OWNED_BY_{owner.upper().replace(' ', '_')}",
            f"port {named(old)} belongs to {owner} {_owner(topo, old)}; it goes with it ({how})",
            port=old.id,
            owner=old.device_owner,
            device_id=old.device_id,
        )
    changes = _dissociate_ports(topo, {old.id}, _rev(topo, rev), now)
    return changes + [("port", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ chassis


def _check_chassis_fields(topo: Topology, ch: Chassis, fields: set[str]) -> Chassis:
    if "tunnel_ip" in fields and ch.tunnel_ip:
        ch = dataclasses.replace(ch, tunnel_ip=str(_ip(ch.tunnel_ip, "tunnel_ip", 4)))
    if "ovsdb_address" in fields and ch.ovsdb_address and not OVSDB_RE.match(ch.ovsdb_address):
        raise errors.invalid("ovsdb_address", "must be unix:PATH, tcp:IP:PORT or ssl:IP:PORT")
    if "datapath_id" in fields and ch.datapath_id:
        if not 0 < ch.datapath_id < 2**64:
            raise errors.invalid("datapath_id", "must be a 64-bit number")
        for other in topo.chassis.values():
            if other.id != ch.id and other.datapath_id == ch.datapath_id:
                err = errors.already_exists(
                    "chassis",
                    other.id,
                    reason="DATAPATH_ID_IN_USE",
                    message=f"datapath id {ch.datapath_id:#x} belongs to {other.id!r}",
                )
                err.violations = [("datapath_id", "in use by another chassis")]
                raise err
    if "bridge_mappings" in fields:
        for physnet, bridge in ch.bridge_mappings:
            if not PHYSNET_RE.match(physnet):
                raise errors.invalid(f"bridge_mappings[{physnet!r}]", "bad physical network name")
            if not BRIDGE_RE.match(bridge):
                raise errors.invalid(f"bridge_mappings[{physnet!r}]", f"{bridge!r} is not a bridge name")
        ch = dataclasses.replace(ch, bridge_mappings=tuple(sorted(ch.bridge_mappings)))
    return ch


CHASSIS_MUTABLE = {"datapath_id", "tunnel_ip", "ovsdb_address", "bridge_mappings"}


def create_chassis(topo: Topology, ch: Chassis, rev: int, now: float) -> list[Change]:
    ch = _check_chassis_fields(topo, ch, CHASSIS_MUTABLE)
    return [("chassis", ch.id, None, _stamp(ch, rev, now, True))]


def update_chassis(
    topo: Topology, old: Chassis, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, CHASSIS_MUTABLE)
    new = _check_chassis_fields(topo, dataclasses.replace(old, **fields), set(fields))
    return [("chassis", old.id, old, _stamp(new, rev, now, False))]


def delete_chassis(topo: Topology, old: Chassis, force: bool, rev: int, now: float) -> list[Change]:
    ports = topo.ports_on_chassis(old.id)
    if ports and not force:
        raise errors.failed_precondition(
            "CHASSIS_IN_USE",
            f"chassis {named(old)} has {len(ports)} bound port(s); unbind them or use force",
            chassis=old.id,
        )
    changes: list[Change] = []
    for p in ports:
        new = dataclasses.replace(p, binding_chassis="", requested_chassis="", status=PORT_DOWN)
        changes.append(("port", p.id, p, _stamp(new, rev, now, False)))
    changes.append(("chassis", old.id, old, None))
    return changes


# ------------------------------------------------------------------------------------------------ routers


def _rev(topo: Topology, rev: int | None) -> int:
    return topo.revision + 1 if rev is None else rev


@dataclasses.dataclass(frozen=True)
class GatewayRequest:
    """A router's external gateway as asked for: the external network, optionally a subnet and/or address."""

    network_id: str
    subnet_id: str = ""
    ip_address: str = ""
    enable_snat: bool = True
    #: dual stack: several (subnet id or "", address or "") at once, at most one per family (then subnet_id and
    #: ip_address are empty)
    fixed_ips: tuple[tuple[str, str], ...] = ()


def router_interfaces(topo: Topology, router_id: str) -> list[tuple[Port, str, str]]:
    """(interface port, subnet id, router address on it) for each address of each interface port."""
    return [
        (p, sid, addr)
        for p in topo.router_ports(router_id)
        if p.device_owner == OWNER_ROUTER_INTERFACE
        for sid, addr in p.fixed_ips
    ]


def gateway_port(topo: Topology, router_id: str) -> Port | None:
    return next((p for p in topo.router_ports(router_id) if p.device_owner == OWNER_ROUTER_GATEWAY), None)


def floating_ip_port(topo: Topology, fip: FloatingIp) -> Port | None:
    """The port reserving the floating IP's address on its external network."""
    n = int(netaddr.IPAddress(fip.address))
    for sub in topo.subnets_of(fip.network_id):
        pid = topo.ip_owner.get(sub.id, {}).get(n)
        if pid is not None and topo.ports[pid].device_owner == OWNER_FLOATING_IP:
            return topo.ports[pid]
    return None


def _fips_of_port(topo: Topology, port_id: str) -> list[FloatingIp]:
    node = ("port", port_id)
    if node not in topo.graph:
        return []
    return sorted(
        (topo.floatingips[i] for k, i in topo.graph[node] if k == "floating_ip" and i in topo.floatingips),
        key=lambda f: f.id,
    )


def _dissociated(fip: FloatingIp, rev: int, now: float) -> Change:
    return (
        "floating_ip",
        fip.id,
        fip,
        _stamp(dataclasses.replace(fip, port_id="", fixed_ip="", router_id=""), rev, now, False),
    )


def _dissociate_ports(topo: Topology, port_ids: set[str], rev: int, now: float) -> list[Change]:
    """Floating IPs of ports about to be deleted lose their association (Neutron does the same)."""
    return [_dissociated(f, rev, now) for pid in sorted(port_ids) for f in _fips_of_port(topo, pid)]


def _renamed(err: errors.ApiError, paths: dict[str, str]) -> errors.ApiError:
    """Field paths of an inner check (e.g. fixed_ips[0].ip_address) as the caller's request names them."""
    out = []
    for f, d in err.violations:
        for old, new in paths.items():
            if f == old or f.startswith(old + "."):
                f = new + f[len(old) :]
                break
        out.append((f, d))
    err.violations = out
    return err


def _new_owned_port(
    topo: Topology,
    ident: str,
    network_id: str,
    tenant: str,
    owner: str,
    device_id: str,
    requests: Sequence[tuple[str, str]],
    paths: dict[str, str],
    rev: int,
    now: float,
) -> Change:
    """A port the controller makes for a router or floating IP: generated MAC, an IPv4 address, a port key."""
    try:
        fixed = _resolve_fixed_ips(topo, ident, network_id, requests)
    except errors.ApiError as err:
        raise _renamed(err, paths) from None
    if not fixed:
        raise errors.failed_precondition(
            "NO_SUBNET",
            f"network {_network_named(topo, network_id)} has no IPv4 subnet to take an address from",
            network=network_id,
        )
    if owner != OWNER_ROUTER_INTERFACE:
        _refuse_subnet_gateways(topo, fixed, paths)
    port = Port(
        id=ident,
        tenant=tenant,
        network_id=network_id,
        mac=_generate_mac(topo, _rng),
        fixed_ips=fixed,
        device_owner=owner,
        device_id=device_id,
        port_security_enabled=False,
    )
    port = dataclasses.replace(port, key=_port_key(topo, port))
    return ("port", ident, None, _stamp(port, rev, now, True))


def _refuse_subnet_gateways(topo: Topology, fixed: Sequence[tuple[str, str]], paths: dict[str, str]) -> None:
    for i, (sid, addr) in enumerate(fixed):
        if addr == topo.subnets[sid].gateway_ip:
            path = paths.get(f"fixed_ips[{i}].ip_address", "ip_address")
            raise errors.invalid(path, f"{addr} is the gateway address of subnet {named(topo.subnets[sid])}")


def _check_external(topo: Topology, network_id: str, field_path: str) -> Network:
    net = topo.networks.get(network_id)
    if net is None:
        raise errors.not_found("network", network_id)
    if not net.external:
        raise errors.invalid(
            field_path, f"network {network_id!r} is not an external network", reason="NOT_EXTERNAL_NETWORK"
        )
    return net


GATEWAY_PATHS = {
    "fixed_ips[0].ip_address": "external_gateway.fixed_ip.ip_address",
    "fixed_ips[0].subnet": "external_gateway.fixed_ip.subnet",
    "fixed_ips[0]": "external_gateway.fixed_ip",
}


def _gateway_request(gw: GatewayRequest) -> list[tuple[str, str]]:
    if gw.fixed_ips:
        return list(gw.fixed_ips)
    return [(gw.subnet_id, gw.ip_address)] if gw.subnet_id or gw.ip_address else []


def _request_version(topo: Topology, subnet_id: str, address: str) -> int:
    sub = topo.subnets.get(subnet_id) if subnet_id else None
    if sub is not None:
        return sub.ip_version
    return 6 if ":" in address else 4


def _check_gateway_families(topo: Topology, gw: GatewayRequest) -> None:
    """A gateway holds an IPv4 address (SNAT, floating IPs and VPN need it) and at most one IPv6 one (routed
    without NAT): asking for IPv6 alone would drop the IPv4 address and its SNAT, so it is refused."""
    if not gw.fixed_ips:
        if _request_version(topo, gw.subnet_id, gw.ip_address) == 6 and (gw.subnet_id or gw.ip_address):
            raise errors.failed_precondition(
                "IPV6_ONLY_GATEWAY_NOT_SUPPORTED",
                "a router's external gateway needs an IPv4 address (SNAT, floating IPs): ask for an IPv4 and "
                "an IPv6 address together in external_gateway.fixed_ips (dual stack)",
                network=gw.network_id,
            )
        return
    if (gw.subnet_id or gw.ip_address) and not any(
        a == gw.ip_address and s in ("", gw.subnet_id) for s, a in gw.fixed_ips
    ):  # a Get's answer sent back (fixed_ip: the first of fixed_ips) is no contradiction
        raise errors.invalid(
            "external_gateway.fixed_ips",
            "give fixed_ip or fixed_ips, not both (unless fixed_ip is among them)",
        )
    seen: dict[int, int] = {}
    for i, (sid, addr) in enumerate(gw.fixed_ips):
        if not sid and not addr:
            raise errors.invalid(
                f"external_gateway.fixed_ips[{i}]", "required: a subnet or an address (its family decides)"
            )
        v = _request_version(topo, sid, addr)
        if v in seen:
            raise errors.invalid(
                f"external_gateway.fixed_ips[{i}]",
                f"a second IPv{v} address (fixed_ips[{seen[v]}] is one): at most one per family",
            )
        seen[v] = i
    if 4 not in seen:
        raise errors.failed_precondition(
            "IPV6_ONLY_GATEWAY_NOT_SUPPORTED",
            "a router's external gateway needs an IPv4 address (SNAT, floating IPs): add one to "
            "external_gateway.fixed_ips beside the IPv6 one",
            network=gw.network_id,
        )


def _v4_first(fixed: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(fixed, key=lambda f: ":" in f[1]))


def _gateway_paths(gw: GatewayRequest) -> dict[str, str]:
    if not gw.fixed_ips:
        return GATEWAY_PATHS
    out: dict[str, str] = {}
    for i in range(len(gw.fixed_ips)):
        for leaf in ("", ".ip_address", ".subnet"):
            out[f"fixed_ips[{i}]{leaf}"] = f"external_gateway.fixed_ips[{i}]{leaf}"
    return out


def _new_gateway_port(topo: Topology, router: Router, gw: GatewayRequest, rev: int, now: float) -> Change:
    _check_external(topo, gw.network_id, "external_gateway.network")
    _check_gateway_families(topo, gw)
    import uuid

    # tenant "": like Neutron's, the gateway port is nobody's to see or touch but the operator's
    change = _new_owned_port(
        topo,
        str(uuid.uuid4()),
        gw.network_id,
        "",
        OWNER_ROUTER_GATEWAY,
        router.id,
        _gateway_request(gw),
        _gateway_paths(gw),
        rev,
        now,
    )
    kind, ident, before, port = change
    assert isinstance(port, Port)
    return (kind, ident, before, dataclasses.replace(port, fixed_ips=_v4_first(port.fixed_ips)))


def _check_routes(
    topo: Topology,
    router_id: str,
    routes: Sequence[tuple[str, str]],
    without_ports: set[str] | frozenset[str] = frozenset(),
) -> tuple[tuple[str, str], ...]:
    """Static routes: a CIDR and a nexthop inside one of the router's interface subnets (not the router's own
    address); `without_ports` are interfaces about to be removed."""
    ifaces = [(sid, addr) for p, sid, addr in router_interfaces(topo, router_id) if p.id not in without_ports]
    nets = [netaddr.IPNetwork(topo.subnets[sid].cidr) for sid, _ in ifaces]
    own = {addr for _, addr in ifaces}
    out: list[tuple[str, str]] = []
    for i, (dest, nexthop) in enumerate(routes):
        d = _cidr(dest, f"routes[{i}].destination")
        n = _ip(nexthop, f"routes[{i}].nexthop")
        if n.version != d.version:
            raise errors.invalid(f"routes[{i}].nexthop", f"{nexthop} is not an IPv{d.version} address")
        if not any(n in net for net in nets):
            raise errors.invalid(
                f"routes[{i}].nexthop",
                f"{nexthop} is in none of the router's interface subnets",
                reason="NEXTHOP_NOT_CONNECTED",
            )
        if str(n) in own:
            raise errors.invalid(f"routes[{i}].nexthop", f"{nexthop} is the router's own address")
        route = (str(d.cidr), str(n))
        if route in out:
            raise errors.invalid(f"routes[{i}]", f"repeats routes[{out.index(route)}]")
        out.append(route)
    return tuple(out)


def create_router(
    topo: Topology, router: Router, gateway: GatewayRequest | None, rev: int, now: float
) -> list[Change]:
    """The router first, then its gateway port (if any)."""
    _check_name(router.display_name)
    routes = _check_routes(topo, router.id, router.routes)  # no interfaces yet: only an empty list passes
    key = topo.datapath_keys.choose()
    if key is None:
        raise errors.exhausted("DATAPATH_KEYS_EXHAUSTED", "no free datapath key")
    rec = dataclasses.replace(
        router,
        key=key,
        routes=routes,
        gateway_network_id=gateway.network_id if gateway else "",
        enable_snat=gateway.enable_snat if gateway else True,
    )
    changes: list[Change] = [("router", rec.id, None, _stamp(rec, rev, now, True))]
    if gateway is not None:
        changes.append(_new_gateway_port(topo, rec, gateway, rev, now))
    return changes


ROUTER_MUTABLE = {"display_name", "admin_state_up", "external_gateway", "routes"}


def _fips_via(topo: Topology, router_id: str) -> list[FloatingIp]:
    return sorted((f for f in topo.floatingips.values() if f.router_id == router_id), key=lambda f: f.id)


def update_router(topo: Topology, old: Router, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    """`fields["external_gateway"]` is a GatewayRequest, or None to clear the gateway. The router's change
    comes first, then its gateway port's."""
    _check_fields(fields, ROUTER_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    ports: list[Change] = []
    if "external_gateway" in fields:
        gw: GatewayRequest | None = fields.pop("external_gateway")
        cur = gateway_port(topo, old.id)
        using = _fips_via(topo, old.id)
        moving = gw is None or gw.network_id != old.gateway_network_id
        if moving and old.gateway_network_id:
            _refuse_vpn_router(topo, old.id, "changing or removing its gateway", "ROUTER_GATEWAY_IN_USE")
        if moving and using and old.gateway_network_id:
            raise errors.failed_precondition(
                "ROUTER_GATEWAY_IN_USE",
                f"floating IP(s) {', '.join(named_ref(topo.floatingips, f.id, old.tenant) for f in using)} "
                f"reach their external network through router {named(old)}'s gateway; dissociate them first",
                router=old.id,
            )
        if gw is None:
            if cur is not None:
                ports.append(("port", cur.id, cur, None))
            fields.update(gateway_network_id="", enable_snat=True)
        else:
            if moving or cur is None:
                if cur is not None:
                    ports.append(("port", cur.id, cur, None))
                ports.append(_new_gateway_port(topo, old, gw, rev, now))
            elif _gateway_request(gw):  # same network: move the gateway's address if another is asked for
                _check_gateway_families(topo, gw)
                try:
                    fixed = _resolve_fixed_ips(
                        topo, cur.id, cur.network_id, _gateway_request(gw), keep=cur.fixed_ips
                    )
                    _refuse_subnet_gateways(topo, fixed, _gateway_paths(gw))
                except errors.ApiError as err:
                    raise _renamed(err, _gateway_paths(gw)) from None
                if not gw.fixed_ips:  # the single-address form moves the IPv4 address, any IPv6 one stays
                    fixed = (*fixed, *((s, a) for s, a in cur.fixed_ips if ":" in a))
                fixed = _v4_first(fixed)
                if fixed != cur.fixed_ips:
                    _refuse_vpn_router(topo, old.id, "changing its gateway address", "ROUTER_GATEWAY_IN_USE")
                    ports.append(
                        (
                            "port",
                            cur.id,
                            cur,
                            _stamp(dataclasses.replace(cur, fixed_ips=fixed), rev, now, False),
                        )
                    )
            fields.update(gateway_network_id=gw.network_id, enable_snat=gw.enable_snat)
    if "routes" in fields:
        fields["routes"] = _check_routes(topo, old.id, fields["routes"])
    new = dataclasses.replace(old, **fields)
    return [("router", old.id, old, _stamp(new, rev, now, False)), *ports]


def delete_router(topo: Topology, old: Router, force: bool, rev: int, now: float) -> list[Change]:
    """Refused while it has interfaces or translates floating IPs, unless `force`: then those interfaces are
    deleted and the floating IPs dissociated. The gateway port always goes with the router."""
    _refuse_vpn_router(topo, old.id, "deleting the router (force does not)", "ROUTER_IN_USE")
    ifaces = [p for p in topo.router_ports(old.id) if p.device_owner == OWNER_ROUTER_INTERFACE]
    fips = _fips_via(topo, old.id)
    if (ifaces or fips) and not force:
        raise errors.failed_precondition(
            "ROUTER_IN_USE",
            f"router {named(old)} has {len(ifaces)} interface(s) and translates {len(fips)} "
            "floating IP(s); remove them first or use force",
            router=old.id,
        )
    changes: list[Change] = [_dissociated(f, rev, now) for f in fips]
    changes += [("port", p.id, p, None) for p in topo.router_ports(old.id)]
    changes.append(("router", old.id, old, None))
    return changes + _firewall_detach(topo, {p.id for p in topo.router_ports(old.id)}, rev, now)


def _check_new_interface_subnets(
    topo: Topology, router: Router, subnets: Sequence[Subnet], field_path: str
) -> None:
    current = router_interfaces(topo, router.id)
    for sub in subnets:
        net = netaddr.IPNetwork(sub.cidr)
        for port, sid, _addr in current:
            if sid == sub.id:
                err = errors.already_exists(
                    "router_interface",
                    sub.id,
                    reason="ROUTER_INTERFACE_EXISTS",
                    message=f"subnet {named(sub)} is already on router {named(router)} "
                    f"(port {named_ref(topo.ports, port.id, router.tenant)})",
                )
                err.violations = [(field_path, f"subnet {sub.id!r} is already an interface of the router")]
                raise err
            other = topo.subnets[sid]
            if net in netaddr.IPNetwork(other.cidr) or netaddr.IPNetwork(other.cidr) in net:
                raise errors.invalid(
                    field_path,
                    f"{sub.cidr} of subnet {named_ref(topo.subnets, sub.id, router.tenant)} overlaps "
                    f"{other.cidr} of subnet {named_ref(topo.subnets, sid, router.tenant)}, already on router "
                    f"{named(router)}",
                    reason="OVERLAPPING_CIDR",
                )


def add_router_interface(
    topo: Topology, router: Router, subnet_id: str, port_id: str, new_port_id: str, rev: int, now: float
) -> list[Change]:
    """By subnet (a new port holding its gateway_ip) or by port (an unused port of the tenant). The interface
    port's change comes first, then the router's (its revision moves: its interfaces changed)."""
    if subnet_id:
        sub = topo.subnets[subnet_id]
        if topo.networks[sub.network_id].external:
            raise errors.invalid(
                "subnet",
                f"subnet {named_ref(topo.subnets, sub.id, router.tenant)} is on external network "
                f"{named_ref(topo.networks, sub.network_id, router.tenant)}: use it "
                "as the router's external gateway",
                reason="EXTERNAL_NETWORK",
            )
        if not sub.gateway_ip:
            raise errors.invalid(
                "subnet",
                f"subnet {named_ref(topo.subnets, sub.id, router.tenant)} has no gateway_ip for the router to hold "
                "(add the interface by port instead)",
                reason="NO_GATEWAY_IP",
            )
        _check_new_interface_subnets(topo, router, [sub], "subnet")
        owner = topo.ip_owner.get(sub.id, {}).get(int(netaddr.IPAddress(sub.gateway_ip)))
        if owner is not None:
            err = errors.in_use(
                "IP_ADDRESS_IN_USE",
                f"gateway {sub.gateway_ip} of subnet {named_ref(topo.subnets, sub.id, router.tenant)} is in use "
                "by a port",
                subnet=sub.id,
                ip_address=sub.gateway_ip,
            )
            err.violations = [("subnet", f"its gateway_ip {sub.gateway_ip} is in use")]
            raise err
        port_change = _new_owned_port(
            topo,
            new_port_id,
            sub.network_id,
            sub.tenant,
            OWNER_ROUTER_INTERFACE,
            router.id,
            [(sub.id, sub.gateway_ip)],
            {},
            rev,
            now,
        )
    else:
        port = topo.ports[port_id]
        if port.device_owner or port.device_id or port.binding_chassis or _fips_of_port(topo, port.id):
            raise errors.failed_precondition(
                "PORT_IN_USE",
                f"port {named(port)} is in use (device_owner {port.device_owner!r}, device_id "
                f"{port.device_id!r}, bound to {port.binding_chassis or 'no chassis'!s}, or has a floating IP); "
                "a router interface must be an unused port",
                port=port.id,
            )
        if topo.networks[port.network_id].external:
            raise errors.invalid(
                "port",
                f"port {named(port)} is on external network {named_ref(topo.networks, port.network_id, port.tenant)}",
                reason="EXTERNAL_NETWORK",
            )
        if not port.fixed_ips:
            raise errors.invalid(
                "port", f"port {named(port)} has no fixed IP for the router to use", reason="NO_FIXED_IP"
            )
        if sum(1 for s, _a in port.fixed_ips if topo.subnets[s].ip_version == 4) > 1:
            raise errors.invalid(
                "port",
                f"port {named(port)} has several IPv4 addresses; a router port has one",
                reason="MULTIPLE_IPV4_ADDRESSES",
            )
        _check_new_interface_subnets(topo, router, [topo.subnets[s] for s, _a in port.fixed_ips], "port")
        new = dataclasses.replace(port, device_owner=OWNER_ROUTER_INTERFACE, device_id=router.id)
        port_change = ("port", port.id, port, _stamp(new, rev, now, False))
    return [port_change, ("router", router.id, router, _stamp(router, rev, now, False))]


def remove_router_interface(
    topo: Topology, router: Router, subnet_id: str, port_id: str, rev: int, now: float
) -> list[Change]:
    """Deletes the interface port (also one added by port, as Neutron does). Refused while a static route's
    nexthop or an associated floating IP needs the subnet."""
    ifaces = router_interfaces(topo, router.id)
    ports = {p.id: p for p, sid, _a in ifaces if (sid == subnet_id if subnet_id else p.id == port_id)}
    if not ports:
        what = (
            f"subnet {named_ref(topo.subnets, subnet_id, router.tenant)}"
            if subnet_id
            else f"port {named_ref(topo.ports, port_id, router.tenant)}"
        )
        raise errors.ApiError(
            "NOT_FOUND",
            "ROUTER_INTERFACE_NOT_FOUND",
            f"{what} is not an interface of router {named(router)}",
            metadata={"router": router.id},
        )
    gone = {sid for p, sid, _a in ifaces if p.id in ports}
    service = topo.router_vpn.get(router.id)
    for cid in sorted(topo.vpn_users.get(("vpn_service", service), ()) if service else ()):
        conn = topo.ipsec_site_connections[cid]
        group = topo.vpn_endpoint_groups[conn.local_ep_group_id]
        used = sorted(gone & set(group.endpoints))
        if used:
            raise errors.failed_precondition(
                "ROUTER_INTERFACE_IN_USE",
                f"subnet {named_ref(topo.subnets, used[0], router.tenant)} is a local subnet of IPsec site "
                f"connection {named(conn)} (endpoint group {named(group)}) of router {named(router)}'s VPN "
                "service; change or delete the connection first",
                router=router.id,
                ipsec_site_connection=cid,
            )
    try:
        _check_routes(topo, router.id, router.routes, without_ports=set(ports))
    except errors.ApiError as err:
        raise errors.failed_precondition(
            "ROUTER_INTERFACE_IN_USE",
            f"static route {err.violations[0][0] if err.violations else ''} of router "
            f"{named(router)} needs this interface for its nexthop; change the routes first",
            router=router.id,
        ) from None
    for fip in _fips_via(topo, router.id):
        port = topo.ports.get(fip.port_id)
        if port is not None and any(a == fip.fixed_ip and s in gone for s, a in port.fixed_ips):
            raise errors.failed_precondition(
                "ROUTER_INTERFACE_IN_USE",
                f"floating IP {named_ref(topo.floatingips, fip.id, router.tenant)} ({fip.address} -> "
                f"{fip.fixed_ip}) is translated through this interface of router {named(router)}; dissociate it "
                "first",
                router=router.id,
                floating_ip=fip.id,
            )
    changes: list[Change] = [("port", p.id, p, None) for p in ports.values()]
    changes.append(("router", router.id, router, _stamp(router, rev, now, False)))
    return changes + _firewall_detach(topo, set(ports), rev, now)


def _firewall_detach(topo: Topology, port_ids: set[str], rev: int, now: float) -> list[Change]:
    """Router interface ports about to go leave their firewall groups (as in FWaaS)."""
    out: list[Change] = []
    for gid in sorted({topo.port_firewall[p] for p in port_ids if p in topo.port_firewall}):
        group = topo.firewall_groups[gid]
        new = dataclasses.replace(group, ports=tuple(p for p in group.ports if p not in port_ids))
        out.append(("firewall_group", gid, group, _stamp(new, rev, now, False)))
    return out


# ------------------------------------------------------------------------------------------------ floating IPs


def _associate(topo: Topology, fip: FloatingIp, port_id: str, fixed_ip: str) -> FloatingIp:
    """The floating IP mapped to `fixed_ip` (default: the port's only IPv4 address) of the port, through the
    router that joins that address's subnet to the floating IP's external network."""
    port = topo.ports[port_id]
    # a load balancer's VIP may have a floating IP (balanced on the gateway chassis: apps/lb.py)
    if port.device_owner in ROUTER_OWNERS and port.device_owner != OWNER_LOAD_BALANCER:
        raise errors.invalid(
            "port", f"port {named(port)} belongs to {port.device_owner} {_owner(topo, port, fip.tenant)}"
        )
    if fixed_ip:
        addr = _ip(fixed_ip, "fixed_ip_address", 4)
        match = [(s, a) for s, a in port.fixed_ips if a == str(addr)]
        if not match:
            raise errors.invalid("fixed_ip_address", f"{fixed_ip} is not an address of port {named(port)}")
    else:
        match = [(s, a) for s, a in port.fixed_ips if topo.subnets[s].ip_version == 4]
        if not match:
            raise errors.invalid("port", f"port {named(port)} has no IPv4 address to map")
        if len(match) > 1:
            raise errors.invalid(
                "fixed_ip_address", f"required: port {named(port)} has several IPv4 addresses"
            )
    sid, addr_s = match[0]
    for other in _fips_of_port(topo, port.id):
        if other.id != fip.id and other.fixed_ip == addr_s:
            if other.tenant == fip.tenant:  # the asker's own floating IP may be named; another tenant's not
                err = errors.already_exists(
                    "floating_ip",
                    other.id,
                    reason="FIXED_IP_IN_USE",
                    message=f"{addr_s} of port {named(port)} already has floating IP "
                    f"{named(other)} ({other.address})",
                )
                err.violations = [("fixed_ip_address", f"{addr_s} already has floating IP {other.id!r}")]
            else:
                err = errors.in_use(
                    "FIXED_IP_IN_USE",
                    f"{addr_s} of port {named(port)} already has a floating IP",
                    port=port.id,
                    fixed_ip_address=addr_s,
                )
                err.violations = [("fixed_ip_address", f"{addr_s} already has a floating IP")]
            raise err
    for rid in sorted(topo.routers_of(port.network_id)):
        router = topo.routers[rid]
        if router.gateway_network_id == fip.network_id and any(
            s == sid for _p, s, _a in router_interfaces(topo, rid)
        ):
            return dataclasses.replace(fip, port_id=port.id, fixed_ip=addr_s, router_id=rid)
    raise errors.failed_precondition(
        "EXTERNAL_GATEWAY_UNREACHABLE",
        f"no router joins subnet {named_ref(topo.subnets, sid, port.tenant)} of port {named(port)} to external "
        f"network {named_ref(topo.networks, fip.network_id, port.tenant)} (add the subnet to a router whose "
        "external gateway is there)",
        port=port.id,
        subnet=sid,
        network=fip.network_id,
    )


def create_floating_ip(
    topo: Topology, fip: FloatingIp, new_port_id: str, rev: int, now: float
) -> list[Change]:
    """`fip.address` empty = allocate; `fip.port_id` set = associate at once (with `fip.fixed_ip` or the
    port's only IPv4 address). The reservation port first, then the floating IP."""
    _check_external(topo, fip.network_id, "floating_network")
    if fip.address:
        _ip(fip.address, "floating_ip_address", 4)  # floating IPs are IPv4 (as in Neutron)
    port_change = _new_owned_port(
        topo,
        new_port_id,
        fip.network_id,
        "",
        OWNER_FLOATING_IP,
        fip.id,
        [("", fip.address)] if fip.address else [],
        {"fixed_ips[0].ip_address": "floating_ip_address", "fixed_ips[0]": "floating_ip_address"},
        rev,
        now,
    )
    reserved = port_change[3]
    assert isinstance(reserved, Port)
    rec = dataclasses.replace(fip, address=reserved.fixed_ips[0][1], port_id="", fixed_ip="", router_id="")
    if fip.port_id:
        rec = _associate(topo, rec, fip.port_id, fip.fixed_ip)
    elif fip.fixed_ip:
        raise errors.invalid("fixed_ip_address", "needs a port")
    return [port_change, ("floating_ip", rec.id, None, _stamp(rec, rev, now, True))]


FLOATING_IP_MUTABLE = {"port", "fixed_ip_address"}


def update_floating_ip(
    topo: Topology, old: FloatingIp, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """`fields`: "port" (a port id, "" = dissociate) and/or "fixed_ip_address"."""
    _check_fields(fields, FLOATING_IP_MUTABLE)
    port_id = fields.get("port", old.port_id)
    same_port = port_id == old.port_id
    fixed = fields.get("fixed_ip_address", old.fixed_ip if same_port else "")
    if not port_id:
        if fields.get("fixed_ip_address"):
            raise errors.invalid("fixed_ip_address", "needs a port")
        new = dataclasses.replace(old, port_id="", fixed_ip="", router_id="")
    else:
        new = _associate(topo, old, port_id, fixed)
    return [("floating_ip", old.id, old, _stamp(new, rev, now, False))]


def delete_floating_ip(topo: Topology, old: FloatingIp) -> list[Change]:
    """The floating IP, then the port reserving its address."""
    changes: list[Change] = [("floating_ip", old.id, old, None)]
    port = floating_ip_port(topo, old)
    if port is not None:
        changes.append(("port", port.id, port, None))
    return changes
