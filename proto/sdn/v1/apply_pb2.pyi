from google.protobuf import struct_pb2 as _struct_pb2
from proto.sdn.v1 import topology_pb2 as _topology_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyRequest(_message.Message):
    __slots__ = ("document", "validate_only", "prune")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    document: _struct_pb2.Struct
    validate_only: bool
    prune: bool
    def __init__(self, document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., validate_only: _Optional[bool] = ..., prune: _Optional[bool] = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("field", "before", "after")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    field: str
    before: str
    after: str
    def __init__(self, field: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class ObjectChange(_message.Message):
    __slots__ = ("action", "kind", "name", "path", "tenant", "fields")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ObjectChange.Action]
        CREATE: _ClassVar[ObjectChange.Action]
        UPDATE: _ClassVar[ObjectChange.Action]
        DELETE: _ClassVar[ObjectChange.Action]
        REPLACE: _ClassVar[ObjectChange.Action]
    ACTION_UNSPECIFIED: ObjectChange.Action
    CREATE: ObjectChange.Action
    UPDATE: ObjectChange.Action
    DELETE: ObjectChange.Action
    REPLACE: ObjectChange.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    action: ObjectChange.Action
    kind: str
    name: str
    path: str
    tenant: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldChange]
    def __init__(self, action: _Optional[_Union[ObjectChange.Action, str]] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., path: _Optional[str] = ..., tenant: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("revision", "changes", "plan", "objects", "applied")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    changes: _containers.RepeatedCompositeFieldContainer[ObjectChange]
    plan: _topology_pb2.Plan
    objects: int
    applied: bool
    def __init__(self, revision: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[ObjectChange, _Mapping]]] = ..., plan: _Optional[_Union[_topology_pb2.Plan, _Mapping]] = ..., objects: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("document", "revision")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    document: _struct_pb2.Struct
    revision: int
    def __init__(self, document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
