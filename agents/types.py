"""Value types that travel between the host and an agent.

They are plain dataclasses so the agent needs nothing heavier than numpy, and
each converts to and from a dict (the gRPC layer and the SQLite table both
store them through ``to_dict``/``from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from edgelat.errors import BadInput

RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "tflite-benchmark", "ort-perf-test")

# Model formats an agent accepts; the runtime decides which one it needs.
FORMATS = ("onnx", "tflite")

# Bounds on every value a request can carry. The agent checks them itself (a client
# need not be edgelat's CLI), so a request can never ask a runtime for 10^6 threads
# or a loop of 10^300 seconds. The CLI's options stay within them.
PROTOCOL_BOUNDS: dict[str, tuple[float, float]] = {
    "warmup": (0, 10_000),
    "min_runs": (1, 1_000_000),
    "max_runs": (1, 1_000_000),
    "target_rel_ci": (0.0, 1.0),
    "max_seconds": (0.0, 3600.0),  # lower bound exclusive: the loop needs some time
}
MAX_THREADS = 256
# Longest accepted text of each string field (runtime names, providers, tags are short).
MAX_TEXT: dict[str, int] = {
    "runtime": 64, "provider": 64, "precision": 16, "version": 64, "model_format": 16, "tag": 1024,
}
MAX_BATCH_ITEMS = 100_000
# Random inputs a runtime makes for one model, all inputs together. A tiny model may
# declare a 1x3x100000x100000 input; it is refused before anything is allocated.
MAX_INPUT_BYTES = 1 << 30


def check_text(field_name: str, value: str, required: bool = False) -> str:
    """A string field of a request: bounded length, printable, non-empty when ``required``."""
    limit = MAX_TEXT[field_name]
    if not isinstance(value, str):
        raise BadInput(f"{field_name} must be a string, got {type(value).__name__}")
    if required and not value:
        raise BadInput(f"{field_name} must not be empty")
    if len(value) > limit:
        raise BadInput(f"{field_name} is {len(value)} characters long; at most {limit} are accepted")
    if not value.isprintable():
        raise BadInput(f"{field_name} must be printable text, got {value[:40]!r}")
    return value


@dataclass(frozen=True)
class RuntimeConfig:
    """How a model is run. Table rows are only comparable within one device + config.

    ``runtime`` is one of :data:`RUNTIMES`; ``provider`` is the onnxruntime
    execution provider or the LiteRT delegate ("cpu" by default); ``version`` is
    filled in by the agent with the version that really ran.
    """

    runtime: str = "onnxruntime"
    threads: int = 1
    provider: str = "cpu"
    precision: str = "fp32"
    version: str = ""

    def check(self) -> "RuntimeConfig":
        """Raise :class:`BadInput` naming the first field out of bounds; returns self."""
        if self.runtime not in RUNTIMES:
            shown = self.runtime if len(str(self.runtime)) <= 40 else str(self.runtime)[:40] + "..."
            raise BadInput(f"runtime: unknown runtime {shown!r}; expected one of {', '.join(RUNTIMES)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= MAX_THREADS:
            raise BadInput(f"threads must be an integer from 1 to {MAX_THREADS}, got {self.threads!r}")
        check_text("provider", self.provider, required=True)
        check_text("precision", self.precision)
        check_text("version", self.version)
        return self

    def key(self) -> str:
        """Canonical string used in table rows (version excluded: it is stored beside)."""
        return f"{self.runtime}|{self.provider}|t{self.threads}|{self.precision}"

    @property
    def model_format(self) -> str:
        return "onnx" if self.runtime in ("onnxruntime", "ort-perf-test") else "tflite"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RuntimeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class MeasurementProtocol:
    """How long and how hard to measure (DESIGN.md, "Measurement protocol").

    Warm up ``warmup`` runs, then repeat until the 95% confidence interval of the
    median, relative to the median, is under ``target_rel_ci`` (and at least
    ``min_runs`` runs), or until ``max_seconds`` / ``max_runs`` is reached. A row
    that stops on a cap with the CI still over target is flagged unstable.
    """

    warmup: int = 5
    min_runs: int = 50
    max_runs: int = 1000
    target_rel_ci: float = 0.02
    max_seconds: float = 10.0
    #: also time each layer, in separate profiled runs after the timed ones (see ``extra["layers"]``)
    per_layer: bool = False

    def check(self) -> "MeasurementProtocol":
        """Raise :class:`BadInput` naming the first field out of :data:`PROTOCOL_BOUNDS`
        (or not finite, or max_runs < min_runs); returns self."""
        for name, (low, high) in PROTOCOL_BOUNDS.items():
            value = getattr(self, name)
            integral = name in ("warmup", "min_runs", "max_runs")
            if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
                raise BadInput(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
            if not math.isfinite(value):
                raise BadInput(f"{name} must be a finite number, got {value!r}")
            low_ok = value > low if name == "max_seconds" else value >= low
            if not (low_ok and value <= high):
                interval = f"({low:g}, {high:g}]" if name == "max_seconds" else f"[{low:g}, {high:g}]"
                raise BadInput(f"{name} must be in {interval}, got {value!r}")
        if self.max_runs < self.min_runs:
            raise BadInput(f"max_runs >= min_runs is required, got max_runs={self.max_runs} min_runs={self.min_runs}")
        if not isinstance(self.per_layer, bool):
            raise BadInput(f"per_layer must be true or false, got {self.per_layer!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MeasurementProtocol":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LatencySummary:
    """Summary of the steady-state samples, in milliseconds."""

    median: float
    mean: float
    std: float
    p10: float
    p90: float
    n: int
    rel_ci: float  # relative half-width of the 95% CI of the median (0.02 == 2%)
    stable: bool  # rel_ci <= target when the loop stopped

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencySummary":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class BenchmarkResult:
    """What an agent reports for one model run with one config.

    ``energy_mj`` is millijoules per inference, or None with ``energy_note``
    saying why (no sensor, charging, counter unreadable...). ``peak_memory_bytes``
    is None where unknown. ``environment`` is the snapshot taken around the
    measurement (frequencies, governor, temperatures, load, runtime versions).
    """

    model_sha256: str
    config: RuntimeConfig
    latency: LatencySummary | None = None
    session_ms: float | None = None
    first_run_ms: float | None = None
    energy_mj: float | None = None
    energy_note: str = ""
    peak_memory_bytes: int | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""
    tag: str = ""  # caller's label (e.g. the kernel key), echoed back
    error: str = ""  # non-empty when this model failed; the others in a batch go on
    extra: dict[str, Any] = field(default_factory=dict)  # runner specifics (per-op rows...)

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        d["latency"] = self.latency.to_dict() if self.latency else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchmarkResult":
        d = dict(data)
        d["config"] = RuntimeConfig.from_dict(d["config"])
        d["latency"] = LatencySummary.from_dict(d["latency"]) if d.get("latency") else None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class BenchmarkItem:
    """One entry of a batch: which model (by content hash) and a caller tag."""

    model_sha256: str
    model_format: str
    tag: str = ""

    def check(self) -> "BenchmarkItem":
        """Raise :class:`BadInput` for an unknown format or an over-long tag (the hash is
        checked where it becomes a file name, :func:`edgelat.agents.cache.check_sha`)."""
        if self.model_format not in FORMATS:
            shown = str(self.model_format)[:40]
            raise BadInput(f"model_format: unknown model format {shown!r}; expected one of {', '.join(FORMATS)}")
        check_text("tag", self.tag)
        return self
