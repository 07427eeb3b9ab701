"""Between API messages (resource names, enums) and model records (ids, plain strings)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from proto.sdn.v1 import topology_pb2 as pb
from topology import errors
from topology.records import (
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    Chassis,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    FloatingIp,
    HealthMonitor,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Listener,
    LoadBalancer,
    Member,
    Network,
    Pool,
    Port,
    Record,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    VpnEndpointGroup,
    VpnService,
)

#: the longest id a name may carry (ids are at most 63 characters, or UUIDs; room for older stores)
MAX_ID = 128
COLLECTION = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "chassis": "chassis",
    "router": "routers",
    "floating_ip": "floatingIps",
    "security_group": "securityGroups",
    "security_group_rule": "securityGroupRules",
    "firewall_rule": "firewallRules",
    "firewall_policy": "firewallPolicies",
    "firewall_group": "firewallGroups",
    "load_balancer": "loadBalancers",
    "listener": "listeners",
    "pool": "pools",
    "health_monitor": "healthMonitors",
    "ike_policy": "ikePolicies",
    "ipsec_policy": "ipsecPolicies",
    "vpn_service": "vpnServices",
    "vpn_endpoint_group": "vpnEndpointGroups",
    "ipsec_site_connection": "ipsecSiteConnections",
}  # members: "pools/{pool}/members/{member}" (member_name)
SEGMENT_TO_PB = {
    "vxlan": pb.Network.VXLAN,
    "gre": pb.Network.GRE,
    "geneve": pb.Network.GENEVE,
    "vlan": pb.Network.VLAN,
    "flat": pb.Network.FLAT,
}
SEGMENT_FROM_PB = {v: k for k, v in SEGMENT_TO_PB.items()}
STATUS_TO_PB = {"DOWN": pb.Port.DOWN, "ACTIVE": pb.Port.ACTIVE}


def name_of(kind: str, ident: str) -> str:
    return f"{COLLECTION[kind]}/{ident}" if ident else ""


def parse_name(kind: str, name: str, field_path: str) -> str:
    """The id in a resource name like "networks/abc"; INVALID_ARGUMENT naming `field_path` otherwise."""
    prefix = COLLECTION[kind] + "/"
    if not name:
        raise errors.invalid(field_path, f"required: a {kind} name like {prefix}ID")
    if len(name) > len(prefix) + MAX_ID:
        raise errors.invalid(
            field_path,
            f"longer than {len(prefix) + MAX_ID} characters: no {kind} has such a name",
            reason="NAME_TOO_LONG",
        )
    if not name.startswith(prefix) or "/" in name[len(prefix) :] or len(name) == len(prefix):
        raise errors.invalid(field_path, f"{name!r} is not a {kind} name ({prefix}ID)")
    return name[len(prefix) :]


def _ts(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMicroseconds(round(t * 1e6))  # the clock's float has microsecond precision at best
    return ts


def network_to_pb(n: Network) -> pb.Network:
    return pb.Network(
        name=name_of("network", n.id),
        tenant=n.tenant,
        display_name=n.display_name,
        segment_type=SEGMENT_TO_PB[n.segment_type],
        segment_id=n.segment_id or 0,
        physical_network=n.physical_network,
        mtu=n.mtu,
        admin_state_up=n.admin_state_up,
        external=n.external,
        revision=n.revision,
        etag=str(n.revision),
        tunnel_key=n.key,
        create_time=_ts(n.create_time),
        update_time=_ts(n.update_time),
        description=n.description,
        tags=n.tags,
        shared=n.shared,
        status=pb.Network.ACTIVE if n.admin_state_up else pb.Network.DOWN,
    )


def subnet_to_pb(s: Subnet) -> pb.Subnet:
    return pb.Subnet(
        name=name_of("subnet", s.id),
        tenant=s.tenant,
        display_name=s.display_name,
        network=name_of("network", s.network_id),
        cidr=s.cidr,
        ip_version=s.ip_version,
        gateway_ip=s.gateway_ip or "",
        allocation_pools=[pb.AllocationPool(start=a, end=b) for a, b in s.allocation_pools],
        enable_dhcp=s.enable_dhcp,
        dns_servers=list(s.dns_servers),
        host_routes=[pb.HostRoute(destination=d, nexthop=n) for d, n in s.host_routes],
        ipv6_ra_mode=s.ipv6_ra_mode,
        ipv6_address_mode=s.ipv6_address_mode,
        revision=s.revision,
        etag=str(s.revision),
        create_time=_ts(s.create_time),
        update_time=_ts(s.update_time),
    )


def port_to_pb(p: Port) -> pb.Port:
    return pb.Port(
        name=name_of("port", p.id),
        tenant=p.tenant,
        display_name=p.display_name,
        network=name_of("network", p.network_id),
        mac_address=p.mac,
        fixed_ips=[pb.FixedIp(subnet=name_of("subnet", s), ip_address=a) for s, a in p.fixed_ips],
        device_owner=p.device_owner,
        device_id=p.device_id,
        admin_state_up=p.admin_state_up,
        port_security_enabled=p.port_security_enabled,
        allowed_address_pairs=[
            pb.AddressPair(ip_address=i, mac_address=m) for i, m in p.allowed_address_pairs
        ],
        security_groups=[name_of("security_group", g) for g in p.security_groups],
        binding_chassis=name_of("chassis", p.binding_chassis),
        status=STATUS_TO_PB.get(p.status, pb.Port.STATUS_UNSPECIFIED),
        revision=p.revision,
        etag=str(p.revision),
        tunnel_key=p.key,
        create_time=_ts(p.create_time),
        update_time=_ts(p.update_time),
        description=p.description,
        tags=p.tags,
    )


def chassis_to_pb(c: Chassis) -> pb.Chassis:
    return pb.Chassis(
        name=name_of("chassis", c.id),
        datapath_id=c.datapath_id,
        tunnel_ip=c.tunnel_ip,
        ovsdb_address=c.ovsdb_address,
        bridge_mappings=dict(c.bridge_mappings),
        revision=c.revision,
        etag=str(c.revision),
        create_time=_ts(c.create_time),
        update_time=_ts(c.update_time),
    )


def router_interface_pb(router_id: str, port: Port, subnet_id: str, address: str) -> pb.RouterInterface:
    return pb.RouterInterface(
        router=name_of("router", router_id),
        port=name_of("port", port.id),
        subnet=name_of("subnet", subnet_id),
        network=name_of("network", port.network_id),
        ip_address=address,
    )


def router_to_pb(r: Router, ports: list[Port] | None = None) -> pb.Router:
    """`ports`: the router's interface and gateway ports (None: leave interfaces and the gateway's address
    out, as Watch events do)."""
    msg = pb.Router(
        name=name_of("router", r.id),
        tenant=r.tenant,
        display_name=r.display_name,
        admin_state_up=r.admin_state_up,
        routes=[pb.HostRoute(destination=d, nexthop=n) for d, n in r.routes],
        revision=r.revision,
        etag=str(r.revision),
        tunnel_key=r.key,
        create_time=_ts(r.create_time),
        update_time=_ts(r.update_time),
    )
    if r.gateway_network_id:
        msg.external_gateway.network = name_of("network", r.gateway_network_id)
        msg.external_gateway.enable_snat = r.enable_snat
    for p in ports or ():
        if p.device_owner == OWNER_ROUTER_INTERFACE:
            msg.interfaces.extend(router_interface_pb(r.id, p, s, a) for s, a in p.fixed_ips)
        elif p.device_owner == OWNER_ROUTER_GATEWAY and r.gateway_network_id:
            msg.external_gateway.port = name_of("port", p.id)
            if p.fixed_ips:
                msg.external_gateway.fixed_ip.subnet = name_of("subnet", p.fixed_ips[0][0])
                msg.external_gateway.fixed_ip.ip_address = p.fixed_ips[0][1]
                msg.external_gateway.fixed_ips.extend(
                    pb.FixedIp(subnet=name_of("subnet", s), ip_address=a) for s, a in p.fixed_ips
                )
    return msg


def floating_ip_to_pb(f: FloatingIp) -> pb.FloatingIp:
    return pb.FloatingIp(
        name=name_of("floating_ip", f.id),
        tenant=f.tenant,
        floating_network=name_of("network", f.network_id),
        floating_ip_address=f.address,
        port=name_of("port", f.port_id),
        fixed_ip_address=f.fixed_ip,
        router=name_of("router", f.router_id),
        revision=f.revision,
        etag=str(f.revision),
        create_time=_ts(f.create_time),
        update_time=_ts(f.update_time),
    )


def security_group_rule_to_pb(r: SecurityGroupRule) -> pb.SecurityGroupRule:
    msg = pb.SecurityGroupRule(
        name=name_of("security_group_rule", r.id),
        tenant=r.tenant,
        security_group=name_of("security_group", r.security_group_id),
        direction=r.direction,
        ethertype=r.ethertype,
        protocol=r.protocol,
        port_range_min=r.port_range_min,
        port_range_max=r.port_range_max,
        remote_ip_prefix=r.remote_ip_prefix,
        remote_group=name_of("security_group", r.remote_group_id),
        description=r.description,
        revision=r.revision,
        etag=str(r.revision),
        create_time=_ts(r.create_time),
        update_time=_ts(r.update_time),
        conjunction_id=r.key,
    )
    if r.icmp_type >= 0:
        msg.icmp_type = r.icmp_type
    if r.icmp_code >= 0:
        msg.icmp_code = r.icmp_code
    return msg


def security_group_to_pb(g: SecurityGroup, rules: list[SecurityGroupRule] | None = None) -> pb.SecurityGroup:
    """`rules`: the group's (None: left out, as Watch events do)."""
    return pb.SecurityGroup(
        name=name_of("security_group", g.id),
        tenant=g.tenant,
        display_name=g.display_name,
        description=g.description,
        rules=[security_group_rule_to_pb(r) for r in rules or ()],
        revision=g.revision,
        etag=str(g.revision),
        create_time=_ts(g.create_time),
        update_time=_ts(g.update_time),
    )


