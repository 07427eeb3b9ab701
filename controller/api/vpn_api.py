"""The gRPC VpnaasService (Neutron VPNaaS v2 with endpoint groups): IKE and IPsec policies, VPN services,
endpoint groups and IPsec site connections as resource specs (controller/resources.py) whose standard methods
are the whole service. Writes go to topology.ops_vpn; changes show up in TopologyService.Watch like every other
kind. The realization (strongSwan, flows) follows the store's changes; statuses are written by it
(topology.ops_vpn.set_vpn_status), never by a client.

References are names ("vpnServices/{id}", "subnets/{id}"); a reference to another tenant's record is
NOT_FOUND naming the request's field, as if it did not exist. The pre-shared key is write-only: the API's
messages never carry it back (convert.ipsec_site_connection_to_pb), and no error names its value.
"""

from __future__ import annotations

from typing import Any, Protocol

from controller.api import convert
from controller.api.resources import Call, Parent, Resource, Tables, serve, visible
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology import errors
from topology import ops_vpn as vpn
from topology.records import (
    EP_SUBNET,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    VpnEndpointGroup,
    VpnService,
)

_STAMPS = frozenset({"revision", "create_time", "update_time"})


def _up(m: Any) -> bool:
    return m.admin_state_up if m.HasField("admin_state_up") else True


def _ref_id(kind: str, name: str, field_path: str) -> str:
    return convert.parse_name(kind, name, field_path) if name else ""


# ------------------------------------------------------------------------------------------ policies


def _create_ike(c: Call, m: pb.IkePolicy) -> list[Any]:
    rec = IkePolicy(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "ike_policy.tenant"),
        display_name=m.display_name,
        description=m.description,
        ike_version=m.ike_version,
        encryption_algorithm=m.encryption_algorithm,
        auth_algorithm=m.auth_algorithm,
        pfs=m.pfs,
        phase1_negotiation_mode=m.phase1_negotiation_mode,
        lifetime_s=m.lifetime or 3600,
    )
    return vpn.create_ike_policy(c.topo, rec, c.rev, c.now)


IKE_POLICY = Resource(
    kind="ike_policy",
    plural="IkePolicies",
    to_pb=convert.ike_policy_to_pb,
    create=_create_ike,
    update=lambda c, old, fields: vpn.update_ike_policy(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: vpn.delete_ike_policy(c.topo, old),
    mutable=frozenset(vpn.IKE_POLICY_MUTABLE),
    immutable=frozenset({"tenant"}),
    output_only=frozenset({"name"}) | _STAMPS,
)


def _create_ipsec(c: Call, m: pb.IpsecPolicy) -> list[Any]:
    rec = IpsecPolicy(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "ipsec_policy.tenant"),
        display_name=m.display_name,
        description=m.description,
        transform_protocol=m.transform_protocol,
        encapsulation_mode=m.encapsulation_mode,
        encryption_algorithm=m.encryption_algorithm,
        auth_algorithm=m.auth_algorithm,
        pfs=m.pfs,
        lifetime_s=m.lifetime or 3600,
    )
    return vpn.create_ipsec_policy(c.topo, rec, c.rev, c.now)


IPSEC_POLICY = Resource(
    kind="ipsec_policy",
    plural="IpsecPolicies",
    to_pb=convert.ipsec_policy_to_pb,
    create=_create_ipsec,
    update=lambda c, old, fields: vpn.update_ipsec_policy(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: vpn.delete_ipsec_policy(c.topo, old),
    mutable=frozenset(vpn.IPSEC_POLICY_MUTABLE),
    immutable=frozenset({"tenant"}),
    output_only=frozenset({"name"}) | _STAMPS,
)

# ------------------------------------------------------------------------------------------ services


def _create_service(c: Call, m: pb.VpnService) -> list[Any]:
    rec = VpnService(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "vpn_service.tenant"),
        display_name=m.display_name,
        description=m.description,
        router_id=convert.parse_name("router", m.router, "vpn_service.router"),
        admin_state_up=_up(m),
    )
    return vpn.create_vpn_service(c.topo, rec, c.rev, c.now)


VPN_SERVICE = Resource(
    kind="vpn_service",
    plural="VpnServices",
    to_pb=convert.vpn_service_to_pb,
    create=_create_service,
    update=lambda c, old, fields: vpn.update_vpn_service(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: vpn.delete_vpn_service(c.topo, old),
    mutable=frozenset(vpn.VPN_SERVICE_MUTABLE),
    immutable=frozenset({"tenant", "router"}),
    output_only=frozenset({"name", "status", "external_v4_ip", "external_v6_ip"}) | _STAMPS,
    parent=Parent("router", "router", "router_id", token_key="router_id"),
)

# ------------------------------------------------------------------------------------------ endpoint groups


def _create_group(c: Call, m: pb.VpnEndpointGroup) -> list[Any]:
    path = "vpn_endpoint_group.endpoints"
    if m.type.strip().lower() == EP_SUBNET:  # subnets by name; CIDRs as given (ops_vpn checks them)
        endpoints = tuple(convert.parse_name("subnet", e, f"{path}[{i}]") for i, e in enumerate(m.endpoints))
    else:
        endpoints = tuple(m.endpoints)
    rec = VpnEndpointGroup(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "vpn_endpoint_group.tenant"),
        display_name=m.display_name,
        description=m.description,
        type=m.type,
        endpoints=endpoints,
    )
    return vpn.create_endpoint_group(c.topo, rec, c.rev, c.now)


