"""Which operator pairs a device's runtime fuses, learned by measuring them (as nn-Meter does).

A runtime may run ``conv -> relu`` as one fused kernel (onnxruntime's CPU
``FusedConv``) or as two. Instead of hard-coding one list for every device we
measure, per device + runtime config, each candidate pair three ways -- the pair
in one model (``T_ab``), the first op alone (``T_a``) and the second alone
(``T_b``) -- plus a near-empty model (``T_0``, the fixed cost of one model run).
If the runtime fuses the pair, running both in one model costs about ``T_a``:
the second op's own work ``T_b - T_0`` is saved. If it does not, ``T_ab`` is
about ``T_a + T_b - T_0``.

Verdict per pair: ``fused`` when at least half of the second op's own work is
saved, ``separate`` when less than a quarter is, ``unclear`` in between or when
the second op's own work is below the measurement's noise. The graph splitter
(:mod:`edgelat.predictors.graph`) keeps a pair as one kernel unless its verdict
is ``separate``, so an unmeasured or unclear pair is predicted exactly as it is
profiled (one model holding both ops).

Pairs are limited to what the operator catalog can express as one kernel:
``conv2d``/``dwconv2d``/``fc`` followed by each activation. Batch-norm is not a
candidate: every runtime we target folds it into the convolution's weights at
load time, and the model builders fold it already.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import sqlite_utils

from edgelat.agents.types import MeasurementProtocol, RuntimeConfig
from edgelat.profiler.ops import ACTIVATION_OPS, KernelSpec

FUSION_OPS: tuple[str, ...] = ("conv2d", "dwconv2d", "fc")
CANDIDATE_PAIRS: tuple[tuple[str, str], ...] = tuple((op, act) for op in FUSION_OPS for act in ACTIVATION_OPS)
# Probed by default: on a 1-D fc output the activation's own work is below timing noise
# on every device we measured, so fc pairs only ever come out "unclear" (kept as one kernel).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in CANDIDATE_PAIRS if p[0] != "fc")
TABLE = "fusion_rules"

# Stricter than a profiling run: the verdict rests on differences of a few percent.
PROBE_PROTOCOL = MeasurementProtocol(warmup=3, min_runs=15, max_runs=1000, target_rel_ci=0.01, max_seconds=0.3)
PROBE_ROUNDS = 3
FUSED_SHARE = 0.5  # share of the second op's work that must vanish to call the pair fused
SEPARATE_SHARE = 0.25  # below this share the pair runs as two kernels


@dataclass(frozen=True)
class FusionRules:
    """The pairs a device runs as two kernels; every other pair is one kernel."""

    separate: frozenset[tuple[str, str]] = frozenset()
    source: str = "default"  # "default" (nothing measured) or "measured"

    def fuses(self, op: str, act: str) -> bool:
        return (op, act) not in self.separate


@dataclass
class PairVerdict:
    """The measurements behind one pair's verdict (all in ms)."""

    op: str
    act: str
    verdict: str  # fused | separate | unclear
    fused_ms: float
    first_ms: float
    second_ms: float
    overhead_ms: float
    saved_ms: float = field(init=False)
    second_cost_ms: float = field(init=False)

    def __post_init__(self) -> None:
        self.second_cost_ms = self.second_ms - self.overhead_ms
        self.saved_ms = self.first_ms + self.second_ms - self.overhead_ms - self.fused_ms

    def to_row(self, device: str, config: RuntimeConfig) -> dict:
        return {
            "device": device,
            "config_key": config.key(),
            "op": self.op,
            "act": self.act,
            "verdict": self.verdict,
            "fused_ms": self.fused_ms,
            "first_ms": self.first_ms,
            "second_ms": self.second_ms,
            "overhead_ms": self.overhead_ms,
            "saved_ms": self.saved_ms,
            "second_cost_ms": self.second_cost_ms,
            "measured_at": time.time(),
        }


def apply_rules(spec: KernelSpec, rules: FusionRules) -> list[KernelSpec]:
    """The kernels ``spec`` runs as on a device: itself, or op + activation when the
    pair is ``separate`` there (what the graph splitter would produce)."""
    if spec.op not in FUSION_OPS or spec.act == "none" or rules.fuses(spec.op, spec.act):
        return [spec]
    bare = KernelSpec(**{**spec.to_dict(), "act": "none"})
    _, h, w, c = bare.output_shape()
    return [bare, KernelSpec(spec.act, h, w, c)]


def probe_specs(op: str, act: str) -> tuple[KernelSpec, KernelSpec, KernelSpec]:
    """(pair in one kernel, first op alone, second op alone) at shapes where the
    activation's own work is large next to the timing noise of the first op."""
    if op == "conv2d":
        first = KernelSpec("conv2d", 56, 56, 8, 64, kernel=1, bn=True)
        second = KernelSpec(act, 56, 56, 64)
    elif op == "dwconv2d":
        first = KernelSpec("dwconv2d", 56, 56, 64, kernel=3, bn=True)
        second = KernelSpec(act, 56, 56, 64)
    elif op == "fc":
        first = KernelSpec("fc", 1, 1, 64, 8192)
        second = KernelSpec(act, 1, 1, 8192)
    else:
        raise ValueError(f"no fusion probe for {op!r}")
    fused = KernelSpec(**{**first.to_dict(), "act": act})
    return fused, first, second


