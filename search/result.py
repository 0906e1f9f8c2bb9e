"""What a search returns: ranked candidates with every figure, plus how it ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelat.search.evaluate import Metrics
from edgelat.profiler.spaces.space import SearchSpace


@dataclass
class Candidate:
    """One architecture with its predicted (and, once validated, measured) figures."""

    arch: str
    genotype: np.ndarray
    predicted_latency_ms: float
    score: float
    flops: float
    params: float
    memory_bytes: float
    energy_mj: float | None = None
    feasible: bool = True
    score_source: str = ""
    measured_latency_ms: float | None = None
    measured: dict[str, Any] = field(default_factory=dict)  # validation details

    def to_dict(self) -> dict[str, Any]:
        d = {
            "arch": self.arch,
            "predicted_latency_ms": round(float(self.predicted_latency_ms), 6),
            "score": float(self.score),
            "flops": int(self.flops),
            "params": int(self.params),
            "memory_bytes_estimate": int(self.memory_bytes),
            "energy_mj": None if self.energy_mj is None or not np.isfinite(self.energy_mj) else float(self.energy_mj),
            "meets_budget_predicted": bool(self.feasible),
            "score_source": self.score_source,
            "measured_latency_ms": self.measured_latency_ms,
        }
        if self.measured:
            d["validation"] = self.measured
        return d


@dataclass
class SearchResult:
    """Candidates best first, plus the run's bookkeeping."""

    strategy: str
    candidates: list[Candidate]
    settings: dict[str, Any]
    seconds: float
    evaluations: int
    latency_calls: int
    history: list[float] = field(default_factory=list)  # best feasible score per generation
    cloud: tuple[np.ndarray, np.ndarray] | None = None  # (latency, score) of evaluated archs, for plots

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.strategy,
            "settings": self.settings,
            "seconds": round(self.seconds, 4),
            "evaluations": self.evaluations,
            "latency_calls": self.latency_calls,
        }


def candidates_from(space: SearchSpace, pop: np.ndarray, m: Metrics, sources: list[str] | None = None) -> list[Candidate]:
    """Candidates for the rows of ``pop`` (in that order)."""
    out = []
    for i, g in enumerate(space.check(pop)):
        out.append(Candidate(
            arch=space.to_string(g),
            genotype=g.copy(),
            predicted_latency_ms=float(m.latency_ms[i]),
            score=float(m.score[i]),
            flops=float(m.flops[i]),
            params=float(m.params[i]),
            memory_bytes=float(m.memory_bytes[i]),
            energy_mj=None if m.energy_mj is None else float(m.energy_mj[i]),
            feasible=bool(m.feasible[i]),
            score_source=sources[i] if sources else "",
        ))
    return out


def unique_rows(pop: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct genotype, in order."""
    _, first = np.unique(np.ascontiguousarray(pop), axis=0, return_index=True)
    return np.sort(first)