def firewall_rule_to_pb(r: FirewallRule) -> pb.FirewallRule:
    return pb.FirewallRule(
        name=name_of("firewall_rule", r.id),
        tenant=r.tenant,
        display_name=r.display_name,
        description=r.description,
        action=r.action,
        protocol=r.protocol,
        ip_version=r.ip_version,
        source_ip_address=r.source_ip_address,
        destination_ip_address=r.destination_ip_address,
        source_port_min=r.source_port_min,
        source_port_max=r.source_port_max,
        destination_port_min=r.destination_port_min,
        destination_port_max=r.destination_port_max,
        enabled=r.enabled,
        revision=r.revision,
        etag=str(r.revision),
        create_time=_ts(r.create_time),
        update_time=_ts(r.update_time),
    )


def firewall_policy_to_pb(p: FirewallPolicy) -> pb.FirewallPolicy:
    return pb.FirewallPolicy(
        name=name_of("firewall_policy", p.id),
        tenant=p.tenant,
        display_name=p.display_name,
        description=p.description,
        firewall_rules=[name_of("firewall_rule", r) for r in p.rules],
        revision=p.revision,
        etag=str(p.revision),
        create_time=_ts(p.create_time),
        update_time=_ts(p.update_time),
    )


def firewall_group_to_pb(g: FirewallGroup) -> pb.FirewallGroup:
    return pb.FirewallGroup(
        name=name_of("firewall_group", g.id),
        tenant=g.tenant,
        display_name=g.display_name,
        description=g.description,
        ingress_firewall_policy=name_of("firewall_policy", g.ingress_policy_id),
        egress_firewall_policy=name_of("firewall_policy", g.egress_policy_id),
        ports=[name_of("port", p) for p in g.ports],
        admin_state_up=g.admin_state_up,
        revision=g.revision,
        etag=str(g.revision),
        create_time=_ts(g.create_time),
        update_time=_ts(g.update_time),
    )


