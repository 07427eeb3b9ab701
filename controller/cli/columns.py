"""The columns of `sdnctl ... list` tables, per resource kind (the OpenStack client's headings).

A plain list shows the narrow set; `--long` adds the columns marked long; `-c` picks any column by heading
("Fixed IPs") or by field name ("fixed_ips"), and any other field of the resource by its field name.
Two fields are derived rather than read from the resource: `id` (the last part of the resource name, what
`--id` chose) and, for security group rules, `port_range` ("any", "22" or "1000:2000").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    heading: str
    field: str
    long: bool = False  # shown with --long only


def _c(*spec: str) -> list[Column]:
    """ "Heading=field" (narrow) and "+Heading=field" (--long only)."""
    out = []
    for s in spec:
        heading, _, field = s.lstrip("+").partition("=")
        out.append(Column(heading, field, long=s.startswith("+")))
    return out


COLUMNS: dict[str, list[Column]] = {
    "network": _c(
        "ID=id",
        "Name=display_name",
        "Type=segment_type",
        "External=external",
        "+Tenant=tenant",
        "+Segment=segment_id",
        "+Physical Network=physical_network",
        "+MTU=mtu",
        "+State=admin_state_up",
        "+Status=status",
        "+Shared=shared",
        "+Tags=tags",
        "+Description=description",
    ),
    "subnet": _c(
        "ID=id",
        "Name=display_name",
        "Network=network",
        "Subnet=cidr",
        "+Tenant=tenant",
        "+Gateway=gateway_ip",
        "+DHCP=enable_dhcp",
        "+IPv6 RA Mode=ipv6_ra_mode",
        "+IPv6 Address Mode=ipv6_address_mode",
        "+Allocation Pools=allocation_pools",
        "+DNS Nameservers=dns_servers",
    ),
    "port": _c(
        "ID=id",
        "Name=display_name",
        "Network=network",
        "MAC Address=mac_address",
        "Fixed IPs=fixed_ips",
        "Status=status",
        "+Tenant=tenant",
        "+Host=binding_chassis",
        "+Security Groups=security_groups",
        "+Device Owner=device_owner",
        "+Device ID=device_id",
        "+State=admin_state_up",
        "+Tags=tags",
        "+Description=description",
    ),
    "chassis": _c(
        "ID=id",
        "Datapath ID=datapath_id",
        "Tunnel IP=tunnel_ip",
        "+OVSDB=ovsdb_address",
        "+Bridge Mappings=bridge_mappings",
    ),
    "router": _c(
        "ID=id",
        "Name=display_name",
        "External Gateway=external_gateway",
        "State=admin_state_up",
        "+Tenant=tenant",
        "+Interfaces=interfaces",
        "+Routes=routes",
    ),
    "floating_ip": _c(
        "ID=id",
        "Floating IP Address=floating_ip_address",
        "Fixed IP Address=fixed_ip_address",
        "Port=port",
        "Floating Network=floating_network",
        "+Router=router",
        "+Tenant=tenant",
    ),
    "security_group": _c("ID=id", "Name=display_name", "Description=description", "+Tenant=tenant"),
    "security_group_rule": _c(
        "ID=id",
        "Security Group=security_group",
        "Direction=direction",
        "Ethertype=ethertype",
        "IP Protocol=protocol",
        "Port Range=port_range",
        "Remote IP Prefix=remote_ip_prefix",
        "Remote Security Group=remote_group",
        "+Tenant=tenant",
        "+Description=description",
    ),
    "firewall_rule": _c(
        "ID=id",
        "Name=display_name",
        "Action=action",
        "Protocol=protocol",
        "Source=source_ip_address",
        "Destination=destination_ip_address",
        "Destination Port=destination_port_min",
        "Enabled=enabled",
        "+Tenant=tenant",
        "+Source Port=source_port_min",
        "+IP Version=ip_version",
        "+Description=description",
    ),
    "firewall_policy": _c(
        "ID=id",
        "Name=display_name",
        "Firewall Rules=firewall_rules",
        "+Tenant=tenant",
        "+Description=description",
    ),
    "firewall_group": _c(
        "ID=id",
        "Name=display_name",
        "Ingress Policy=ingress_firewall_policy",
        "Egress Policy=egress_firewall_policy",
        "+Ports=ports",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "load_balancer": _c(
        "ID=id",
        "Name=display_name",
        "VIP Address=vip_address",
        "Operating Status=operating_status",
        "+Tenant=tenant",
        "+VIP Subnet=vip_subnet",
        "+VIP Port=vip_port",
        "+State=admin_state_up",
    ),
    "listener": _c(
        "ID=id",
        "Name=display_name",
        "Load Balancer=load_balancer",
        "Protocol=protocol",
        "Protocol Port=protocol_port",
        "+Default Pool=default_pool",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "pool": _c(
        "ID=id",
        "Name=display_name",
        "Protocol=protocol",
        "LB Algorithm=lb_algorithm",
        "Operating Status=operating_status",
        "+Load Balancer=load_balancer",
        "+Listener=listener",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "member": _c(
        "ID=id",
        "Name=display_name",
        "Address=address",
        "Protocol Port=protocol_port",
        "Weight=weight",
        "Operating Status=operating_status",
        "+Subnet=subnet",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "health_monitor": _c(
        "ID=id",
        "Name=display_name",
        "Pool=pool",
        "Type=type",
        "Delay=delay",
        "Timeout=timeout",
        "Max Retries=max_retries",
        "+URL Path=url_path",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "ike_policy": _c(
        "ID=id",
        "Name=display_name",
        "IKE Version=ike_version",
        "Encryption Algorithm=encryption_algorithm",
        "Auth Algorithm=auth_algorithm",
        "+PFS=pfs",
        "+Lifetime=lifetime",
        "+Tenant=tenant",
    ),
    "ipsec_policy": _c(
        "ID=id",
        "Name=display_name",
        "Encryption Algorithm=encryption_algorithm",
        "Auth Algorithm=auth_algorithm",
        "+PFS=pfs",
        "+Lifetime=lifetime",
        "+Tenant=tenant",
    ),
    "vpn_service": _c(
        "ID=id",
        "Name=display_name",
        "Router=router",
        "External IP=external_v4_ip",
        "Status=status",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
    "vpn_endpoint_group": _c(
        "ID=id", "Name=display_name", "Type=type", "Endpoints=endpoints", "+Tenant=tenant"
    ),
    "ipsec_site_connection": _c(  # never the PSK (the API does not return it)
        "ID=id",
        "Name=display_name",
        "Peer Address=peer_address",
        "VPN Service=vpnservice",
        "Status=status",
        "+Status Reason=status_reason",
        "+State=admin_state_up",
        "+Tenant=tenant",
    ),
}


def legacy_columns(fields: list[tuple[str, str]]) -> list[Column]:
    """A plug-in's (field, heading) list: the resource name becomes ID, the display name Name; an upper-case
    HEADING is title-cased."""
    out = []
    for field, header in fields:
        if field == "name":
            out.append(Column("ID", "id"))
        elif field == "display_name":
            out.append(Column("Name", "display_name"))
        else:
            heading = header.title().replace("Ip", "IP").replace("Id", "ID") if header.isupper() else header
            out.append(Column(heading, field))
    return out
