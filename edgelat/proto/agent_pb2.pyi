from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("name", "kind", "arch", "agent_version", "facts_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FACTS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    arch: str
    agent_version: str
    facts_json: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., arch: _Optional[str] = ..., agent_version: _Optional[str] = ..., facts_json: _Optional[str] = ...) -> None: ...

class HasModelRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class HasModelResponse(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    def __init__(self, present: _Optional[bool] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("sha256", "total_bytes", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_bytes: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PutModelResponse(_message.Message):
    __slots__ = ("sha256", "bytes_received")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    bytes_received: int
    def __init__(self, sha256: _Optional[str] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class RuntimeConfig(_message.Message):
    __slots__ = ("runtime", "threads", "provider", "precision", "version")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    runtime: str
    threads: int
    provider: str
    precision: str
    version: str
    def __init__(self, runtime: _Optional[str] = ..., threads: _Optional[int] = ..., provider: _Optional[str] = ..., precision: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class MeasurementProtocol(_message.Message):
    __slots__ = ("warmup", "min_runs", "max_runs", "target_rel_ci", "max_seconds", "per_layer")
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    MIN_RUNS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    TARGET_REL_CI_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PER_LAYER_FIELD_NUMBER: _ClassVar[int]
    warmup: int
    min_runs: int
    max_runs: int
    target_rel_ci: float
    max_seconds: float
    per_layer: bool
    def __init__(self, warmup: _Optional[int] = ..., min_runs: _Optional[int] = ..., max_runs: _Optional[int] = ..., target_rel_ci: _Optional[float] = ..., max_seconds: _Optional[float] = ..., per_layer: _Optional[bool] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("median", "mean", "std", "p10", "p90", "n", "rel_ci", "stable")
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    P10_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    REL_CI_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    median: float
    mean: float
    std: float
    p10: float
    p90: float
    n: int
    rel_ci: float
    stable: bool
    def __init__(self, median: _Optional[float] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., p10: _Optional[float] = ..., p90: _Optional[float] = ..., n: _Optional[int] = ..., rel_ci: _Optional[float] = ..., stable: _Optional[bool] = ...) -> None: ...

class BenchmarkItem(_message.Message):
    __slots__ = ("model_sha256", "model_format", "tag")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    model_format: str
    tag: str
    def __init__(self, model_sha256: _Optional[str] = ..., model_format: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class BenchmarkRequest(_message.Message):
    __slots__ = ("item", "config", "protocol")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    item: BenchmarkItem
    config: RuntimeConfig
    protocol: MeasurementProtocol
    def __init__(self, item: _Optional[_Union[BenchmarkItem, _Mapping]] = ..., config: _Optional[_Union[RuntimeConfig, _Mapping]] = ..., protocol: _Optional[_Union[MeasurementProtocol, _Mapping]] = ...) -> None: ...

class BenchmarkBatchRequest(_message.Message):
    __slots__ = ("items", "config", "protocol", "rounds")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BenchmarkItem]
    config: RuntimeConfig
    protocol: MeasurementProtocol
    rounds: int
    def __init__(self, items: _Optional[_Iterable[_Union[BenchmarkItem, _Mapping]]] = ..., config: _Optional[_Union[RuntimeConfig, _Mapping]] = ..., protocol: _Optional[_Union[MeasurementProtocol, _Mapping]] = ..., rounds: _Optional[int] = ...) -> None: ...

class BenchmarkResult(_message.Message):
    __slots__ = ("model_sha256", "config", "latency", "session_ms", "first_run_ms", "energy_mj", "energy_note", "peak_memory_bytes", "environment_json", "agent_version", "tag", "error", "extra_json")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    SESSION_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    ENERGY_NOTE_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    config: RuntimeConfig
    latency: LatencySummary
    session_ms: float
    first_run_ms: float
    energy_mj: float
    energy_note: str
    peak_memory_bytes: int
    environment_json: str
    agent_version: str
    tag: str
    error: str
    extra_json: str
    def __init__(self, model_sha256: _Optional[str] = ..., config: _Optional[_Union[RuntimeConfig, _Mapping]] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., session_ms: _Optional[float] = ..., first_run_ms: _Optional[float] = ..., energy_mj: _Optional[float] = ..., energy_note: _Optional[str] = ..., peak_memory_bytes: _Optional[int] = ..., environment_json: _Optional[str] = ..., agent_version: _Optional[str] = ..., tag: _Optional[str] = ..., error: _Optional[str] = ..., extra_json: _Optional[str] = ...) -> None: ...
