from edgelat.proto import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceHello(_message.Message):
    __slots__ = ("name", "facts_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FACTS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    facts_json: str
    def __init__(self, name: _Optional[str] = ..., facts_json: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "devices", "agent_version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    devices: _containers.RepeatedCompositeFieldContainer[DeviceHello]
    agent_version: str
    def __init__(self, agent_id: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[DeviceHello, _Mapping]]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentReply(_message.Message):
    __slots__ = ("request_id", "last", "error", "describe", "has_model", "put_model", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    HAS_MODEL_FIELD_NUMBER: _ClassVar[int]
    PUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    last: bool
    error: str
    describe: _agent_pb2.DescribeResponse
    has_model: _agent_pb2.HasModelResponse
    put_model: _agent_pb2.PutModelResponse
    result: _agent_pb2.BenchmarkResult
    def __init__(self, request_id: _Optional[int] = ..., last: _Optional[bool] = ..., error: _Optional[str] = ..., describe: _Optional[_Union[_agent_pb2.DescribeResponse, _Mapping]] = ..., has_model: _Optional[_Union[_agent_pb2.HasModelResponse, _Mapping]] = ..., put_model: _Optional[_Union[_agent_pb2.PutModelResponse, _Mapping]] = ..., result: _Optional[_Union[_agent_pb2.BenchmarkResult, _Mapping]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "reply")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    reply: AgentReply
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., reply: _Optional[_Union[AgentReply, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("hub_id", "heartbeat_s")
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    hub_id: str
    heartbeat_s: float
    def __init__(self, hub_id: _Optional[str] = ..., heartbeat_s: _Optional[float] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("request_id", "device", "last", "welcome", "describe", "has_model", "put_chunk", "benchmark_batch", "cancel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    HAS_MODEL_FIELD_NUMBER: _ClassVar[int]
    PUT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_BATCH_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    device: str
    last: bool
    welcome: Welcome
    describe: _agent_pb2.DescribeRequest
    has_model: _agent_pb2.HasModelRequest
    put_chunk: _agent_pb2.ModelChunk
    benchmark_batch: _agent_pb2.BenchmarkBatchRequest
    cancel: Cancel
    def __init__(self, request_id: _Optional[int] = ..., device: _Optional[str] = ..., last: _Optional[bool] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., describe: _Optional[_Union[_agent_pb2.DescribeRequest, _Mapping]] = ..., has_model: _Optional[_Union[_agent_pb2.HasModelRequest, _Mapping]] = ..., put_chunk: _Optional[_Union[_agent_pb2.ModelChunk, _Mapping]] = ..., benchmark_batch: _Optional[_Union[_agent_pb2.BenchmarkBatchRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("kind", "device", "config_json", "params_json", "priority")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    device: str
    config_json: str
    params_json: str
    priority: int
    def __init__(self, kind: _Optional[str] = ..., device: _Optional[str] = ..., config_json: _Optional[str] = ..., params_json: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("job_id", "after")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after: float
    def __init__(self, job_id: _Optional[str] = ..., after: _Optional[float] = ...) -> None: ...

class JobReply(_message.Message):
    __slots__ = ("job_json", "note")
    JOB_JSON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    job_json: str
    note: str
    def __init__(self, job_json: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("user", "state", "device", "limit")
    USER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user: str
    state: str
    device: str
    limit: int
    def __init__(self, user: _Optional[str] = ..., state: _Optional[str] = ..., device: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs_json",)
    JOBS_JSON_FIELD_NUMBER: _ClassVar[int]
    jobs_json: str
    def __init__(self, jobs_json: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceList(_message.Message):
    __slots__ = ("devices_json",)
    DEVICES_JSON_FIELD_NUMBER: _ClassVar[int]
    devices_json: str
    def __init__(self, devices_json: _Optional[str] = ...) -> None: ...

class ReadTablesRequest(_message.Message):
    __slots__ = ("device", "marker")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    device: str
    marker: str
    def __init__(self, device: _Optional[str] = ..., marker: _Optional[str] = ...) -> None: ...

class TablesChunk(_message.Message):
    __slots__ = ("marker", "unchanged", "size", "sha256", "data")
    MARKER_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    marker: str
    unchanged: bool
    size: int
    sha256: str
    data: bytes
    def __init__(self, marker: _Optional[str] = ..., unchanged: _Optional[bool] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("user", "role", "devices", "expires_s")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_S_FIELD_NUMBER: _ClassVar[int]
    user: str
    role: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    expires_s: float
    def __init__(self, user: _Optional[str] = ..., role: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., expires_s: _Optional[float] = ...) -> None: ...

class CreateTokenReply(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: str
    def __init__(self, secret: _Optional[str] = ...) -> None: ...
