import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Network(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "segment_type", "segment_id", "physical_network", "mtu", "admin_state_up", "external", "revision", "create_time", "update_time", "tunnel_key", "etag", "description", "tags", "shared", "status")
    class SegmentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEGMENT_TYPE_UNSPECIFIED: _ClassVar[Network.SegmentType]
        VXLAN: _ClassVar[Network.SegmentType]
        GRE: _ClassVar[Network.SegmentType]
        GENEVE: _ClassVar[Network.SegmentType]
        VLAN: _ClassVar[Network.SegmentType]
        FLAT: _ClassVar[Network.SegmentType]
    SEGMENT_TYPE_UNSPECIFIED: Network.SegmentType
    VXLAN: Network.SegmentType
    GRE: Network.SegmentType
    GENEVE: Network.SegmentType
    VLAN: Network.SegmentType
    FLAT: Network.SegmentType
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Network.Status]
        ACTIVE: _ClassVar[Network.Status]
        DOWN: _ClassVar[Network.Status]
    STATUS_UNSPECIFIED: Network.Status
    ACTIVE: Network.Status
    DOWN: Network.Status
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_NETWORK_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_KEY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    segment_type: Network.SegmentType
    segment_id: int
    physical_network: str
    mtu: int
    admin_state_up: bool
    external: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    tunnel_key: int
    etag: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    shared: bool
    status: Network.Status
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., segment_type: _Optional[_Union[Network.SegmentType, str]] = ..., segment_id: _Optional[int] = ..., physical_network: _Optional[str] = ..., mtu: _Optional[int] = ..., admin_state_up: _Optional[bool] = ..., external: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tunnel_key: _Optional[int] = ..., etag: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., shared: _Optional[bool] = ..., status: _Optional[_Union[Network.Status, str]] = ...) -> None: ...