def member_name(pool_id: str, member_id: str) -> str:
    return f"pools/{pool_id}/members/{member_id}"


def parse_member_name(name: str, field_path: str) -> tuple[str, str]:
    """(pool id, member id) of "pools/{pool}/members/{member}"."""
    if len(name) > len("pools//members/") + 2 * MAX_ID:
        raise errors.invalid(
            field_path,
            f"longer than {len('pools//members/') + 2 * MAX_ID} characters: no member has such a name",
            reason="NAME_TOO_LONG",
        )
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "pools" or parts[2] != "members" or not parts[1] or not parts[3]:
        raise errors.invalid(
            field_path,
            f"{name!r} is not a member name (pools/POOL/members/ID)"
            if name
            else "required: a member name like pools/POOL/members/ID",
        )
    return parts[1], parts[3]


def load_balancer_to_pb(lb: LoadBalancer) -> pb.LoadBalancer:
    return pb.LoadBalancer(
        name=name_of("load_balancer", lb.id),
        tenant=lb.tenant,
        display_name=lb.display_name,
        description=lb.description,
        vip_subnet=name_of("subnet", lb.vip_subnet_id),
        vip_address=lb.vip_address,
        vip_port=name_of("port", lb.vip_port_id),
        admin_state_up=lb.admin_state_up,
        operating_status=lb.operating_status,
        revision=lb.revision,
        etag=str(lb.revision),
        create_time=_ts(lb.create_time),
        update_time=_ts(lb.update_time),
    )