VPN_ENDPOINT_GROUP = Resource(
    kind="vpn_endpoint_group",
    plural="VpnEndpointGroups",
    to_pb=convert.vpn_endpoint_group_to_pb,
    create=_create_group,
    update=lambda c, old, fields: vpn.update_endpoint_group(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: vpn.delete_endpoint_group(c.topo, old),
    mutable=frozenset(vpn.ENDPOINT_GROUP_MUTABLE),
    immutable=frozenset({"tenant", "type", "endpoints"}),
    output_only=frozenset({"name"}) | _STAMPS,
)

# ------------------------------------------------------------------------------------------ connections

_CONN = "ipsec_site_connection"


def _create_connection(c: Call, m: pb.IpsecSiteConnection) -> list[Any]:
    sid = convert.parse_name("vpn_service", m.vpnservice, f"{_CONN}.vpnservice")
    service = c.topo.vpn_services.get(sid)
    if service is None or not visible(c.p, service):
        err = errors.not_found("vpn_service", sid)
        err.violations = [(f"{_CONN}.vpnservice", f"vpn service {sid!r} not found")]
        raise err
    rec = IpsecSiteConnection(
        id=c.new_id(),
        tenant=service.tenant,
        display_name=m.display_name,
        description=m.description,
        vpnservice_id=service.id,
        ikepolicy_id=convert.parse_name("ike_policy", m.ikepolicy, f"{_CONN}.ikepolicy"),
        ipsecpolicy_id=convert.parse_name("ipsec_policy", m.ipsecpolicy, f"{_CONN}.ipsecpolicy"),
        local_ep_group_id=convert.parse_name(
            "vpn_endpoint_group", m.local_ep_group, f"{_CONN}.local_ep_group"
        ),
        peer_ep_group_id=convert.parse_name("vpn_endpoint_group", m.peer_ep_group, f"{_CONN}.peer_ep_group"),
        peer_address=m.peer_address,
        peer_id=m.peer_id,
        local_id=m.local_id,
        psk=m.psk,
        mtu=m.mtu if m.HasField("mtu") else 1500,
        dpd_action=m.dpd_action,
        dpd_interval_s=m.dpd_interval if m.HasField("dpd_interval") else 30,
        dpd_timeout_s=m.dpd_timeout if m.HasField("dpd_timeout") else 120,
        initiator=m.initiator,
        admin_state_up=_up(m),
    )
    return vpn.create_ipsec_site_connection(c.topo, rec, c.rev, c.now)


def _update_connection(c: Call, old: IpsecSiteConnection, fields: dict[str, Any]) -> list[Any]:
    """An update mask "*" (every mutable field) keeps the stored key unless the message carries one: the key
    is never read back, so a client replacing the whole resource could not send it again."""
    mask = getattr(c.request, "update_mask", None)  # (Apply names the fields it changes: no mask)
    if mask is not None and "*" in mask.paths and not fields.get("psk", "x"):
        del fields["psk"]
    return vpn.update_ipsec_site_connection(c.topo, old, fields, c.rev, c.now)


IPSEC_SITE_CONNECTION = Resource(
    kind=_CONN,
    plural="IpsecSiteConnections",
    to_pb=convert.ipsec_site_connection_to_pb,
    create=_create_connection,
    update=_update_connection,
    delete=lambda c, old, force: vpn.delete_ipsec_site_connection(c.topo, old, c.rev, c.now),
    mutable=frozenset(vpn.CONNECTION_MUTABLE),
    write_only=frozenset({"psk"}),
    immutable=frozenset({"vpnservice", "ikepolicy", "ipsecpolicy"}),
    output_only=frozenset({"name", "tenant", "psk_set", "status", "status_reason"}) | _STAMPS,
    values={
        "local_ep_group": lambda c, m: convert.parse_name(
            "vpn_endpoint_group", m.local_ep_group, f"{_CONN}.local_ep_group"
        ),
        "peer_ep_group": lambda c, m: convert.parse_name(
            "vpn_endpoint_group", m.peer_ep_group, f"{_CONN}.peer_ep_group"
        ),
    },
    parent=Parent("vpn_service", "vpnservice", "vpnservice_id", token_key="vpnservice_id"),
)

SPECS = (IKE_POLICY, IPSEC_POLICY, VPN_SERVICE, VPN_ENDPOINT_GROUP, IPSEC_SITE_CONNECTION)


class HasTables(Protocol):
    tables: Tables


class VpnaasService(pb_grpc.VpnaasServiceServicer):
    """Only standard methods: each is Tables' over its spec (installed by `serve` below)."""

    def __init__(self, topology: HasTables) -> None:
        self.tables = topology.tables  # the TopologyService's: one store, one set of specs


serve(VpnaasService, SPECS)