class AllocationPool(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class HostRoute(_message.Message):
    __slots__ = ("destination", "nexthop")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    NEXTHOP_FIELD_NUMBER: _ClassVar[int]
    destination: str
    nexthop: str
    def __init__(self, destination: _Optional[str] = ..., nexthop: _Optional[str] = ...) -> None: ...

class Subnet(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "network", "cidr", "ip_version", "gateway_ip", "allocation_pools", "enable_dhcp", "dns_servers", "host_routes", "revision", "create_time", "update_time", "etag", "ipv6_ra_mode", "ipv6_address_mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_IP_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_POOLS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_DHCP_FIELD_NUMBER: _ClassVar[int]
    DNS_SERVERS_FIELD_NUMBER: _ClassVar[int]
    HOST_ROUTES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    IPV6_RA_MODE_FIELD_NUMBER: _ClassVar[int]
    IPV6_ADDRESS_MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    network: str
    cidr: str
    ip_version: int
    gateway_ip: str
    allocation_pools: _containers.RepeatedCompositeFieldContainer[AllocationPool]
    enable_dhcp: bool
    dns_servers: _containers.RepeatedScalarFieldContainer[str]
    host_routes: _containers.RepeatedCompositeFieldContainer[HostRoute]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    ipv6_ra_mode: str
    ipv6_address_mode: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., network: _Optional[str] = ..., cidr: _Optional[str] = ..., ip_version: _Optional[int] = ..., gateway_ip: _Optional[str] = ..., allocation_pools: _Optional[_Iterable[_Union[AllocationPool, _Mapping]]] = ..., enable_dhcp: _Optional[bool] = ..., dns_servers: _Optional[_Iterable[str]] = ..., host_routes: _Optional[_Iterable[_Union[HostRoute, _Mapping]]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., ipv6_ra_mode: _Optional[str] = ..., ipv6_address_mode: _Optional[str] = ...) -> None: ...

class FixedIp(_message.Message):
    __slots__ = ("subnet", "ip_address")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    subnet: str
    ip_address: str
    def __init__(self, subnet: _Optional[str] = ..., ip_address: _Optional[str] = ...) -> None: ...

class AddressPair(_message.Message):
    __slots__ = ("ip_address", "mac_address")
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MAC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ip_address: str
    mac_address: str
    def __init__(self, ip_address: _Optional[str] = ..., mac_address: _Optional[str] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "network", "mac_address", "fixed_ips", "device_owner", "device_id", "admin_state_up", "port_security_enabled", "allowed_address_pairs", "security_groups", "binding_chassis", "status", "revision", "create_time", "update_time", "tunnel_key", "etag", "description", "tags")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Port.Status]
        DOWN: _ClassVar[Port.Status]
        ACTIVE: _ClassVar[Port.Status]
    STATUS_UNSPECIFIED: Port.Status
    DOWN: Port.Status
    ACTIVE: Port.Status
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    MAC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FIXED_IPS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_OWNER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    PORT_SECURITY_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ADDRESS_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUPS_FIELD_NUMBER: _ClassVar[int]
    BINDING_CHASSIS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_KEY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    network: str
    mac_address: str
    fixed_ips: _containers.RepeatedCompositeFieldContainer[FixedIp]
    device_owner: str
    device_id: str
    admin_state_up: bool
    port_security_enabled: bool
    allowed_address_pairs: _containers.RepeatedCompositeFieldContainer[AddressPair]
    security_groups: _containers.RepeatedScalarFieldContainer[str]
    binding_chassis: str
    status: Port.Status
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    tunnel_key: int
    etag: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., network: _Optional[str] = ..., mac_address: _Optional[str] = ..., fixed_ips: _Optional[_Iterable[_Union[FixedIp, _Mapping]]] = ..., device_owner: _Optional[str] = ..., device_id: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., port_security_enabled: _Optional[bool] = ..., allowed_address_pairs: _Optional[_Iterable[_Union[AddressPair, _Mapping]]] = ..., security_groups: _Optional[_Iterable[str]] = ..., binding_chassis: _Optional[str] = ..., status: _Optional[_Union[Port.Status, str]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tunnel_key: _Optional[int] = ..., etag: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RouterInterface(_message.Message):
    __slots__ = ("router", "port", "subnet", "network", "ip_address")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    router: str
    port: str
    subnet: str
    network: str
    ip_address: str
    def __init__(self, router: _Optional[str] = ..., port: _Optional[str] = ..., subnet: _Optional[str] = ..., network: _Optional[str] = ..., ip_address: _Optional[str] = ...) -> None: ...

class ExternalGateway(_message.Message):
    __slots__ = ("network", "fixed_ip", "enable_snat", "port", "fixed_ips")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    FIXED_IP_FIELD_NUMBER: _ClassVar[int]
    ENABLE_SNAT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    FIXED_IPS_FIELD_NUMBER: _ClassVar[int]
    network: str
    fixed_ip: FixedIp
    enable_snat: bool
    port: str
    fixed_ips: _containers.RepeatedCompositeFieldContainer[FixedIp]
    def __init__(self, network: _Optional[str] = ..., fixed_ip: _Optional[_Union[FixedIp, _Mapping]] = ..., enable_snat: _Optional[bool] = ..., port: _Optional[str] = ..., fixed_ips: _Optional[_Iterable[_Union[FixedIp, _Mapping]]] = ...) -> None: ...

class Router(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "admin_state_up", "external_gateway", "routes", "interfaces", "revision", "create_time", "update_time", "tunnel_key", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_KEY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    admin_state_up: bool
    external_gateway: ExternalGateway
    routes: _containers.RepeatedCompositeFieldContainer[HostRoute]
    interfaces: _containers.RepeatedCompositeFieldContainer[RouterInterface]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    tunnel_key: int
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., external_gateway: _Optional[_Union[ExternalGateway, _Mapping]] = ..., routes: _Optional[_Iterable[_Union[HostRoute, _Mapping]]] = ..., interfaces: _Optional[_Iterable[_Union[RouterInterface, _Mapping]]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tunnel_key: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class FloatingIp(_message.Message):
    __slots__ = ("name", "tenant", "floating_network", "floating_ip_address", "port", "fixed_ip_address", "router", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FLOATING_NETWORK_FIELD_NUMBER: _ClassVar[int]
    FLOATING_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    FIXED_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    floating_network: str
    floating_ip_address: str
    port: str
    fixed_ip_address: str
    router: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., floating_network: _Optional[str] = ..., floating_ip_address: _Optional[str] = ..., port: _Optional[str] = ..., fixed_ip_address: _Optional[str] = ..., router: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class SecurityGroup(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "rules", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    rules: _containers.RepeatedCompositeFieldContainer[SecurityGroupRule]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[SecurityGroupRule, _Mapping]]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class SecurityGroupRule(_message.Message):
    __slots__ = ("name", "tenant", "security_group", "direction", "ethertype", "protocol", "port_range_min", "port_range_max", "icmp_type", "icmp_code", "remote_ip_prefix", "remote_group", "description", "revision", "create_time", "update_time", "conjunction_id", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ETHERTYPE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_RANGE_MIN_FIELD_NUMBER: _ClassVar[int]
    PORT_RANGE_MAX_FIELD_NUMBER: _ClassVar[int]
    ICMP_TYPE_FIELD_NUMBER: _ClassVar[int]
    ICMP_CODE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REMOTE_GROUP_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONJUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    security_group: str
    direction: str
    ethertype: str
    protocol: str
    port_range_min: int
    port_range_max: int
    icmp_type: int
    icmp_code: int
    remote_ip_prefix: str
    remote_group: str
    description: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    conjunction_id: int
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., security_group: _Optional[str] = ..., direction: _Optional[str] = ..., ethertype: _Optional[str] = ..., protocol: _Optional[str] = ..., port_range_min: _Optional[int] = ..., port_range_max: _Optional[int] = ..., icmp_type: _Optional[int] = ..., icmp_code: _Optional[int] = ..., remote_ip_prefix: _Optional[str] = ..., remote_group: _Optional[str] = ..., description: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., conjunction_id: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class FirewallRule(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "action", "protocol", "ip_version", "source_ip_address", "destination_ip_address", "source_port_min", "source_port_max", "destination_port_min", "destination_port_max", "enabled", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_MIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_MAX_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_MIN_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_MAX_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    action: str
    protocol: str
    ip_version: int
    source_ip_address: str
    destination_ip_address: str
    source_port_min: int
    source_port_max: int
    destination_port_min: int
    destination_port_max: int
    enabled: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., action: _Optional[str] = ..., protocol: _Optional[str] = ..., ip_version: _Optional[int] = ..., source_ip_address: _Optional[str] = ..., destination_ip_address: _Optional[str] = ..., source_port_min: _Optional[int] = ..., source_port_max: _Optional[int] = ..., destination_port_min: _Optional[int] = ..., destination_port_max: _Optional[int] = ..., enabled: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class FirewallPolicy(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "firewall_rules", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_RULES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    firewall_rules: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., firewall_rules: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class FirewallGroup(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "ingress_firewall_policy", "egress_firewall_policy", "ports", "admin_state_up", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INGRESS_FIREWALL_POLICY_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIREWALL_POLICY_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    ingress_firewall_policy: str
    egress_firewall_policy: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    admin_state_up: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., ingress_firewall_policy: _Optional[str] = ..., egress_firewall_policy: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., admin_state_up: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Chassis(_message.Message):
    __slots__ = ("name", "datapath_id", "tunnel_ip", "ovsdb_address", "bridge_mappings", "revision", "create_time", "update_time", "etag")
    class BridgeMappingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_IP_FIELD_NUMBER: _ClassVar[int]
    OVSDB_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    datapath_id: int
    tunnel_ip: str
    ovsdb_address: str
    bridge_mappings: _containers.ScalarMap[str, str]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., datapath_id: _Optional[int] = ..., tunnel_ip: _Optional[str] = ..., ovsdb_address: _Optional[str] = ..., bridge_mappings: _Optional[_Mapping[str, str]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("network", "network_id", "validate_only")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    network: Network
    network_id: str
    validate_only: bool
    def __init__(self, network: _Optional[_Union[Network, _Mapping]] = ..., network_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetNetworkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListNetworksRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "tags")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks", "next_page_token")
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    next_page_token: str
    def __init__(self, networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateNetworkRequest(_message.Message):
    __slots__ = ("network", "update_mask", "validate_only")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    network: Network
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, network: _Optional[_Union[Network, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteNetworkRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateSubnetRequest(_message.Message):
    __slots__ = ("subnet", "subnet_id", "validate_only")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    subnet: Subnet
    subnet_id: str
    validate_only: bool
    def __init__(self, subnet: _Optional[_Union[Subnet, _Mapping]] = ..., subnet_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetSubnetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSubnetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "network")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    network: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., network: _Optional[str] = ...) -> None: ...

class ListSubnetsResponse(_message.Message):
    __slots__ = ("subnets", "next_page_token")
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    next_page_token: str
    def __init__(self, subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSubnetRequest(_message.Message):
    __slots__ = ("subnet", "update_mask", "validate_only")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    subnet: Subnet
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, subnet: _Optional[_Union[Subnet, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteSubnetRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreatePortRequest(_message.Message):
    __slots__ = ("port", "port_id", "validate_only")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PORT_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    port: Port
    port_id: str
    validate_only: bool
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ..., port_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetPortRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPortsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "network", "device_id", "binding_chassis", "tags")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BINDING_CHASSIS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    network: str
    device_id: str
    binding_chassis: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., network: _Optional[str] = ..., device_id: _Optional[str] = ..., binding_chassis: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPortsResponse(_message.Message):
    __slots__ = ("ports", "next_page_token")
    PORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    next_page_token: str
    def __init__(self, ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePortRequest(_message.Message):
    __slots__ = ("port", "update_mask", "validate_only")
    PORT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    port: Port
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeletePortRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateRouterRequest(_message.Message):
    __slots__ = ("router", "router_id", "validate_only")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    router: Router
    router_id: str
    validate_only: bool
    def __init__(self, router: _Optional[_Union[Router, _Mapping]] = ..., router_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetRouterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRoutersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListRoutersResponse(_message.Message):
    __slots__ = ("routers", "next_page_token")
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    routers: _containers.RepeatedCompositeFieldContainer[Router]
    next_page_token: str
    def __init__(self, routers: _Optional[_Iterable[_Union[Router, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateRouterRequest(_message.Message):
    __slots__ = ("router", "update_mask", "validate_only")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    router: Router
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, router: _Optional[_Union[Router, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteRouterRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class AddRouterInterfaceRequest(_message.Message):
    __slots__ = ("name", "subnet", "port", "validate_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    subnet: str
    port: str
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., subnet: _Optional[str] = ..., port: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class RemoveRouterInterfaceRequest(_message.Message):
    __slots__ = ("name", "subnet", "port", "validate_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    subnet: str
    port: str
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., subnet: _Optional[str] = ..., port: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class CreateFloatingIpRequest(_message.Message):
    __slots__ = ("floating_ip", "floating_ip_id", "validate_only")
    FLOATING_IP_FIELD_NUMBER: _ClassVar[int]
    FLOATING_IP_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    floating_ip: FloatingIp
    floating_ip_id: str
    validate_only: bool
    def __init__(self, floating_ip: _Optional[_Union[FloatingIp, _Mapping]] = ..., floating_ip_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetFloatingIpRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFloatingIpsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "floating_network", "port")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FLOATING_NETWORK_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    floating_network: str
    port: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., floating_network: _Optional[str] = ..., port: _Optional[str] = ...) -> None: ...

class ListFloatingIpsResponse(_message.Message):
    __slots__ = ("floating_ips", "next_page_token")
    FLOATING_IPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    floating_ips: _containers.RepeatedCompositeFieldContainer[FloatingIp]
    next_page_token: str
    def __init__(self, floating_ips: _Optional[_Iterable[_Union[FloatingIp, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFloatingIpRequest(_message.Message):
    __slots__ = ("floating_ip", "update_mask", "validate_only")
    FLOATING_IP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    floating_ip: FloatingIp
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, floating_ip: _Optional[_Union[FloatingIp, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteFloatingIpRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateSecurityGroupRequest(_message.Message):
    __slots__ = ("security_group", "security_group_id", "validate_only")
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    security_group: SecurityGroup
    security_group_id: str
    validate_only: bool
    def __init__(self, security_group: _Optional[_Union[SecurityGroup, _Mapping]] = ..., security_group_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetSecurityGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSecurityGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListSecurityGroupsResponse(_message.Message):
    __slots__ = ("security_groups", "next_page_token")
    SECURITY_GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    security_groups: _containers.RepeatedCompositeFieldContainer[SecurityGroup]
    next_page_token: str
    def __init__(self, security_groups: _Optional[_Iterable[_Union[SecurityGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSecurityGroupRequest(_message.Message):
    __slots__ = ("security_group", "update_mask", "validate_only")
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    security_group: SecurityGroup
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, security_group: _Optional[_Union[SecurityGroup, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteSecurityGroupRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateSecurityGroupRuleRequest(_message.Message):
    __slots__ = ("security_group_rule", "security_group_rule_id", "validate_only")
    SECURITY_GROUP_RULE_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_RULE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    security_group_rule: SecurityGroupRule
    security_group_rule_id: str
    validate_only: bool
    def __init__(self, security_group_rule: _Optional[_Union[SecurityGroupRule, _Mapping]] = ..., security_group_rule_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetSecurityGroupRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSecurityGroupRulesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "security_group")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    security_group: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., security_group: _Optional[str] = ...) -> None: ...

class ListSecurityGroupRulesResponse(_message.Message):
    __slots__ = ("security_group_rules", "next_page_token")
    SECURITY_GROUP_RULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    security_group_rules: _containers.RepeatedCompositeFieldContainer[SecurityGroupRule]
    next_page_token: str
    def __init__(self, security_group_rules: _Optional[_Iterable[_Union[SecurityGroupRule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSecurityGroupRuleRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateFirewallRuleRequest(_message.Message):
    __slots__ = ("firewall_rule", "firewall_rule_id", "validate_only")
    FIREWALL_RULE_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_RULE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_rule: FirewallRule
    firewall_rule_id: str
    validate_only: bool
    def __init__(self, firewall_rule: _Optional[_Union[FirewallRule, _Mapping]] = ..., firewall_rule_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetFirewallRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFirewallRulesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListFirewallRulesResponse(_message.Message):
    __slots__ = ("firewall_rules", "next_page_token")
    FIREWALL_RULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    firewall_rules: _containers.RepeatedCompositeFieldContainer[FirewallRule]
    next_page_token: str
    def __init__(self, firewall_rules: _Optional[_Iterable[_Union[FirewallRule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFirewallRuleRequest(_message.Message):
    __slots__ = ("firewall_rule", "update_mask", "validate_only")
    FIREWALL_RULE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_rule: FirewallRule
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, firewall_rule: _Optional[_Union[FirewallRule, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteFirewallRuleRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateFirewallPolicyRequest(_message.Message):
    __slots__ = ("firewall_policy", "firewall_policy_id", "validate_only")
    FIREWALL_POLICY_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_policy: FirewallPolicy
    firewall_policy_id: str
    validate_only: bool
    def __init__(self, firewall_policy: _Optional[_Union[FirewallPolicy, _Mapping]] = ..., firewall_policy_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetFirewallPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFirewallPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListFirewallPoliciesResponse(_message.Message):
    __slots__ = ("firewall_policies", "next_page_token")
    FIREWALL_POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    firewall_policies: _containers.RepeatedCompositeFieldContainer[FirewallPolicy]
    next_page_token: str
    def __init__(self, firewall_policies: _Optional[_Iterable[_Union[FirewallPolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFirewallPolicyRequest(_message.Message):
    __slots__ = ("firewall_policy", "update_mask", "validate_only")
    FIREWALL_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_policy: FirewallPolicy
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, firewall_policy: _Optional[_Union[FirewallPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteFirewallPolicyRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateFirewallGroupRequest(_message.Message):
    __slots__ = ("firewall_group", "firewall_group_id", "validate_only")
    FIREWALL_GROUP_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_group: FirewallGroup
    firewall_group_id: str
    validate_only: bool
    def __init__(self, firewall_group: _Optional[_Union[FirewallGroup, _Mapping]] = ..., firewall_group_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetFirewallGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFirewallGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListFirewallGroupsResponse(_message.Message):
    __slots__ = ("firewall_groups", "next_page_token")
    FIREWALL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    firewall_groups: _containers.RepeatedCompositeFieldContainer[FirewallGroup]
    next_page_token: str
    def __init__(self, firewall_groups: _Optional[_Iterable[_Union[FirewallGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFirewallGroupRequest(_message.Message):
    __slots__ = ("firewall_group", "update_mask", "validate_only")
    FIREWALL_GROUP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    firewall_group: FirewallGroup
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, firewall_group: _Optional[_Union[FirewallGroup, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteFirewallGroupRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateChassisRequest(_message.Message):
    __slots__ = ("chassis", "chassis_id", "validate_only")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    chassis: Chassis
    chassis_id: str
    validate_only: bool
    def __init__(self, chassis: _Optional[_Union[Chassis, _Mapping]] = ..., chassis_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetChassisRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListChassisRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListChassisResponse(_message.Message):
    __slots__ = ("chassis", "next_page_token")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    chassis: _containers.RepeatedCompositeFieldContainer[Chassis]
    next_page_token: str
    def __init__(self, chassis: _Optional[_Iterable[_Union[Chassis, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateChassisRequest(_message.Message):
    __slots__ = ("chassis", "update_mask", "validate_only")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    chassis: Chassis
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, chassis: _Optional[_Union[Chassis, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteChassisRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "revision", "network", "subnet", "port", "chassis", "router", "floating_ip", "security_group", "security_group_rule", "firewall_rule", "firewall_policy", "firewall_group", "load_balancer", "listener", "pool", "member", "health_monitor", "plugin_resource", "ike_policy", "ipsec_policy", "vpn_service", "vpn_endpoint_group", "ipsec_site_connection")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[WatchEvent.Type]
        EXISTING: _ClassVar[WatchEvent.Type]
        SYNCED: _ClassVar[WatchEvent.Type]
        CREATED: _ClassVar[WatchEvent.Type]
        UPDATED: _ClassVar[WatchEvent.Type]
        DELETED: _ClassVar[WatchEvent.Type]
    TYPE_UNSPECIFIED: WatchEvent.Type
    EXISTING: WatchEvent.Type
    SYNCED: WatchEvent.Type
    CREATED: WatchEvent.Type
    UPDATED: WatchEvent.Type
    DELETED: WatchEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    FLOATING_IP_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_RULE_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_RULE_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_POLICY_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_GROUP_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    HEALTH_MONITOR_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    IKE_POLICY_FIELD_NUMBER: _ClassVar[int]
    IPSEC_POLICY_FIELD_NUMBER: _ClassVar[int]
    VPN_SERVICE_FIELD_NUMBER: _ClassVar[int]
    VPN_ENDPOINT_GROUP_FIELD_NUMBER: _ClassVar[int]
    IPSEC_SITE_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    type: WatchEvent.Type
    revision: int
    network: Network
    subnet: Subnet
    port: Port
    chassis: Chassis
    router: Router
    floating_ip: FloatingIp
    security_group: SecurityGroup
    security_group_rule: SecurityGroupRule
    firewall_rule: FirewallRule
    firewall_policy: FirewallPolicy
    firewall_group: FirewallGroup
    load_balancer: LoadBalancer
    listener: Listener
    pool: Pool
    member: Member
    health_monitor: HealthMonitor
    plugin_resource: _any_pb2.Any
    ike_policy: IkePolicy
    ipsec_policy: IpsecPolicy
    vpn_service: VpnService
    vpn_endpoint_group: VpnEndpointGroup
    ipsec_site_connection: IpsecSiteConnection
    def __init__(self, type: _Optional[_Union[WatchEvent.Type, str]] = ..., revision: _Optional[int] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., subnet: _Optional[_Union[Subnet, _Mapping]] = ..., port: _Optional[_Union[Port, _Mapping]] = ..., chassis: _Optional[_Union[Chassis, _Mapping]] = ..., router: _Optional[_Union[Router, _Mapping]] = ..., floating_ip: _Optional[_Union[FloatingIp, _Mapping]] = ..., security_group: _Optional[_Union[SecurityGroup, _Mapping]] = ..., security_group_rule: _Optional[_Union[SecurityGroupRule, _Mapping]] = ..., firewall_rule: _Optional[_Union[FirewallRule, _Mapping]] = ..., firewall_policy: _Optional[_Union[FirewallPolicy, _Mapping]] = ..., firewall_group: _Optional[_Union[FirewallGroup, _Mapping]] = ..., load_balancer: _Optional[_Union[LoadBalancer, _Mapping]] = ..., listener: _Optional[_Union[Listener, _Mapping]] = ..., pool: _Optional[_Union[Pool, _Mapping]] = ..., member: _Optional[_Union[Member, _Mapping]] = ..., health_monitor: _Optional[_Union[HealthMonitor, _Mapping]] = ..., plugin_resource: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., ike_policy: _Optional[_Union[IkePolicy, _Mapping]] = ..., ipsec_policy: _Optional[_Union[IpsecPolicy, _Mapping]] = ..., vpn_service: _Optional[_Union[VpnService, _Mapping]] = ..., vpn_endpoint_group: _Optional[_Union[VpnEndpointGroup, _Mapping]] = ..., ipsec_site_connection: _Optional[_Union[IpsecSiteConnection, _Mapping]] = ...) -> None: ...

class ChassisPlan(_message.Message):
    __slots__ = ("chassis", "flows_added", "flows_deleted", "groups_added", "groups_deleted", "sample_added", "sample_deleted", "flows_before", "flows_after")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_ADDED_FIELD_NUMBER: _ClassVar[int]
    FLOWS_DELETED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_ADDED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_DELETED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ADDED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_DELETED_FIELD_NUMBER: _ClassVar[int]
    FLOWS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    FLOWS_AFTER_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    flows_added: int
    flows_deleted: int
    groups_added: int
    groups_deleted: int
    sample_added: _containers.RepeatedScalarFieldContainer[str]
    sample_deleted: _containers.RepeatedScalarFieldContainer[str]
    flows_before: int
    flows_after: int
    def __init__(self, chassis: _Optional[str] = ..., flows_added: _Optional[int] = ..., flows_deleted: _Optional[int] = ..., groups_added: _Optional[int] = ..., groups_deleted: _Optional[int] = ..., sample_added: _Optional[_Iterable[str]] = ..., sample_deleted: _Optional[_Iterable[str]] = ..., flows_before: _Optional[int] = ..., flows_after: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("revision", "chassis", "cuts_connections", "cut_reasons")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    CUTS_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    CUT_REASONS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    chassis: _containers.RepeatedCompositeFieldContainer[ChassisPlan]
    cuts_connections: bool
    cut_reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[int] = ..., chassis: _Optional[_Iterable[_Union[ChassisPlan, _Mapping]]] = ..., cuts_connections: _Optional[bool] = ..., cut_reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "revision", "tenant", "admin", "compacted_revision", "plugins", "orphan_records")
    class OrphanRecordsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_RECORDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    revision: int
    tenant: str
    admin: bool
    compacted_revision: int
    plugins: _containers.RepeatedCompositeFieldContainer[PluginInfo]
    orphan_records: _containers.ScalarMap[str, int]
    def __init__(self, version: _Optional[str] = ..., revision: _Optional[int] = ..., tenant: _Optional[str] = ..., admin: _Optional[bool] = ..., compacted_revision: _Optional[int] = ..., plugins: _Optional[_Iterable[_Union[PluginInfo, _Mapping]]] = ..., orphan_records: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "version", "interface_version", "app_id", "kinds", "services", "first_meter", "meter_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_VERSION_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    FIRST_METER_FIELD_NUMBER: _ClassVar[int]
    METER_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    interface_version: int
    app_id: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    services: _containers.RepeatedScalarFieldContainer[str]
    first_meter: int
    meter_count: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., interface_version: _Optional[int] = ..., app_id: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ..., services: _Optional[_Iterable[str]] = ..., first_meter: _Optional[int] = ..., meter_count: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("tenant", "admin")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    admin: bool
    def __init__(self, tenant: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("token", "tenant", "admin")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    token: str
    tenant: str
    admin: bool
    def __init__(self, token: _Optional[str] = ..., tenant: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class LoadBalancer(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "vip_subnet", "vip_address", "vip_port", "admin_state_up", "operating_status", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VIP_SUBNET_FIELD_NUMBER: _ClassVar[int]
    VIP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VIP_PORT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    OPERATING_STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    vip_subnet: str
    vip_address: str
    vip_port: str
    admin_state_up: bool
    operating_status: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., vip_subnet: _Optional[str] = ..., vip_address: _Optional[str] = ..., vip_port: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., operating_status: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Listener(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "load_balancer", "protocol", "protocol_port", "default_pool", "admin_state_up", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_PORT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POOL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    load_balancer: str
    protocol: str
    protocol_port: int
    default_pool: str
    admin_state_up: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., load_balancer: _Optional[str] = ..., protocol: _Optional[str] = ..., protocol_port: _Optional[int] = ..., default_pool: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "load_balancer", "listener", "protocol", "lb_algorithm", "admin_state_up", "operating_status", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    LB_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    OPERATING_STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    load_balancer: str
    listener: str
    protocol: str
    lb_algorithm: str
    admin_state_up: bool
    operating_status: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., load_balancer: _Optional[str] = ..., listener: _Optional[str] = ..., protocol: _Optional[str] = ..., lb_algorithm: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., operating_status: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "address", "protocol_port", "subnet", "weight", "admin_state_up", "operating_status", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_PORT_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    OPERATING_STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    address: str
    protocol_port: int
    subnet: str
    weight: int
    admin_state_up: bool
    operating_status: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., address: _Optional[str] = ..., protocol_port: _Optional[int] = ..., subnet: _Optional[str] = ..., weight: _Optional[int] = ..., admin_state_up: _Optional[bool] = ..., operating_status: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class HealthMonitor(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "pool", "type", "delay", "timeout", "max_retries", "http_method", "url_path", "expected_codes", "admin_state_up", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_PATH_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CODES_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    pool: str
    type: str
    delay: float
    timeout: float
    max_retries: int
    http_method: str
    url_path: str
    expected_codes: str
    admin_state_up: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., pool: _Optional[str] = ..., type: _Optional[str] = ..., delay: _Optional[float] = ..., timeout: _Optional[float] = ..., max_retries: _Optional[int] = ..., http_method: _Optional[str] = ..., url_path: _Optional[str] = ..., expected_codes: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateLoadBalancerRequest(_message.Message):
    __slots__ = ("load_balancer", "load_balancer_id", "validate_only")
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    load_balancer: LoadBalancer
    load_balancer_id: str
    validate_only: bool
    def __init__(self, load_balancer: _Optional[_Union[LoadBalancer, _Mapping]] = ..., load_balancer_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetLoadBalancerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListLoadBalancersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListLoadBalancersResponse(_message.Message):
    __slots__ = ("load_balancers", "next_page_token")
    LOAD_BALANCERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    load_balancers: _containers.RepeatedCompositeFieldContainer[LoadBalancer]
    next_page_token: str
    def __init__(self, load_balancers: _Optional[_Iterable[_Union[LoadBalancer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateLoadBalancerRequest(_message.Message):
    __slots__ = ("load_balancer", "update_mask", "validate_only")
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    load_balancer: LoadBalancer
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, load_balancer: _Optional[_Union[LoadBalancer, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteLoadBalancerRequest(_message.Message):
    __slots__ = ("name", "force", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateListenerRequest(_message.Message):
    __slots__ = ("listener", "listener_id", "validate_only")
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    LISTENER_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    listener: Listener
    listener_id: str
    validate_only: bool
    def __init__(self, listener: _Optional[_Union[Listener, _Mapping]] = ..., listener_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetListenerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListListenersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "load_balancer")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    load_balancer: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., load_balancer: _Optional[str] = ...) -> None: ...

class ListListenersResponse(_message.Message):
    __slots__ = ("listeners", "next_page_token")
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    listeners: _containers.RepeatedCompositeFieldContainer[Listener]
    next_page_token: str
    def __init__(self, listeners: _Optional[_Iterable[_Union[Listener, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateListenerRequest(_message.Message):
    __slots__ = ("listener", "update_mask", "validate_only")
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    listener: Listener
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, listener: _Optional[_Union[Listener, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteListenerRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("pool", "pool_id", "validate_only")
    POOL_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    pool_id: str
    validate_only: bool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., pool_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "load_balancer")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    load_balancer: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., load_balancer: _Optional[str] = ...) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools", "next_page_token")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    next_page_token: str
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePoolRequest(_message.Message):
    __slots__ = ("pool", "update_mask", "validate_only")
    POOL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateMemberRequest(_message.Message):
    __slots__ = ("parent", "member", "member_id", "validate_only")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    member: Member
    member_id: str
    validate_only: bool
    def __init__(self, parent: _Optional[str] = ..., member: _Optional[_Union[Member, _Mapping]] = ..., member_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetMemberRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "tenant")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members", "next_page_token")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    next_page_token: str
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateMemberRequest(_message.Message):
    __slots__ = ("member", "update_mask", "validate_only")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    member: Member
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, member: _Optional[_Union[Member, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteMemberRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateHealthMonitorRequest(_message.Message):
    __slots__ = ("health_monitor", "health_monitor_id", "validate_only")
    HEALTH_MONITOR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    health_monitor: HealthMonitor
    health_monitor_id: str
    validate_only: bool
    def __init__(self, health_monitor: _Optional[_Union[HealthMonitor, _Mapping]] = ..., health_monitor_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetHealthMonitorRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListHealthMonitorsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "pool")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    pool: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., pool: _Optional[str] = ...) -> None: ...

class ListHealthMonitorsResponse(_message.Message):
    __slots__ = ("health_monitors", "next_page_token")
    HEALTH_MONITORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    health_monitors: _containers.RepeatedCompositeFieldContainer[HealthMonitor]
    next_page_token: str
    def __init__(self, health_monitors: _Optional[_Iterable[_Union[HealthMonitor, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateHealthMonitorRequest(_message.Message):
    __slots__ = ("health_monitor", "update_mask", "validate_only")
    HEALTH_MONITOR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    health_monitor: HealthMonitor
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, health_monitor: _Optional[_Union[HealthMonitor, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteHealthMonitorRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class IkePolicy(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "ike_version", "encryption_algorithm", "auth_algorithm", "pfs", "phase1_negotiation_mode", "lifetime", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IKE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    AUTH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PFS_FIELD_NUMBER: _ClassVar[int]
    PHASE1_NEGOTIATION_MODE_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    ike_version: str
    encryption_algorithm: str
    auth_algorithm: str
    pfs: str
    phase1_negotiation_mode: str
    lifetime: int
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., ike_version: _Optional[str] = ..., encryption_algorithm: _Optional[str] = ..., auth_algorithm: _Optional[str] = ..., pfs: _Optional[str] = ..., phase1_negotiation_mode: _Optional[str] = ..., lifetime: _Optional[int] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class IpsecPolicy(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "transform_protocol", "encapsulation_mode", "encryption_algorithm", "auth_algorithm", "pfs", "lifetime", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ENCAPSULATION_MODE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    AUTH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PFS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    transform_protocol: str
    encapsulation_mode: str
    encryption_algorithm: str
    auth_algorithm: str
    pfs: str
    lifetime: int
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., transform_protocol: _Optional[str] = ..., encapsulation_mode: _Optional[str] = ..., encryption_algorithm: _Optional[str] = ..., auth_algorithm: _Optional[str] = ..., pfs: _Optional[str] = ..., lifetime: _Optional[int] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class VpnService(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "router", "admin_state_up", "status", "external_v4_ip", "external_v6_ip", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_V4_IP_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_V6_IP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    router: str
    admin_state_up: bool
    status: str
    external_v4_ip: str
    external_v6_ip: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., router: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., status: _Optional[str] = ..., external_v4_ip: _Optional[str] = ..., external_v6_ip: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class VpnEndpointGroup(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "type", "endpoints", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    type: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[str] = ..., endpoints: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class IpsecSiteConnection(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "vpnservice", "ikepolicy", "ipsecpolicy", "local_ep_group", "peer_ep_group", "peer_address", "peer_id", "local_id", "psk", "psk_set", "mtu", "dpd_action", "dpd_interval", "dpd_timeout", "initiator", "admin_state_up", "status", "status_reason", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VPNSERVICE_FIELD_NUMBER: _ClassVar[int]
    IKEPOLICY_FIELD_NUMBER: _ClassVar[int]
    IPSECPOLICY_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EP_GROUP_FIELD_NUMBER: _ClassVar[int]
    PEER_EP_GROUP_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    PSK_FIELD_NUMBER: _ClassVar[int]
    PSK_SET_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    DPD_ACTION_FIELD_NUMBER: _ClassVar[int]
    DPD_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DPD_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_UP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    vpnservice: str
    ikepolicy: str
    ipsecpolicy: str
    local_ep_group: str
    peer_ep_group: str
    peer_address: str
    peer_id: str
    local_id: str
    psk: str
    psk_set: bool
    mtu: int
    dpd_action: str
    dpd_interval: int
    dpd_timeout: int
    initiator: str
    admin_state_up: bool
    status: str
    status_reason: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., vpnservice: _Optional[str] = ..., ikepolicy: _Optional[str] = ..., ipsecpolicy: _Optional[str] = ..., local_ep_group: _Optional[str] = ..., peer_ep_group: _Optional[str] = ..., peer_address: _Optional[str] = ..., peer_id: _Optional[str] = ..., local_id: _Optional[str] = ..., psk: _Optional[str] = ..., psk_set: _Optional[bool] = ..., mtu: _Optional[int] = ..., dpd_action: _Optional[str] = ..., dpd_interval: _Optional[int] = ..., dpd_timeout: _Optional[int] = ..., initiator: _Optional[str] = ..., admin_state_up: _Optional[bool] = ..., status: _Optional[str] = ..., status_reason: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateIkePolicyRequest(_message.Message):
    __slots__ = ("ike_policy", "ike_policy_id", "validate_only")
    IKE_POLICY_FIELD_NUMBER: _ClassVar[int]
    IKE_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ike_policy: IkePolicy
    ike_policy_id: str
    validate_only: bool
    def __init__(self, ike_policy: _Optional[_Union[IkePolicy, _Mapping]] = ..., ike_policy_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetIkePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListIkePoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListIkePoliciesResponse(_message.Message):
    __slots__ = ("ike_policies", "next_page_token")
    IKE_POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ike_policies: _containers.RepeatedCompositeFieldContainer[IkePolicy]
    next_page_token: str
    def __init__(self, ike_policies: _Optional[_Iterable[_Union[IkePolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateIkePolicyRequest(_message.Message):
    __slots__ = ("ike_policy", "update_mask", "validate_only")
    IKE_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ike_policy: IkePolicy
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, ike_policy: _Optional[_Union[IkePolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteIkePolicyRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateIpsecPolicyRequest(_message.Message):
    __slots__ = ("ipsec_policy", "ipsec_policy_id", "validate_only")
    IPSEC_POLICY_FIELD_NUMBER: _ClassVar[int]
    IPSEC_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ipsec_policy: IpsecPolicy
    ipsec_policy_id: str
    validate_only: bool
    def __init__(self, ipsec_policy: _Optional[_Union[IpsecPolicy, _Mapping]] = ..., ipsec_policy_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetIpsecPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListIpsecPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListIpsecPoliciesResponse(_message.Message):
    __slots__ = ("ipsec_policies", "next_page_token")
    IPSEC_POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ipsec_policies: _containers.RepeatedCompositeFieldContainer[IpsecPolicy]
    next_page_token: str
    def __init__(self, ipsec_policies: _Optional[_Iterable[_Union[IpsecPolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateIpsecPolicyRequest(_message.Message):
    __slots__ = ("ipsec_policy", "update_mask", "validate_only")
    IPSEC_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ipsec_policy: IpsecPolicy
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, ipsec_policy: _Optional[_Union[IpsecPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteIpsecPolicyRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateVpnServiceRequest(_message.Message):
    __slots__ = ("vpn_service", "vpn_service_id", "validate_only")
    VPN_SERVICE_FIELD_NUMBER: _ClassVar[int]
    VPN_SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    vpn_service: VpnService
    vpn_service_id: str
    validate_only: bool
    def __init__(self, vpn_service: _Optional[_Union[VpnService, _Mapping]] = ..., vpn_service_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetVpnServiceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVpnServicesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "router")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    router: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., router: _Optional[str] = ...) -> None: ...

class ListVpnServicesResponse(_message.Message):
    __slots__ = ("vpn_services", "next_page_token")
    VPN_SERVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vpn_services: _containers.RepeatedCompositeFieldContainer[VpnService]
    next_page_token: str
    def __init__(self, vpn_services: _Optional[_Iterable[_Union[VpnService, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateVpnServiceRequest(_message.Message):
    __slots__ = ("vpn_service", "update_mask", "validate_only")
    VPN_SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    vpn_service: VpnService
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, vpn_service: _Optional[_Union[VpnService, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteVpnServiceRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateVpnEndpointGroupRequest(_message.Message):
    __slots__ = ("vpn_endpoint_group", "vpn_endpoint_group_id", "validate_only")
    VPN_ENDPOINT_GROUP_FIELD_NUMBER: _ClassVar[int]
    VPN_ENDPOINT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    vpn_endpoint_group: VpnEndpointGroup
    vpn_endpoint_group_id: str
    validate_only: bool
    def __init__(self, vpn_endpoint_group: _Optional[_Union[VpnEndpointGroup, _Mapping]] = ..., vpn_endpoint_group_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetVpnEndpointGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVpnEndpointGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListVpnEndpointGroupsResponse(_message.Message):
    __slots__ = ("vpn_endpoint_groups", "next_page_token")
    VPN_ENDPOINT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vpn_endpoint_groups: _containers.RepeatedCompositeFieldContainer[VpnEndpointGroup]
    next_page_token: str
    def __init__(self, vpn_endpoint_groups: _Optional[_Iterable[_Union[VpnEndpointGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateVpnEndpointGroupRequest(_message.Message):
    __slots__ = ("vpn_endpoint_group", "update_mask", "validate_only")
    VPN_ENDPOINT_GROUP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    vpn_endpoint_group: VpnEndpointGroup
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, vpn_endpoint_group: _Optional[_Union[VpnEndpointGroup, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteVpnEndpointGroupRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateIpsecSiteConnectionRequest(_message.Message):
    __slots__ = ("ipsec_site_connection", "ipsec_site_connection_id", "validate_only")
    IPSEC_SITE_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    IPSEC_SITE_CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ipsec_site_connection: IpsecSiteConnection
    ipsec_site_connection_id: str
    validate_only: bool
    def __init__(self, ipsec_site_connection: _Optional[_Union[IpsecSiteConnection, _Mapping]] = ..., ipsec_site_connection_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetIpsecSiteConnectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListIpsecSiteConnectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "vpnservice")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VPNSERVICE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    vpnservice: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., vpnservice: _Optional[str] = ...) -> None: ...

class ListIpsecSiteConnectionsResponse(_message.Message):
    __slots__ = ("ipsec_site_connections", "next_page_token")
    IPSEC_SITE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ipsec_site_connections: _containers.RepeatedCompositeFieldContainer[IpsecSiteConnection]
    next_page_token: str
    def __init__(self, ipsec_site_connections: _Optional[_Iterable[_Union[IpsecSiteConnection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateIpsecSiteConnectionRequest(_message.Message):
    __slots__ = ("ipsec_site_connection", "update_mask", "validate_only")
    IPSEC_SITE_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ipsec_site_connection: IpsecSiteConnection
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, ipsec_site_connection: _Optional[_Union[IpsecSiteConnection, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteIpsecSiteConnectionRequest(_message.Message):
    __slots__ = ("name", "validate_only", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...
