"""Typed, immutable records of the tenant topology. Ids, not resource names: the northbound translates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

SEGMENT_TYPES = ("vxlan", "gre", "geneve", "vlan", "flat")
OVERLAY_TYPES = ("vxlan", "gre", "geneve")
PROVIDER_TYPES = ("vlan", "flat")

PORT_DOWN = "DOWN"
PORT_ACTIVE = "ACTIVE"


@dataclass(frozen=True)
class Network:
    KIND: ClassVar[str] = "network"
    id: str
    tenant: str
    display_name: str = ""
    segment_type: str = "vxlan"
    segment_id: int | None = None  # None only for flat
    physical_network: str = ""
    mtu: int = 0  # 0 in a create request: the default for the segment type
    admin_state_up: bool = True
    external: bool = False
    key: int = 0  # datapath key: metadata inside br-int; unique across networks (and later routers)
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0
    description: str = ""
    tags: tuple[str, ...] = ()  # sorted, unique (Neutron's tags)
    shared: bool = False  # every tenant sees it and may attach ports (admin sets it)


@dataclass(frozen=True)
class Subnet:
    KIND: ClassVar[str] = "subnet"
    id: str
    tenant: str
    network_id: str
    cidr: str
    ip_version: int = 4
    display_name: str = ""
    gateway_ip: str | None = None
    allocation_pools: tuple[tuple[str, str], ...] = ()
    enable_dhcp: bool = True
    dns_servers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, nexthop)
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0
    ipv6_ra_mode: str = ""  # topology/ipv6.py MODES or "": immutable (Neutron's)
    ipv6_address_mode: str = ""


@dataclass(frozen=True)
class Port:
    KIND: ClassVar[str] = "port"
    id: str
    tenant: str
    network_id: str
    mac: str
    fixed_ips: tuple[tuple[str, str], ...] = ()  # (subnet id, address)
    display_name: str = ""
    device_owner: str = ""
    device_id: str = ""
    admin_state_up: bool = True
    port_security_enabled: bool = True
    allowed_address_pairs: tuple[tuple[str, str], ...] = ()  # (address or CIDR, MAC)
    security_groups: tuple[str, ...] = ()
    binding_chassis: str = ""  # where the port is bound (topology/binding.py decides; flows follow it)
    requested_chassis: str = ""  # an admin's binding_chassis: pins the port there ("" = follow its VIF)
    status: str = PORT_DOWN
    key: int = 0  # logical port key: SRC_PORT / DST_PORT registers; unique across ports
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0
    description: str = ""
    tags: tuple[str, ...] = ()  # sorted, unique


@dataclass(frozen=True)
class Chassis:
    KIND: ClassVar[str] = "chassis"
    id: str
    datapath_id: int = 0
    tunnel_ip: str = ""
    ovsdb_address: str = ""
    bridge_mappings: tuple[tuple[str, str], ...] = ()  # (physical network, bridge), sorted
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def tenant(self) -> str:
        return ""  # chassis belong to the operator


@dataclass(frozen=True)
class Neighbor:
    """A learnt MAC of an address on an external network (a router's next hop that answered the gateway
    chassis's ARP probe). It decides flows, so it lives in the store: revisioned, kept across restarts,
    seen by every controller. Internal: not in the API."""

    KIND: ClassVar[str] = "neighbor"
    id: str  # "{network id}|{address}"
    network_id: str = ""
    address: str = ""
    mac: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def tenant(self) -> str:
        return ""


@dataclass(frozen=True)
class GatewayHold:
    """A gateway chassis the controller holds for failed (controller/services/failover.py): its routers'
    gateways go to the next candidate until it is healthy long enough. In the store for the same reasons as
    Neighbor."""

    KIND: ClassVar[str] = "gateway_hold"
    id: str  # the chassis id
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def tenant(self) -> str:
        return ""


@dataclass(frozen=True)
class AppliedSet:
    """The objects Apply created for a tenant ("port/web-1", sorted): the marker prune goes by, so an
    Apply with prune deletes only among these, never objects made any other way. One record per tenant,
    written in the same transaction as the objects it names."""

    KIND: ClassVar[str] = "applied_set"
    id: str  # the tenant
    objects: tuple[str, ...] = ()
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def tenant(self) -> str:
        return self.id


#: kinds the controller keeps for itself: in the store and the model, never in the API (Watch, List)
INTERNAL_KINDS = ("neighbor", "gateway_hold", "applied_set")


# device_owner values of ports the controller makes for routers and floating IPs (Neutron's names)
OWNER_ROUTER_INTERFACE = "network:router_interface"  # device_id = router id; holds the subnet's gateway IP
OWNER_ROUTER_GATEWAY = "network:router_gateway"  # device_id = router id; on the external network
OWNER_FLOATING_IP = "network:floatingip"  # device_id = floating IP id; reserves its address


@dataclass(frozen=True)
class Router:
    """A distributed router: its own routing domain (datapath key). Interfaces are ports with
    device_owner OWNER_ROUTER_INTERFACE; the external gateway is a port OWNER_ROUTER_GATEWAY."""

    KIND: ClassVar[str] = "router"
    id: str
    tenant: str
    display_name: str = ""
    admin_state_up: bool = True
    gateway_network_id: str = ""  # an external network, or "" (no gateway)
    enable_snat: bool = True
    routes: tuple[tuple[str, str], ...] = ()  # static routes: (destination CIDR, nexthop)
    key: int = 0  # datapath key, from the same space as networks' keys
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class FloatingIp:
    """An address of an external network, reserved by a port OWNER_FLOATING_IP, translated to and from a
    fixed IP of an associated port through the router that joins that port's subnet to the external net."""

    KIND: ClassVar[str] = "floating_ip"
    id: str
    tenant: str
    network_id: str  # the external network
    address: str
    port_id: str = ""  # associated port, or ""
    fixed_ip: str = ""  # which of its fixed IPs
    router_id: str = ""  # derived when associated
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


#: SecurityGroupRule.direction / FirewallGroup sides
INGRESS = "ingress"
EGRESS = "egress"
DIRECTIONS = (INGRESS, EGRESS)
ETHERTYPES = ("IPv4", "IPv6")
#: protocol names the API accepts (besides a decimal IP protocol number and "" for any)
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
FIREWALL_ACTIONS = ("allow", "deny", "reject")
#: the security group every tenant gets (created on first need), with Neutron's rules: all egress, and
#: ingress from members of the same group
DEFAULT_GROUP_NAME = "default"


@dataclass(frozen=True)
class SecurityGroup:
    """A named set of allow rules; a port in several groups gets the union of their rules."""

    KIND: ClassVar[str] = "security_group"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class SecurityGroupRule:
    """One allow rule of a group (Neutron's shape). Rules are immutable: create and delete, no update.

    protocol: "" (any), a name of PROTOCOL_NUMBERS, or a decimal IP protocol number as text;
    port_range_min/max: tcp/udp/sctp destination ports (0, 0: any); icmp_type/icmp_code: -1 for any;
    remote: at most one of remote_ip_prefix (a CIDR) and remote_group_id (members' fixed IPs and pairs);
    key: the rule's number in the dataplane (its conjunction id), unique across rules.
    """

    KIND: ClassVar[str] = "security_group_rule"
    id: str
    tenant: str
    security_group_id: str
    direction: str = INGRESS
    ethertype: str = "IPv4"
    protocol: str = ""
    port_range_min: int = 0
    port_range_max: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    remote_ip_prefix: str = ""
    remote_group_id: str = ""
    description: str = ""
    key: int = 0
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class FirewallRule:
    """One rule of a router firewall policy (Neutron FWaaS v2's shape); a rule is in at most one policy.

    protocol as in SecurityGroupRule; *_ip_address: a CIDR or "" (any); *_port_min/max: 0, 0 for any."""

    KIND: ClassVar[str] = "firewall_rule"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    action: str = "deny"
    protocol: str = ""
    ip_version: int = 4
    source_ip_address: str = ""
    destination_ip_address: str = ""
    source_port_min: int = 0
    source_port_max: int = 0
    destination_port_min: int = 0
    destination_port_max: int = 0
    enabled: bool = True
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class FirewallPolicy:
    """An ordered list of firewall rules: the first that matches a new connection decides; none: deny."""

    KIND: ClassVar[str] = "firewall_policy"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    rules: tuple[str, ...] = ()  # firewall rule ids, in order
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class FirewallGroup:
    """Policies applied to router interfaces: ingress = what the router receives on the interface (from
    its subnet), egress = what the router sends out of it (into its subnet). A port is in at most one group.
    An empty policy id: that side is not filtered."""

    KIND: ClassVar[str] = "firewall_group"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    ingress_policy_id: str = ""
    egress_policy_id: str = ""
    ports: tuple[str, ...] = ()  # router interface port ids
    admin_state_up: bool = True
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


# ----------------------------------------------------------------------------------------------- load balancers
# Octavia's shape: a load balancer owns a VIP (an address of a subnet, reserved by a port with device_owner
# OWNER_LOAD_BALANCER); listeners (protocol + port) send to a pool; a pool spreads over its members
# (ROUND_ROBIN by weight, or SOURCE_IP affinity) and may have one health monitor. operating_status is the
# controller's (health monitor results), never a client's.

OWNER_LOAD_BALANCER = "network:loadbalancer"  # device_id = load balancer id; holds the VIP address
LB_PROTOCOLS = ("TCP", "UDP")
LB_ALGORITHMS = ("ROUND_ROBIN", "SOURCE_IP")
MONITOR_TYPES = ("TCP", "PING", "HTTP")
ONLINE, OFFLINE, ERROR, NO_MONITOR, DEGRADED = "ONLINE", "OFFLINE", "ERROR", "NO_MONITOR", "DEGRADED"
OPERATING_STATUSES = (ONLINE, OFFLINE, ERROR, NO_MONITOR, DEGRADED)


@dataclass(frozen=True)
class LoadBalancer:
    KIND: ClassVar[str] = "load_balancer"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    vip_subnet_id: str = ""
    vip_address: str = ""
    vip_port_id: str = ""  # the port reserving the VIP (made with the load balancer)
    admin_state_up: bool = True
    operating_status: str = ONLINE  # ONLINE, DEGRADED (some member down), ERROR (all down), OFFLINE (admin)
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class Listener:
    KIND: ClassVar[str] = "listener"
    id: str
    tenant: str
    load_balancer_id: str
    protocol: str = "TCP"
    protocol_port: int = 0
    default_pool_id: str = ""
    display_name: str = ""
    admin_state_up: bool = True
    key: int = 0  # the listener's number in the dataplane (its select groups' ids): unique, from the model
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class Pool:
    KIND: ClassVar[str] = "pool"
    id: str
    tenant: str
    load_balancer_id: str
    protocol: str = "TCP"
    lb_algorithm: str = "ROUND_ROBIN"
    display_name: str = ""
    admin_state_up: bool = True
    operating_status: str = ONLINE
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class Member:
    KIND: ClassVar[str] = "member"
    id: str
    tenant: str
    pool_id: str
    address: str
    protocol_port: int
    subnet_id: str = ""  # where the address lives ("" : the VIP's subnet)
    weight: int = 1  # 0..256; 0: no new connections
    display_name: str = ""
    admin_state_up: bool = True
    operating_status: str = NO_MONITOR  # ONLINE / ERROR under a health monitor, OFFLINE when admin down
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class HealthMonitor:
    KIND: ClassVar[str] = "health_monitor"
    id: str
    tenant: str
    pool_id: str
    type: str = "TCP"
    delay: float = 5.0  # seconds between probes of a member
    timeout: float = 3.0  # seconds a probe may take
    max_retries: int = 3  # consecutive results that change a member's status
    http_method: str = "GET"
    url_path: str = "/"
    expected_codes: str = "200"  # "200", "200,202", "200-204"
    display_name: str = ""
    admin_state_up: bool = True
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


# ------------------------------------------------------------------------------------------------ VPNaaS
# Neutron VPNaaS v2 with endpoint groups: IKE and IPsec policies, a VPN service on a tenant router with an
# external gateway, endpoint groups (local: subnets of that router; peer: CIDRs) and IPsec site connections.
# Statuses are the controller's (what the IKE daemon reports, topology/ops_vpn.py set_vpn_status), never a
# client's. Algorithm names are Neutron's; the values are strongSwan's (charon's) keywords for them: the
# API accepts only what charon can do (and nothing weak: no 3des, no md5, no MODP group below 2048 bits).

VPN_PENDING_CREATE, VPN_ACTIVE, VPN_DOWN, VPN_ERROR = "PENDING_CREATE", "ACTIVE", "DOWN", "ERROR"
VPN_STATUSES = (VPN_PENDING_CREATE, VPN_ACTIVE, VPN_DOWN, VPN_ERROR)
IKE_VERSIONS = ("v1", "v2")
#: encryption algorithm (Neutron's name) -> charon's proposal keyword
VPN_ENCRYPTION = {
    "aes-128": "aes128",
    "aes-192": "aes192",
    "aes-256": "aes256",
    "aes-128-ctr": "aes128ctr",
    "aes-192-ctr": "aes192ctr",
    "aes-256-ctr": "aes256ctr",
    "aes-128-gcm-16": "aes128gcm16",
    "aes-192-gcm-16": "aes192gcm16",
    "aes-256-gcm-16": "aes256gcm16",
}
#: authenticated encryption (no separate integrity algorithm in ESP; in IKE the auth algorithm is the PRF)
VPN_AEAD = frozenset(a for a in VPN_ENCRYPTION if "-gcm-" in a)
#: auth algorithm -> charon's integrity keyword (IKE's PRF is "prf" + the hash: prfsha256)
VPN_AUTH = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
#: PFS / IKE DH group -> charon's keyword ("" for no PFS in an IPsec policy: Neutron has no such value)
VPN_PFS = {
    "group14": "modp2048",
    "group15": "modp3072",
    "group16": "modp4096",
    "group19": "ecp256",
    "group20": "ecp384",
    "group21": "ecp521",
}
PHASE1_MODES = ("main",)  # Neutron's only value (aggressive mode leaks the identity hash; not offered)
TRANSFORM_PROTOCOLS = ("esp",)  # AH cannot cross NAT nor userspace ESP (kernel-libipsec): not offered
ENCAPSULATION_MODES = ("tunnel",)  # transport mode protects only the gateways' own traffic: not offered
DPD_ACTIONS = ("hold", "clear", "restart", "disabled")
INITIATORS = ("bi-directional", "response-only")
EP_SUBNET, EP_CIDR = "subnet", "cidr"
ENDPOINT_TYPES = (EP_SUBNET, EP_CIDR)


@dataclass(frozen=True)
class IkePolicy:
    KIND: ClassVar[str] = "ike_policy"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    ike_version: str = "v2"
    encryption_algorithm: str = "aes-128"
    auth_algorithm: str = "sha256"
    pfs: str = "group14"
    phase1_negotiation_mode: str = "main"
    lifetime_s: int = 3600
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class IpsecPolicy:
    KIND: ClassVar[str] = "ipsec_policy"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    transform_protocol: str = "esp"
    encapsulation_mode: str = "tunnel"
    encryption_algorithm: str = "aes-128"
    auth_algorithm: str = "sha256"
    pfs: str = "group14"
    lifetime_s: int = 3600
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class VpnService:
    """A tenant router's VPN endpoint: its gateway IP on the external network is the local IKE address.
    status is derived from its connections' (ACTIVE if one is, else DOWN / PENDING_CREATE, DOWN if admin down)."""

    KIND: ClassVar[str] = "vpn_service"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    router_id: str = ""
    admin_state_up: bool = True
    status: str = VPN_PENDING_CREATE
    # the router's gateway addresses when the service was made (output only; the gateway cannot change while
    # the router has a VPN service: topology/ops.py refuses it)
    external_v4_ip: str = ""
    external_v6_ip: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class VpnEndpointGroup:
    """type "subnet": endpoints are subnet ids (a connection's local side: subnets of its service's router);
    type "cidr": endpoints are CIDRs (the peer side), stored normalized (host bits cleared)."""

    KIND: ClassVar[str] = "vpn_endpoint_group"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    type: str = EP_CIDR
    endpoints: tuple[str, ...] = ()
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class IpsecSiteConnection:
    """A site-to-site tunnel of a VPN service to a peer gateway. psk is write-only: stored (the IKE daemon
    needs it), never returned by the API, never in Watch, never logged; repr() leaves it out."""

    KIND: ClassVar[str] = "ipsec_site_connection"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    vpnservice_id: str = ""
    ikepolicy_id: str = ""
    ipsecpolicy_id: str = ""
    local_ep_group_id: str = ""
    peer_ep_group_id: str = ""
    peer_address: str = ""
    peer_id: str = ""  # "" in a request: the peer address
    local_id: str = ""  # "": the router's gateway IP (decided by the realization, follows the gateway)
    psk: str = field(default="", repr=False)
    mtu: int = 1500
    dpd_action: str = "hold"
    dpd_interval_s: int = 30
    dpd_timeout_s: int = 120
    initiator: str = "bi-directional"
    admin_state_up: bool = True
    status: str = VPN_PENDING_CREATE
    status_reason: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


Record = (
    Network
    | Subnet
    | Port
    | Chassis
    | Router
    | FloatingIp
    | SecurityGroup
    | SecurityGroupRule
    | FirewallRule
    | FirewallPolicy
    | FirewallGroup
    | LoadBalancer
    | Listener
    | Pool
    | Member
    | HealthMonitor
    | IkePolicy
    | IpsecPolicy
    | VpnService
    | VpnEndpointGroup
    | IpsecSiteConnection
    | Neighbor
    | GatewayHold
    | AppliedSet
)
RECORD_TYPES: dict[str, type] = {
    t.KIND: t
    for t in (
        Network,
        Subnet,
        Port,
        Chassis,
        Router,
        FloatingIp,
        SecurityGroup,
        SecurityGroupRule,
        FirewallRule,
        FirewallPolicy,
        FirewallGroup,
        LoadBalancer,
        Listener,
        Pool,
        Member,
        HealthMonitor,
        IkePolicy,
        IpsecPolicy,
        VpnService,
        VpnEndpointGroup,
        IpsecSiteConnection,
        Neighbor,
        GatewayHold,
        AppliedSet,
    )
}
#: the core's kinds; plug-ins add theirs with register_kind (apps/plugin.py install)
CORE_KINDS = frozenset(RECORD_TYPES)


def register_kind(cls: type) -> None:
    """Let the store and the model hold records of a plug-in's kind: a frozen dataclass with KIND, id,
    tenant and revision (as every record). Re-registering the same class is a no-op."""
    kind = getattr(cls, "KIND", None)
    if not isinstance(kind, str) or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a record class (a dataclass with a KIND)")
    names = {f.name for f in dataclasses.fields(cls)}
    if not {"id", "tenant", "revision"} <= names:
        raise TypeError(f"record class {cls.__name__} needs the fields id, tenant and revision")
    old = RECORD_TYPES.get(kind)
    if old is not None and old is not cls and (kind in CORE_KINDS or old.__qualname__ != cls.__qualname__):
        raise ValueError(f"record kind {kind!r} is already {old.__qualname__}")
    RECORD_TYPES[kind] = cls


def unregister_kind(cls: type) -> None:
    """Undo register_kind (a plug-in uninstalled in this process); the core's kinds stay."""
    kind = getattr(cls, "KIND", None)
    if isinstance(kind, str) and kind not in CORE_KINDS and RECORD_TYPES.get(kind) is cls:
        del RECORD_TYPES[kind]


R = TypeVar("R", Network, Subnet, Port, Chassis)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_dict(record: Record) -> dict[str, Any]:
    """Shallow (records hold only scalars and tuples of them): much cheaper than dataclasses.asdict."""
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(f.name for f in dataclasses.fields(record))
    return {n: getattr(record, n) for n in names}


def from_dict(kind: str, data: dict[str, Any]) -> Record:
    """Inverse of to_dict; lists become tuples again, unknown keys (from a newer schema) are refused."""
    cls = RECORD_TYPES[kind]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)  # type: ignore[no-any-return]
