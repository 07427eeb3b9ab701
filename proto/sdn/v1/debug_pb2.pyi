from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TraceRequest(_message.Message):
    __slots__ = ("port", "chassis", "in_port", "headers", "destination_port", "source")
    class FlowSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FLOW_SOURCE_UNSPECIFIED: _ClassVar[TraceRequest.FlowSource]
        DESIRED: _ClassVar[TraceRequest.FlowSource]
        INSTALLED: _ClassVar[TraceRequest.FlowSource]
    FLOW_SOURCE_UNSPECIFIED: TraceRequest.FlowSource
    DESIRED: TraceRequest.FlowSource
    INSTALLED: TraceRequest.FlowSource
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PORT_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    IN_PORT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    port: str
    chassis: str
    in_port: int
    headers: _containers.ScalarMap[str, str]
    destination_port: str
    source: TraceRequest.FlowSource
    def __init__(self, port: _Optional[str] = ..., chassis: _Optional[str] = ..., in_port: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., destination_port: _Optional[str] = ..., source: _Optional[_Union[TraceRequest.FlowSource, str]] = ...) -> None: ...

class TraceStep(_message.Message):
    __slots__ = ("stage", "table", "flow", "owner", "note", "depth")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    stage: str
    table: int
    flow: str
    owner: str
    note: str
    depth: int
    def __init__(self, stage: _Optional[str] = ..., table: _Optional[int] = ..., flow: _Optional[str] = ..., owner: _Optional[str] = ..., note: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class TraceOutput(_message.Message):
    __slots__ = ("kind", "chassis", "port", "ofport", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    OFPORT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    chassis: str
    port: str
    ofport: int
    headers: _containers.ScalarMap[str, str]
    def __init__(self, kind: _Optional[str] = ..., chassis: _Optional[str] = ..., port: _Optional[str] = ..., ofport: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TraceHop(_message.Message):
    __slots__ = ("chassis", "in_port", "from_chassis", "steps", "outputs", "drops", "error")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    IN_PORT_FIELD_NUMBER: _ClassVar[int]
    FROM_CHASSIS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    in_port: int
    from_chassis: str
    steps: _containers.RepeatedCompositeFieldContainer[TraceStep]
    outputs: _containers.RepeatedCompositeFieldContainer[TraceOutput]
    drops: _containers.RepeatedScalarFieldContainer[str]
    error: str
    def __init__(self, chassis: _Optional[str] = ..., in_port: _Optional[int] = ..., from_chassis: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[TraceStep, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TraceOutput, _Mapping]]] = ..., drops: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ...) -> None: ...

class TraceResponse(_message.Message):
    __slots__ = ("verdict", "hops", "source_port", "source_chassis", "source_in_port", "headers", "flows", "text", "resolved")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHASSIS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IN_PORT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    hops: _containers.RepeatedCompositeFieldContainer[TraceHop]
    source_port: str
    source_chassis: str
    source_in_port: int
    headers: _containers.ScalarMap[str, str]
    flows: str
    text: str
    resolved: str
    def __init__(self, verdict: _Optional[str] = ..., hops: _Optional[_Iterable[_Union[TraceHop, _Mapping]]] = ..., source_port: _Optional[str] = ..., source_chassis: _Optional[str] = ..., source_in_port: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., flows: _Optional[str] = ..., text: _Optional[str] = ..., resolved: _Optional[str] = ...) -> None: ...

class Divergence(_message.Message):
    __slots__ = ("chassis", "stage", "table", "desired_flow", "installed_flow", "description")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FLOW_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FLOW_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    stage: str
    table: int
    desired_flow: str
    installed_flow: str
    description: str
    def __init__(self, chassis: _Optional[str] = ..., stage: _Optional[str] = ..., table: _Optional[int] = ..., desired_flow: _Optional[str] = ..., installed_flow: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class SwitchTrace(_message.Message):
    __slots__ = ("chassis", "flow", "output", "error")
    CHASSIS_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chassis: str
    flow: str
    output: str
    error: str
    def __init__(self, chassis: _Optional[str] = ..., flow: _Optional[str] = ..., output: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class DiffTraceResponse(_message.Message):
    __slots__ = ("desired", "installed", "divergences", "switch_traces", "text")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    DIVERGENCES_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TRACES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    desired: TraceResponse
    installed: TraceResponse
    divergences: _containers.RepeatedCompositeFieldContainer[Divergence]
    switch_traces: _containers.RepeatedCompositeFieldContainer[SwitchTrace]
    text: str
    def __init__(self, desired: _Optional[_Union[TraceResponse, _Mapping]] = ..., installed: _Optional[_Union[TraceResponse, _Mapping]] = ..., divergences: _Optional[_Iterable[_Union[Divergence, _Mapping]]] = ..., switch_traces: _Optional[_Iterable[_Union[SwitchTrace, _Mapping]]] = ..., text: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("source_port", "destination", "protocol", "port")
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    source_port: str
    destination: str
    protocol: str
    port: int
    def __init__(self, source_port: _Optional[str] = ..., destination: _Optional[str] = ..., protocol: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class Decider(_message.Message):
    __slots__ = ("kind", "allows", "description", "resource")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALLOWS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    allows: bool
    description: str
    resource: str
    def __init__(self, kind: _Optional[str] = ..., allows: _Optional[bool] = ..., description: _Optional[str] = ..., resource: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("allowed", "verdict", "deciders", "destination", "trace_confirms", "trace_verdict", "trace", "notes", "text")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DECIDERS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONFIRMS_FIELD_NUMBER: _ClassVar[int]
    TRACE_VERDICT_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    verdict: str
    deciders: _containers.RepeatedCompositeFieldContainer[Decider]
    destination: str
    trace_confirms: bool
    trace_verdict: str
    trace: TraceResponse
    notes: _containers.RepeatedScalarFieldContainer[str]
    text: str
    def __init__(self, allowed: _Optional[bool] = ..., verdict: _Optional[str] = ..., deciders: _Optional[_Iterable[_Union[Decider, _Mapping]]] = ..., destination: _Optional[str] = ..., trace_confirms: _Optional[bool] = ..., trace_verdict: _Optional[str] = ..., trace: _Optional[_Union[TraceResponse, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ...) -> None: ...
