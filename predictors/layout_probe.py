"""The layout conversion's price on a device (the build side): kernels alone and chained.

Three copies of one kernel (same shape in and out) run as one chain make, at each of the two
links between them, the conversions that three runs alone make and a model does not: the
second copy's input and the first one's output, ``h*w*c`` elements each, plus one model run's
fixed cost. So ``(3*T1 - T3) / 2`` (``T1`` alone, ``T3`` the chain) is what one link saves, and
its slope over the probes' elements is the price per element converted
(:class:`~edgelat.predictors.layout.LayoutCost`). The fixed part (the intercept) stays with the
calibration's per-kernel term. Each probe is measured alone and chained as one tight group, in
shuffled rounds (the fusion probe's reasoning: slowed periods shift measurements taken together
together); the slope is the median over rounds. Nothing is stored in the kernel table: the
build keeps the price in its calibration.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sqlite_utils

from edgelat.predictors.fusion_probe import PROBE_PROTOCOL
from edgelat.predictors.layout import LayoutCost
from edgelat.profiler.ops import KernelSpec
from edgelat.values import MeasurementProtocol, RuntimeConfig

# same shape in and out, from small maps to large ones: depthwise convs, pools, pointwise convs
PROBES = tuple(KernelSpec.from_key(k) for k in (
    "dwconv2d:h28,w28,cin96,k3,s1,relu",
    "dwconv2d:h56,w56,cin64,k3,s1,relu",
    "dwconv2d:h56,w56,cin144,k3,s1,relu",
    "dwconv2d:h112,w112,cin64,k3,s1,relu",
    "maxpool:h56,w56,cin64,k3,s1",
    "maxpool:h112,w112,cin64,k3,s1",
    "conv2d:h56,w56,cin64,cout64,k1,s1,relu",
    "conv2d:h28,w28,cin128,cout128,k1,s1,relu",
))
CHAIN = 3
ROUNDS = 3


@dataclass
class LayoutProbe:
    """What the probes measured: per probe, the elements one link converts and the ms it saved
    (median over rounds); the slope per round; the price kept."""

    cost: LayoutCost
    slopes: list[float]
    intercept_ms: float
    probes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.cost.to_dict(), "slopes": self.slopes, "intercept_ms": self.intercept_ms, "probes": self.probes}


def link_saving(alone_ms: float, chain_ms: float, chain: int = CHAIN) -> float:
    """What one link of a chain of ``chain`` copies saves against the copies run alone (ms)."""
    return (chain * alone_ms - chain_ms) / (chain - 1)


def fit_slope(elements: list[float], saved_ms: list[float]) -> tuple[float, float]:
    """(ms per element, intercept ms) of the least-squares line through the probes."""
    A = np.column_stack([np.ones(len(elements)), np.asarray(elements, dtype=np.float64)])
    intercept, slope = np.linalg.lstsq(A, np.asarray(saved_ms, dtype=np.float64), rcond=None)[0]
    return float(slope), float(intercept)


def measure_layout_cost(
    db: sqlite_utils.Database,
    device: str,
    client: Any,
    config: RuntimeConfig,
    probes: tuple[KernelSpec, ...] = PROBES,
    protocol: MeasurementProtocol = PROBE_PROTOCOL,
    rounds: int = ROUNDS,
    progress: Callable[[int, int, str], None] | None = None,
) -> LayoutProbe:
    """Measure each probe alone and chained on the device (see the module docstring). The
    price is never negative: a device whose chains save nothing gets 0."""
    from edgelat.profiler import runner
    from edgelat.profiler.builders import build_model
    from edgelat.profiler.jobs import model_ref_for

    fmt = config.model_format
    alone = {p.key: i for p, i in zip(probes, runner.kernel_items(probes, fmt))}
    chained = {}
    for p in probes:
        data = build_model([p] * CHAIN, fmt, seed=0)
        chained[p.key] = runner.model_item(model_ref_for(data), data, fmt, f"layout-chain-{p.key}")
    rng = random.Random(0)
    order: list[KernelSpec] = []
    groups: list[list[runner.Item]] = []
    for _ in range(rounds):
        shuffled = list(probes)
        rng.shuffle(shuffled)
        for p in shuffled:
            group = [alone[p.key], chained[p.key]]
            rng.shuffle(group)
            order.append(p)
            groups.append(group)
    saved: list[dict[str, float]] = [{} for _ in range(rounds)]

    def take(index: int, got: dict) -> None:
        p = order[index]
        saved[index // len(probes)][p.key] = link_saving(got[alone[p.key].key].median, got[chained[p.key].key].median)

    runner.run_probes(db, device, client, config, protocol, groups, "layout probe", take, len(probes), progress)
    elements = {p.key: 2.0 * p.h * p.w * p.cin for p in probes}  # one link: an output and an input
    fits = [fit_slope([elements[k] for k in r], list(r.values())) for r in saved]
    slopes = [s for s, _ in fits]
    rows = [{"key": p.key, "elements": elements[p.key], "saved_ms": statistics.median(r[p.key] for r in saved)}
            for p in probes]
    return LayoutProbe(LayoutCost(max(0.0, statistics.median(slopes))), slopes,
                       statistics.median(i for _, i in fits), rows)
