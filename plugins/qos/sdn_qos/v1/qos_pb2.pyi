import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QosPolicy(_message.Message):
    __slots__ = ("name", "tenant", "display_name", "description", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    display_name: str
    description: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class QosRule(_message.Message):
    __slots__ = ("name", "tenant", "qos_policy", "type", "direction", "max_kbps", "max_burst_kbps", "dscp_mark", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_KBPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BURST_KBPS_FIELD_NUMBER: _ClassVar[int]
    DSCP_MARK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    qos_policy: str
    type: str
    direction: str
    max_kbps: int
    max_burst_kbps: int
    dscp_mark: int
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., qos_policy: _Optional[str] = ..., type: _Optional[str] = ..., direction: _Optional[str] = ..., max_kbps: _Optional[int] = ..., max_burst_kbps: _Optional[int] = ..., dscp_mark: _Optional[int] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class QosBinding(_message.Message):
    __slots__ = ("name", "tenant", "qos_policy", "port", "network", "revision", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    qos_policy: str
    port: str
    network: str
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., qos_policy: _Optional[str] = ..., port: _Optional[str] = ..., network: _Optional[str] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateQosPolicyRequest(_message.Message):
    __slots__ = ("qos_policy", "qos_policy_id", "validate_only")
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    QOS_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_policy: QosPolicy
    qos_policy_id: str
    validate_only: bool
    def __init__(self, qos_policy: _Optional[_Union[QosPolicy, _Mapping]] = ..., qos_policy_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetQosPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListQosPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListQosPoliciesResponse(_message.Message):
    __slots__ = ("qos_policies", "next_page_token")
    QOS_POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    qos_policies: _containers.RepeatedCompositeFieldContainer[QosPolicy]
    next_page_token: str
    def __init__(self, qos_policies: _Optional[_Iterable[_Union[QosPolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateQosPolicyRequest(_message.Message):
    __slots__ = ("qos_policy", "update_mask", "validate_only")
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_policy: QosPolicy
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, qos_policy: _Optional[_Union[QosPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteQosPolicyRequest(_message.Message):
    __slots__ = ("name", "validate_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class CreateQosRuleRequest(_message.Message):
    __slots__ = ("qos_rule", "qos_rule_id", "validate_only")
    QOS_RULE_FIELD_NUMBER: _ClassVar[int]
    QOS_RULE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_rule: QosRule
    qos_rule_id: str
    validate_only: bool
    def __init__(self, qos_rule: _Optional[_Union[QosRule, _Mapping]] = ..., qos_rule_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetQosRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListQosRulesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "qos_policy")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    qos_policy: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., qos_policy: _Optional[str] = ...) -> None: ...

class ListQosRulesResponse(_message.Message):
    __slots__ = ("qos_rules", "next_page_token")
    QOS_RULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    qos_rules: _containers.RepeatedCompositeFieldContainer[QosRule]
    next_page_token: str
    def __init__(self, qos_rules: _Optional[_Iterable[_Union[QosRule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateQosRuleRequest(_message.Message):
    __slots__ = ("qos_rule", "update_mask", "validate_only")
    QOS_RULE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_rule: QosRule
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, qos_rule: _Optional[_Union[QosRule, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteQosRuleRequest(_message.Message):
    __slots__ = ("name", "validate_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class CreateQosBindingRequest(_message.Message):
    __slots__ = ("qos_binding", "qos_binding_id", "validate_only")
    QOS_BINDING_FIELD_NUMBER: _ClassVar[int]
    QOS_BINDING_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_binding: QosBinding
    qos_binding_id: str
    validate_only: bool
    def __init__(self, qos_binding: _Optional[_Union[QosBinding, _Mapping]] = ..., qos_binding_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class GetQosBindingRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListQosBindingsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant", "qos_policy")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QOS_POLICY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    qos_policy: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ..., qos_policy: _Optional[str] = ...) -> None: ...

class ListQosBindingsResponse(_message.Message):
    __slots__ = ("qos_bindings", "next_page_token")
    QOS_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    qos_bindings: _containers.RepeatedCompositeFieldContainer[QosBinding]
    next_page_token: str
    def __init__(self, qos_bindings: _Optional[_Iterable[_Union[QosBinding, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateQosBindingRequest(_message.Message):
    __slots__ = ("qos_binding", "update_mask", "validate_only")
    QOS_BINDING_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    qos_binding: QosBinding
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    def __init__(self, qos_binding: _Optional[_Union[QosBinding, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class DeleteQosBindingRequest(_message.Message):
    __slots__ = ("name", "validate_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    validate_only: bool
    def __init__(self, name: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...
