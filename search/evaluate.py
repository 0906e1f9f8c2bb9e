"""Batch evaluation of a population: latency, energy, size, score, and constraints.

Strategies see a population only through :class:`Evaluator`, which makes one
latency-model call per batch (the predictors answer hundreds of thousands of
architectures a second, so a generation costs one vectorised call, not one
call per architecture).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from edgelat.search.objective import Objective
from edgelat.profiler.spaces.space import SearchSpace

BatchFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Constraints:
    """Upper bounds an architecture must meet (None: unconstrained).

    ``max_memory_bytes`` bounds the shape-based memory estimate of
    :meth:`SearchSpace.memory` (weights + largest kernel's activations, fp32).
    ``max_flops`` is used only by ``--compare-flops``.
    """

    max_latency_ms: float | None = None
    max_energy_mj: float | None = None
    max_memory_bytes: float | None = None
    max_params: float | None = None
    max_flops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def metric_of(self) -> dict[str, str]:
        """Constraint field -> the metric it bounds."""
        return {"max_latency_ms": "latency_ms", "max_energy_mj": "energy_mj", "max_memory_bytes": "memory_bytes",
                "max_params": "params", "max_flops": "flops"}


@dataclass
class Metrics:
    """Per-architecture figures of one batch (arrays of length n)."""

    latency_ms: np.ndarray
    score: np.ndarray
    flops: np.ndarray
    params: np.ndarray
    memory_bytes: np.ndarray
    energy_mj: np.ndarray | None  # None when no energy model is attached
    violation: np.ndarray  # sum of relative excess over each bound; 0 when feasible

    @property
    def feasible(self) -> np.ndarray:
        return (self.violation <= 0) & np.isfinite(self.score)

    def take(self, idx: np.ndarray) -> "Metrics":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Metrics(**{k: pick(v) for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list["Metrics"]) -> "Metrics":
        out = {}
        for k in parts[0].__dict__:
            vals = [getattr(p, k) for p in parts]
            out[k] = None if vals[0] is None else np.concatenate(vals)
        return Metrics(**out)


class Evaluator:
    """Computes :class:`Metrics` for populations of one space.

    ``latency`` and ``energy`` are batch functions (genotypes -> ms / mJ), e.g.
    a predictor's ``LatencyModel.predict``; ``objective`` scores accuracy.
    """

    def __init__(self, space: SearchSpace, latency: BatchFn, objective: Objective,
                 energy: BatchFn | None = None) -> None:
        self.space = space
        self.latency = latency
        self.objective = objective
        self.energy = energy
        self.calls = 0
        self.evaluated = 0

    def __call__(self, pop: np.ndarray, constraints: Constraints) -> Metrics:
        pop = self.space.check(pop)
        self.calls += 1
        self.evaluated += pop.shape[0]
        lat = np.asarray(self.latency(pop), dtype=np.float64).reshape(-1)
        if lat.shape[0] != pop.shape[0]:
            raise ValueError(f"latency model returned {lat.shape[0]} values for {pop.shape[0]} architectures")
        figures = self.space.figures(pop)
        m = Metrics(
            latency_ms=lat,
            score=np.asarray(self.objective.score(pop, figures), dtype=np.float64),
            flops=figures["flops"],
            params=figures["params"],
            memory_bytes=figures["memory_bytes"],
            energy_mj=None if self.energy is None else np.asarray(self.energy(pop), dtype=np.float64).reshape(-1),
            violation=np.zeros(pop.shape[0]),
        )
        m.violation = violation(m, constraints)
        return m


def violation(m: Metrics, c: Constraints) -> np.ndarray:
    """Sum over the active bounds of ``max(0, value / bound - 1)``; NaN values violate."""
    total = np.zeros_like(m.latency_ms)
    for field, metric in c.metric_of.items():
        bound = getattr(c, field)
        if bound is None:
            continue
        values = getattr(m, metric)
        if values is None:
            raise ValueError(f"constraint {field} needs {metric}, which this evaluator does not compute")
        excess = np.maximum(values / bound - 1.0, 0.0)
        total += np.where(np.isnan(values), np.inf, excess)
    return total
