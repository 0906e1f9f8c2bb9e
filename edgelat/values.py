"""Value types that the store, the agents and everything between them share.

A runtime config, a measurement protocol, a latency summary, a benchmark result
and a batch item: plain dataclasses (no dependency beyond the standard library,
so an agent-only install on a board can import them), each converting to and
from a dict (the gRPC layer and the SQLite tables both store them through
``to_dict``/``from_dict``). The bounds an agent enforces on a request are the
agent's: :mod:`edgelat.agents.bounds`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "tflite-benchmark", "ort-perf-test")

# Model formats an agent accepts; the runtime decides which one it needs.
FORMATS = ("onnx", "tflite")


def iso_time(epoch: float | None) -> str | None:
    """An epoch time as ISO 8601 (UTC, seconds), the way every output shows times; ``None`` stays ``None``."""
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(float(epoch), tz=_dt.timezone.utc).isoformat(timespec="seconds")


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
