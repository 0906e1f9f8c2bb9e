"""The drift sentinel: a few fixed reference kernels that tell how fast the device is right now.

A device's speed moves (a neighbour's load, a clock governor, heat). Every row
passes its own confidence test, yet two passes minutes apart can disagree by
several percent, all in the same direction. A profiling job measures the
sentinel kernels at its start, between its chunks and at its end; their
medians, relative to the first ones ever stored for the device + runtime config
(its reference state), give the device's *level* (1.05 = 5% slower than the
reference). Every row stores the level it was measured at, and its median
divided by it: the figure in the reference state.

The kernels are cheap catalog kernels of three kinds (a dense convolution: the
compute units; a depthwise convolution: vector units and memory; a fully
connected layer: weight streaming), measured to a tighter confidence than rows
because each check is one number that many rows lean on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgelat.values import BenchmarkResult, MeasurementProtocol
from edgelat.profiler.ops import KernelSpec

SENTINEL_SPECS: tuple[KernelSpec, ...] = (
    KernelSpec("conv2d", 28, 28, 32, 32, kernel=3, bn=True, act="relu"),
    KernelSpec("dwconv2d", 56, 56, 64, kernel=3, bn=True, act="relu6"),
    KernelSpec("fc", 1, 1, 512, 512),
)

#: How the sentinel kernels are measured (tighter than rows; each check is short).
SENTINEL_PROTOCOL = MeasurementProtocol(warmup=5, min_runs=20, max_runs=2000, target_rel_ci=0.005, max_seconds=0.5)


@dataclass
class SentinelCheck:
    """One check: the level (None when no sentinel kernel could be compared) and why not."""

    at_s: float  # seconds since the job started
    level: float | None
    medians: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return {"at_s": round(self.at_s, 3), "level": self.level, "note": self.note or None}


def level_of(medians: dict[str, float], reference: dict[str, float]) -> float | None:
    """Geometric mean of median / reference over the kernels that have both (None if none)."""
    ratios = [medians[k] / reference[k] for k in medians if k in reference and reference[k] > 0 and medians[k] > 0]
    if not ratios:
        return None
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def failures(results: list[BenchmarkResult]) -> str:
    """The note for sentinel kernels that did not run (the level rests on the others)."""
    bad = [f"{r.tag}: {r.error or 'no latency'}" for r in results if not r.ok or r.latency is None]
    return ("sentinel kernel(s) not measured: " + "; ".join(bad)) if bad else ""
