"""Result objects of the Python API: plain dataclasses that convert to dicts, JSON and DataFrames.

One object per concept, shared by every command's ``--json`` and by the API: a latency
summary is :class:`Latency` everywhere (milliseconds, booleans as booleans, missing
statistics as ``None``), times are ISO 8601 strings in UTC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgelat.values import iso_time


def _num(v: Any) -> float | None:
    """A finite float, or ``None`` for a statistic that is undefined or was not measured."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


#: keys holding epoch times in stored rows; printed as ISO 8601
TIME_KEYS = ("measured_at", "first_seen", "last_seen", "fitted_at", "recorded_at", "updated_at")


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as every ``--json`` prints it: booleans as booleans, times as ISO 8601, and,
    for a measurement row, its latency summary as the one :class:`Latency` object."""
    out = dict(row)
    for key in TIME_KEYS:
        if key in out and isinstance(out[key], (int, float)):
            out[key] = iso_time(out[key])
    if "stable" in out and out["stable"] is not None:
        out["stable"] = bool(out["stable"])
    if "median_ms" in out:
        out["latency_ms"] = Latency.from_row(row).to_dict()
    return out


@dataclass(frozen=True)
class Latency:
    """A measured latency summary in milliseconds (``n`` timed runs on the device)."""

    median: float | None
    mean: float | None = None
    std: float | None = None
    p10: float | None = None
    p90: float | None = None
    n: int = 0
    stable: bool = True
    rel_ci: float | None = None

    @classmethod
    def from_summary(cls, s: Any) -> "Latency":
        """From an agent's :class:`~edgelat.values.LatencySummary`."""
        return cls(_num(s.median), _num(s.mean), _num(s.std), _num(s.p10), _num(s.p90), int(s.n), bool(s.stable),
                   _num(s.rel_ci))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Latency":
        """From a stored table row (``median_ms``, ``mean_ms``, ...)."""
        return cls(_num(row.get("median_ms")), _num(row.get("mean_ms")), _num(row.get("std_ms")),
                   _num(row.get("p10_ms")), _num(row.get("p90_ms")), int(row.get("n") or 0),
                   bool(row.get("stable", 1)), _num(row.get("rel_ci")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_shares(layers: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Per-layer rows with each one's ``share`` of their sum (None stays None)."""
    if not layers:
        return layers
    total = sum(r["median_ms"] for r in layers) or 1.0
    return [{**r, "share": r["median_ms"] / total} for r in layers]


@dataclass
class ModelProfile:
    """A whole model measured on a device (what ``edgelat profile model`` prints)."""

    device: str
    model: str
    model_ref: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    latency_ms: Latency
    session_ms: float | None = None
    first_run_ms: float | None = None
    energy_mj: float | None = None
    energy_note: str | None = None
    peak_memory_bytes: int | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""
    notes: list[str] = field(default_factory=list)
    #: measured per-layer times (``profile model --per-layer``): layer, op, median_ms, runs, share
    layers: list[dict[str, Any]] | None = None
    layers_note: str | None = None
    #: the device state measured (:mod:`edgelat.profiler.states`): ``warm`` or ``sustained``
    state: str = "warm"

    @classmethod
    def from_result(cls, device: str, result: Any, model_ref: str, model: str,
                    notes: list[str] | None = None) -> "ModelProfile":
        """From an agent's :class:`~edgelat.values.BenchmarkResult` of a whole model."""
        return cls(device=device, model=model, model_ref=model_ref, runtime=result.config.runtime,
                   runtime_version=result.config.version, provider=result.config.provider,
                   threads=result.config.threads, latency_ms=Latency.from_summary(result.latency),
                   session_ms=_num(result.session_ms), first_run_ms=_num(result.first_run_ms),
                   energy_mj=_num(result.energy_mj), energy_note=result.energy_note or None,
                   peak_memory_bytes=result.peak_memory_bytes, environment=dict(result.environment or {}),
                   agent_version=result.agent_version, notes=list(notes or []),
                   layers=with_shares((result.extra or {}).get("layers")),
                   layers_note=(result.extra or {}).get("layers_note") or None,
                   state=str((result.environment or {}).get("state") or "warm"))

    def layers_frame(self) -> Any:
        """The per-layer times as a DataFrame, slowest first (empty when none were measured)."""
        import pandas as pd

        return pd.DataFrame(sorted(self.layers or [], key=lambda r: -r["median_ms"]))

    @property
    def stable(self) -> bool:
        return self.latency_ms.stable

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stable"] = self.latency_ms.stable
        d["rel_ci"] = self.latency_ms.rel_ci
        return d


@dataclass
class Prediction:
    """A model file's predicted latency on a device (what ``edgelat predict MODEL`` prints).

    ``kernels`` is a DataFrame-able list of the kernels the model was split into, each with
    its predicted ms and where the figure came from (``table``, ``regressor``,
    ``measured-now``); ``details`` keeps every other field of the prediction.
    """

    device: str
    model: str
    latency_ms: float
    calibrated: bool
    kernels: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)

    def kernels_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.kernels)

    @property
    def state(self) -> str:
        """The device state predicted (``warm`` or ``sustained``, :mod:`edgelat.profiler.states`)."""
        return str(self.details.get("state", "warm"))

    def to_dict(self) -> dict[str, Any]:
        return {**self.details, "device": self.device, "model": self.model, "latency_ms": self.latency_ms,
                "calibrated": self.calibrated, "kernels": self.kernels}


@dataclass
class SearchResults:
    """A finished hardware-aware search: ranked architectures (best first) and how it ran."""

    device: str
    space: str
    results: list[dict[str, Any]]
    notes: list[str]
    report: dict[str, Any]

    @property
    def best(self) -> dict[str, Any] | None:
        return self.results[0] if self.results else None

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.results)

    def to_dict(self) -> dict[str, Any]:
        return self.report