def listener_to_pb(li: Listener) -> pb.Listener:
    return pb.Listener(
        name=name_of("listener", li.id),
        tenant=li.tenant,
        display_name=li.display_name,
        load_balancer=name_of("load_balancer", li.load_balancer_id),
        protocol=li.protocol,
        protocol_port=li.protocol_port,
        default_pool=name_of("pool", li.default_pool_id),
        admin_state_up=li.admin_state_up,
        revision=li.revision,
        etag=str(li.revision),
        create_time=_ts(li.create_time),
        update_time=_ts(li.update_time),
    )


def pool_to_pb(po: Pool) -> pb.Pool:
    return pb.Pool(
        name=name_of("pool", po.id),
        tenant=po.tenant,
        display_name=po.display_name,
        load_balancer=name_of("load_balancer", po.load_balancer_id),
        protocol=po.protocol,
        lb_algorithm=po.lb_algorithm,
        admin_state_up=po.admin_state_up,
        operating_status=po.operating_status,
        revision=po.revision,
        etag=str(po.revision),
        create_time=_ts(po.create_time),
        update_time=_ts(po.update_time),
    )


def member_to_pb(m: Member) -> pb.Member:
    return pb.Member(
        name=member_name(m.pool_id, m.id),
        tenant=m.tenant,
        display_name=m.display_name,
        address=m.address,
        protocol_port=m.protocol_port,
        subnet=name_of("subnet", m.subnet_id),
        weight=m.weight,
        admin_state_up=m.admin_state_up,
        operating_status=m.operating_status,
        revision=m.revision,
        etag=str(m.revision),
        create_time=_ts(m.create_time),
        update_time=_ts(m.update_time),
    )


def health_monitor_to_pb(h: HealthMonitor) -> pb.HealthMonitor:
    return pb.HealthMonitor(
        name=name_of("health_monitor", h.id),
        tenant=h.tenant,
        display_name=h.display_name,
        pool=name_of("pool", h.pool_id),
        type=h.type,
        delay=h.delay,
        timeout=h.timeout,
        max_retries=h.max_retries,
        http_method=h.http_method,
        url_path=h.url_path,
        expected_codes=h.expected_codes,
        admin_state_up=h.admin_state_up,
        revision=h.revision,
        etag=str(h.revision),
        create_time=_ts(h.create_time),
        update_time=_ts(h.update_time),
    )


def ike_policy_to_pb(p: IkePolicy) -> pb.IkePolicy:
    return pb.IkePolicy(
        name=name_of("ike_policy", p.id),
        tenant=p.tenant,
        display_name=p.display_name,
        description=p.description,
        ike_version=p.ike_version,
        encryption_algorithm=p.encryption_algorithm,
        auth_algorithm=p.auth_algorithm,
        pfs=p.pfs,
        phase1_negotiation_mode=p.phase1_negotiation_mode,
        lifetime=p.lifetime_s,
        revision=p.revision,
        etag=str(p.revision),
        create_time=_ts(p.create_time),
        update_time=_ts(p.update_time),
    )


def ipsec_policy_to_pb(p: IpsecPolicy) -> pb.IpsecPolicy:
    return pb.IpsecPolicy(
        name=name_of("ipsec_policy", p.id),
        tenant=p.tenant,
        display_name=p.display_name,
        description=p.description,
        transform_protocol=p.transform_protocol,
        encapsulation_mode=p.encapsulation_mode,
        encryption_algorithm=p.encryption_algorithm,
        auth_algorithm=p.auth_algorithm,
        pfs=p.pfs,
        lifetime=p.lifetime_s,
        revision=p.revision,
        etag=str(p.revision),
        create_time=_ts(p.create_time),
        update_time=_ts(p.update_time),
    )


def vpn_service_to_pb(s: VpnService) -> pb.VpnService:
    return pb.VpnService(
        name=name_of("vpn_service", s.id),
        tenant=s.tenant,
        display_name=s.display_name,
        description=s.description,
        router=name_of("router", s.router_id),
        admin_state_up=s.admin_state_up,
        status=s.status,
        external_v4_ip=s.external_v4_ip,
        external_v6_ip=s.external_v6_ip,
        revision=s.revision,
        etag=str(s.revision),
        create_time=_ts(s.create_time),
        update_time=_ts(s.update_time),
    )


