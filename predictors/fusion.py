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

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.profiler.ops import ACTIVATION_OPS, KernelSpec

FUSION_OPS: tuple[str, ...] = ("conv2d", "dwconv2d", "fc")
CANDIDATE_PAIRS: tuple[tuple[str, str], ...] = tuple((op, act) for op in FUSION_OPS for act in ACTIVATION_OPS)
# Probed by default: on a 1-D fc output the activation's own work is below timing noise
# on every device we measured, so fc pairs only ever come out "unclear" (kept as one kernel).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in CANDIDATE_PAIRS if p[0] != "fc")
TABLE = "fusion_rules"

# Stricter than a profiling run: the verdict rests on differences of a few percent.
PROBE_PROTOCOL = MeasurementProtocol(warmup=3, min_runs=15, max_runs=1000, target_rel_ci=0.01, max_seconds=0.3)
PROBE_ROUNDS = 5
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
    """The tables are created by the store's numbered migrations (:mod:`edgelat.lut.schema`)."""
    from edgelat.lut.store import ensure_schema

    ensure_schema(db)


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


def _median_round(pair: tuple[str, str], verdict: str, rounds: list[tuple[float, float, float, float]]) -> PairVerdict:
    """The round (fused, first, second, overhead) whose share saved is the lower middle one."""
    candidates = [PairVerdict(pair[0], pair[1], verdict, *r) for r in rounds]
    candidates.sort(key=lambda v: v.saved_ms / v.second_cost_ms if v.second_cost_ms > 0 else -math.inf)
    return candidates[(len(candidates) - 1) // 2]


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

    In each of ``rounds`` rounds every pair is measured as one tight group --
    overhead model, pair fused, first op, second op, in a shuffled order -- and
    judged from that group alone; the verdict is the one most rounds agree on
    (``unclear`` on a tie). On a shared or throttling device, slowed periods
    lasting seconds shift measurements taken apart in time by more than the
    differences a verdict rests on; measurements taken together shift together.
    The stored figures are those of one round that voted for the verdict, the one
    with the median share saved: medians taken column by column over rounds can mix
    a slowed round's fused figure with a quiet round's parts into figures that
    contradict the verdict they back (seen on `local`: a "fused" conv+relu stored
    as costing more than conv and relu apart). The probes serve only this verdict
    and are not written to the kernel table.
    """
    import random
    from collections import Counter

    from edgelat.values import BenchmarkItem
    from edgelat.errors import DeviceError
    from edgelat.profiler.builders import build_model

    pairs = list(pairs)
    for op, act in pairs:
        if (op, act) not in CANDIDATE_PAIRS:
            raise ValueError(f"not a fusion candidate: {op}+{act}")
    fmt = config.model_format
    shas: dict[str, str] = {}

    def item(spec: KernelSpec) -> BenchmarkItem:
        if spec.key not in shas:
            shas[spec.key] = client.put_model(build_model(spec, fmt))
        return BenchmarkItem(shas[spec.key], fmt, spec.key)

    probes = {p: probe_specs(*p) for p in pairs}
    figures: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {p: [] for p in pairs}
    votes: dict[tuple[str, str], list[str]] = {p: [] for p in pairs}
    rng = random.Random(0)
    for r in range(rounds):
        order = pairs[:]
        rng.shuffle(order)
        for pair in order:
            group = [item(OVERHEAD_SPEC)] + [item(s) for s in probes[pair]]
            rng.shuffle(group)
            got = {}
            for result in client.benchmark_batch(group, config, protocol):
                if not result.ok or result.latency is None:
                    raise DeviceError(f"fusion probe {result.tag} failed on {device}: {result.error}")
                got[result.tag] = (result.latency.median, result.latency.median * result.latency.rel_ci)
            fused_spec, first_spec, second_spec = probes[pair]
            (tf, nf), (ta, na), (tb, nb), (to, no) = (
                got[fused_spec.key], got[first_spec.key], got[second_spec.key], got[OVERHEAD_SPEC.key])
            figures[pair].append((tf, ta, tb, to))
            votes[pair].append(judge(tf, ta, tb, to, nf + na + nb + no))
        if progress is not None:
            progress(r + 1, rounds, f"fusion probes, round {r + 1}/{rounds}")

    ensure_table(db)
    verdicts = []
    for pair in pairs:
        ranked = Counter(votes[pair]).most_common()
        verdict = ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else "unclear"
        v = _median_round(pair, verdict, [f for f, vote in zip(figures[pair], votes[pair]) if vote == verdict]
                          or figures[pair])
        with db.conn:
            db[TABLE].upsert(v.to_row(device, config), pk=("device", "config_key", "op", "act"))
        verdicts.append(v)
    return verdicts