OVERHEAD_SPEC = KernelSpec("relu", 1, 1, 8)  # a one-op model on 8 numbers: the cost of a model run


def judge(fused_ms: float, first_ms: float, second_ms: float, overhead_ms: float, noise_ms: float) -> str:
    """The verdict from the four medians; ``noise_ms`` is what differences below are lost in."""
    cost = second_ms - overhead_ms
    saved = first_ms + second_ms - overhead_ms - fused_ms
    if cost <= 2 * noise_ms:
        return "unclear"
    if saved >= FUSED_SHARE * cost:
        return "fused"
    if saved < SEPARATE_SHARE * cost:
        return "separate"
    return "unclear"


def ensure_table(db: sqlite_utils.Database) -> None:
    if not db[TABLE].exists():
        db[TABLE].create(
            {
                "device": str,
                "config_key": str,
                "op": str,
                "act": str,
                "verdict": str,
                "fused_ms": float,
                "first_ms": float,
                "second_ms": float,
                "overhead_ms": float,
                "saved_ms": float,
                "second_cost_ms": float,
                "measured_at": float,
            },
            pk=("device", "config_key", "op", "act"),
        )


def load_rules(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> FusionRules:
    """The stored verdicts of a device + config (the default rules if none were measured)."""
    ensure_table(db)
    rows = list(db[TABLE].rows_where("device = ? and config_key = ?", [device, config.key()]))
    if not rows:
        return FusionRules()
    separate = frozenset((r["op"], r["act"]) for r in rows if r["verdict"] == "separate")
    return FusionRules(separate=separate, source="measured")


def verdict_rows(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> list[dict]:
    ensure_table(db)
    return list(db[TABLE].rows_where("device = ? and config_key = ?", [device, config.key()], order_by="op, act"))


def detect_fusion(
    db: sqlite_utils.Database,
    device: str,
    client,
    config: RuntimeConfig,
    pairs: Iterable[tuple[str, str]] = DEFAULT_PAIRS,
    protocol: MeasurementProtocol = PROBE_PROTOCOL,
    rounds: int = PROBE_ROUNDS,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[PairVerdict]:
    """Measure each pair fused and apart on the device, store and return the verdicts.

    Every probe model is measured ``rounds`` times, the rounds interleaved in a
    shuffled order, and the median of the round medians is used: on a busy
    machine the drift between two measurements taken seconds apart is larger
    than the differences a verdict rests on, and interleaving spreads it evenly.
    The probes serve only this verdict and are not written to the kernel table
    (they are measured with their own protocol).
    """
    import random

    from edgelat.agents.types import BenchmarkItem
    from edgelat.errors import DeviceError
    from edgelat.profiler.builders import build_model

    pairs = list(pairs)
    for op, act in pairs:
        if (op, act) not in CANDIDATE_PAIRS:
            raise ValueError(f"not a fusion candidate: {op}+{act}")
    fmt = config.model_format
    probes = {p: probe_specs(*p) for p in pairs}
    specs = {OVERHEAD_SPEC.key: OVERHEAD_SPEC}
    for trio in probes.values():
        specs.update({s.key: s for s in trio})
    items = [BenchmarkItem(client.put_model(build_model(s, fmt)), fmt, key) for key, s in specs.items()]
    samples: dict[str, list[float]] = {key: [] for key in specs}
    noise: dict[str, list[float]] = {key: [] for key in specs}
    rng = random.Random(0)
    for r in range(rounds):
        order = items[:]
        rng.shuffle(order)
        for result in client.benchmark_batch(order, config, protocol):
            if not result.ok or result.latency is None:
                raise DeviceError(f"fusion probe {result.tag} failed on {device}: {result.error}")
            samples[result.tag].append(result.latency.median)
            noise[result.tag].append(result.latency.median * result.latency.rel_ci)
        if progress is not None:
            progress(r + 1, rounds, f"fusion probes, round {r + 1}/{rounds}")

    def med(key: str) -> tuple[float, float]:
        values = sorted(samples[key])
        spread = (values[-1] - values[0]) / 2 if len(values) > 1 else 0.0
        return statistics.median(values), max(statistics.median(noise[key]), spread / max(len(values) - 1, 1))

    overhead, overhead_noise = med(OVERHEAD_SPEC.key)
    ensure_table(db)
    verdicts = []
    for (op, act), (fused_spec, first_spec, second_spec) in probes.items():
        (tf, nf), (ta, na), (tb, nb) = med(fused_spec.key), med(first_spec.key), med(second_spec.key)
        v = PairVerdict(op, act, judge(tf, ta, tb, overhead, nf + na + nb + overhead_noise), tf, ta, tb, overhead)
        with db.conn:
            db[TABLE].upsert(v.to_row(device, config), pk=("device", "config_key", "op", "act"))
        verdicts.append(v)
    return verdicts
