import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerifyRequest(_message.Message):
    __slots__ = ("chassis", "repair")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    repair: bool
    def __init__(self, chassis: _Optional[str] = ..., repair: _Optional[bool] = ...) -> None: ...

class ChassisDrift(_message.Message):
    __slots__ = ("chassis", "checked", "missing", "unexpected", "undecodable", "repaired", "note", "compile_missing", "compile_extra", "compile_owners")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    UNEXPECTED_FIELD_NUMBER: _ClassVar[int]
    UNDECODABLE_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_MISSING_FIELD_NUMBER: _ClassVar[int]
    COMPILE_EXTRA_FIELD_NUMBER: _ClassVar[int]
    COMPILE_OWNERS_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    checked: bool
    missing: _containers.RepeatedScalarFieldContainer[str]
    unexpected: _containers.RepeatedScalarFieldContainer[str]
    undecodable: _containers.RepeatedScalarFieldContainer[str]
    repaired: bool
    note: str
    compile_missing: _containers.RepeatedScalarFieldContainer[str]
    compile_extra: _containers.RepeatedScalarFieldContainer[str]
    compile_owners: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chassis: _Optional[str] = ..., checked: _Optional[bool] = ..., missing: _Optional[_Iterable[str]] = ..., unexpected: _Optional[_Iterable[str]] = ..., undecodable: _Optional[_Iterable[str]] = ..., repaired: _Optional[bool] = ..., note: _Optional[str] = ..., compile_missing: _Optional[_Iterable[str]] = ..., compile_extra: _Optional[_Iterable[str]] = ..., compile_owners: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("chassis",)
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    chassis: _containers.RepeatedCompositeFieldContainer[ChassisDrift]
    def __init__(self, chassis: _Optional[_Iterable[_Union[ChassisDrift, _Mapping]]] = ...) -> None: ...

class WaitRealizedRequest(_message.Message):
    __slots__ = ("revision", "timeout")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    revision: int
    timeout: _duration_pb2.Duration
    def __init__(self, revision: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ChassisRealization(_message.Message):
    __slots__ = ("chassis", "connected", "realized_revision", "needed_revision", "realized")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    REALIZED_REVISION_FIELD_NUMBER: _ClassVar[int]
    NEEDED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REALIZED_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    connected: bool
    realized_revision: int
    needed_revision: int
    realized: bool
    def __init__(self, chassis: _Optional[str] = ..., connected: _Optional[bool] = ..., realized_revision: _Optional[int] = ..., needed_revision: _Optional[int] = ..., realized: _Optional[bool] = ...) -> None: ...

class WaitRealizedResponse(_message.Message):
    __slots__ = ("realized", "revision", "chassis")
    REALIZED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    realized: bool
    revision: int
    chassis: _containers.RepeatedCompositeFieldContainer[ChassisRealization]
    def __init__(self, realized: _Optional[bool] = ..., revision: _Optional[int] = ..., chassis: _Optional[_Iterable[_Union[ChassisRealization, _Mapping]]] = ...) -> None: ...

class DumpFlowsRequest(_message.Message):
    __slots__ = ("chassis", "stage", "owner", "desired_only", "port", "page_size", "page_token")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESIRED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    stage: str
    owner: str
    desired_only: bool
    port: str
    page_size: int
    page_token: str
    def __init__(self, chassis: _Optional[str] = ..., stage: _Optional[str] = ..., owner: _Optional[str] = ..., desired_only: _Optional[bool] = ..., port: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class DumpFlowsResponse(_message.Message):
    __slots__ = ("flows", "groups", "next_page_token", "total")
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedScalarFieldContainer[str]
    groups: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    total: int
    def __init__(self, flows: _Optional[_Iterable[str]] = ..., groups: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class ListChassisStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChassisStatus(_message.Message):
    __slots__ = ("chassis", "connected", "ovsdb_ready", "realized_revision", "desired_flows", "flow_mods_sent", "bundles_sent", "packet_ins", "group_mods_sent", "resyncs", "installed_flows", "drift_repairs", "compile_divergences")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    OVSDB_READY_FIELD_NUMBER: _ClassVar[int]
    REALIZED_REVISION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FLOWS_FIELD_NUMBER: _ClassVar[int]
    FLOW_MODS_SENT_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_SENT_FIELD_NUMBER: _ClassVar[int]
    PACKET_INS_FIELD_NUMBER: _ClassVar[int]
    GROUP_MODS_SENT_FIELD_NUMBER: _ClassVar[int]
    RESYNCS_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FLOWS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_REPAIRS_FIELD_NUMBER: _ClassVar[int]
    COMPILE_DIVERGENCES_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    connected: bool
    ovsdb_ready: bool
    realized_revision: int
    desired_flows: int
    flow_mods_sent: int
    bundles_sent: int
    packet_ins: int
    group_mods_sent: int
    resyncs: int
    installed_flows: int
    drift_repairs: int
    compile_divergences: int
    def __init__(self, chassis: _Optional[str] = ..., connected: _Optional[bool] = ..., ovsdb_ready: _Optional[bool] = ..., realized_revision: _Optional[int] = ..., desired_flows: _Optional[int] = ..., flow_mods_sent: _Optional[int] = ..., bundles_sent: _Optional[int] = ..., packet_ins: _Optional[int] = ..., group_mods_sent: _Optional[int] = ..., resyncs: _Optional[int] = ..., installed_flows: _Optional[int] = ..., drift_repairs: _Optional[int] = ..., compile_divergences: _Optional[int] = ...) -> None: ...

class ListChassisStatusResponse(_message.Message):
    __slots__ = ("chassis",)
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    chassis: _containers.RepeatedCompositeFieldContainer[ChassisStatus]
    def __init__(self, chassis: _Optional[_Iterable[_Union[ChassisStatus, _Mapping]]] = ...) -> None: ...