def vpn_endpoint_group_to_pb(g: VpnEndpointGroup) -> pb.VpnEndpointGroup:
    endpoints = [name_of("subnet", e) for e in g.endpoints] if g.type == "subnet" else list(g.endpoints)
    return pb.VpnEndpointGroup(
        name=name_of("vpn_endpoint_group", g.id),
        tenant=g.tenant,
        display_name=g.display_name,
        description=g.description,
        type=g.type,
        endpoints=endpoints,
        revision=g.revision,
        etag=str(g.revision),
        create_time=_ts(g.create_time),
        update_time=_ts(g.update_time),
    )


def ipsec_site_connection_to_pb(c: IpsecSiteConnection) -> pb.IpsecSiteConnection:
    """Never the pre-shared key: psk stays empty, psk_set says whether one is stored."""
    return pb.IpsecSiteConnection(
        name=name_of("ipsec_site_connection", c.id),
        tenant=c.tenant,
        display_name=c.display_name,
        description=c.description,
        vpnservice=name_of("vpn_service", c.vpnservice_id),
        ikepolicy=name_of("ike_policy", c.ikepolicy_id),
        ipsecpolicy=name_of("ipsec_policy", c.ipsecpolicy_id),
        local_ep_group=name_of("vpn_endpoint_group", c.local_ep_group_id),
        peer_ep_group=name_of("vpn_endpoint_group", c.peer_ep_group_id),
        peer_address=c.peer_address,
        peer_id=c.peer_id,
        local_id=c.local_id,
        psk_set=bool(c.psk),
        mtu=c.mtu,
        dpd_action=c.dpd_action,
        dpd_interval=c.dpd_interval_s,
        dpd_timeout=c.dpd_timeout_s,
        initiator=c.initiator,
        admin_state_up=c.admin_state_up,
        status=c.status,
        status_reason=c.status_reason,
        revision=c.revision,
        etag=str(c.revision),
        create_time=_ts(c.create_time),
        update_time=_ts(c.update_time),
    )


_LB_TO_PB: dict[type, Any] = {
    LoadBalancer: load_balancer_to_pb,
    Listener: listener_to_pb,
    Pool: pool_to_pb,
    Member: member_to_pb,
    HealthMonitor: health_monitor_to_pb,
    IkePolicy: ike_policy_to_pb,
    IpsecPolicy: ipsec_policy_to_pb,
    VpnService: vpn_service_to_pb,
    VpnEndpointGroup: vpn_endpoint_group_to_pb,
    IpsecSiteConnection: ipsec_site_connection_to_pb,
}


def to_pb(rec: Record) -> Any:
    if type(rec) in _LB_TO_PB:
        return _LB_TO_PB[type(rec)](rec)
    if isinstance(rec, SecurityGroup):
        return security_group_to_pb(rec)
    if isinstance(rec, SecurityGroupRule):
        return security_group_rule_to_pb(rec)
    if isinstance(rec, FirewallRule):
        return firewall_rule_to_pb(rec)
    if isinstance(rec, FirewallPolicy):
        return firewall_policy_to_pb(rec)
    if isinstance(rec, FirewallGroup):
        return firewall_group_to_pb(rec)
    if isinstance(rec, Network):
        return network_to_pb(rec)
    if isinstance(rec, Subnet):
        return subnet_to_pb(rec)
    if isinstance(rec, Port):
        return port_to_pb(rec)
    if isinstance(rec, Router):
        return router_to_pb(rec)
    if isinstance(rec, FloatingIp):
        return floating_ip_to_pb(rec)
    assert isinstance(rec, Chassis)
    return chassis_to_pb(rec)


def fixed_ip_requests(fixed_ips: list[pb.FixedIp], field_path: str = "fixed_ips") -> list[tuple[str, str]]:
    out = []
    for i, f in enumerate(fixed_ips):
        sid = parse_name("subnet", f.subnet, f"{field_path}[{i}].subnet") if f.subnet else ""
        out.append((sid, f.ip_address))
    return out


def group_ids(names: list[str], field_path: str = "security_groups") -> list[str]:
    return [parse_name("security_group", n, f"{field_path}[{i}]") for i, n in enumerate(names)]


def chassis_ref(name: str, field_path: str = "binding_chassis") -> str:
    return parse_name("chassis", name, field_path) if name else ""
