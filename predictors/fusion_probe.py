"""Fusion detection (the build side): measure each candidate pair fused and apart, store the verdicts.

See :mod:`edgelat.predictors.fusion` for what is measured and how a verdict is
reached; the rules the predict side reads are stored there. Every probe is
measured through the job runner (:mod:`edgelat.profiler.runner`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.lut.predictors_store import save_fusion_rule
from edgelat.predictors.fusion import CANDIDATE_PAIRS, DEFAULT_PAIRS, OVERHEAD_SPEC
from edgelat.profiler.ops import KernelSpec

# Stricter than a profiling run: the verdict rests on differences of a few percent.
PROBE_PROTOCOL = MeasurementProtocol(warmup=3, min_runs=15, max_runs=1000, target_rel_ci=0.01, max_seconds=0.3)
PROBE_ROUNDS = 5
FUSED_SHARE = 0.5  # share of the second op's work that must vanish to call the pair fused
SEPARATE_SHARE = 0.25  # below this share the pair runs as two kernels


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

    from edgelat.profiler import runner

    pairs = list(pairs)
    for op, act in pairs:
        if (op, act) not in CANDIDATE_PAIRS:
            raise ValueError(f"not a fusion candidate: {op}+{act}")
    fmt = config.model_format
    probes = {p: probe_specs(*p) for p in pairs}
    items = {i.key: i for i in runner.kernel_items([OVERHEAD_SPEC, *(s for p in pairs for s in probes[p])], fmt)}
    # every round, every pair as one tight group (overhead model, pair fused, first op, second op) in shuffled order
    rng = random.Random(0)
    order: list[tuple[str, str]] = []
    groups: list[list[runner.Item]] = []
    for _ in range(rounds):
        shuffled = pairs[:]
        rng.shuffle(shuffled)
        for pair in shuffled:
            group = [items[OVERHEAD_SPEC.key]] + [items[s.key] for s in probes[pair]]
            rng.shuffle(group)
            order.append(pair)
            groups.append(group)
    figures: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {p: [] for p in pairs}
    votes: dict[tuple[str, str], list[str]] = {p: [] for p in pairs}

    def judge_group(index: int, got: dict) -> None:
        pair = order[index]
        fused_spec, first_spec, second_spec = probes[pair]
        (tf, nf), (ta, na), (tb, nb), (to, no) = (
            (got[s.key].median, got[s.key].median * got[s.key].rel_ci)
            for s in (fused_spec, first_spec, second_spec, OVERHEAD_SPEC))
        figures[pair].append((tf, ta, tb, to))
        votes[pair].append(judge(tf, ta, tb, to, nf + na + nb + no))

    # the probes serve only the verdicts: they are not stored as kernel rows
    runner.run_probes(db, device, client, config, protocol, groups, "fusion probe", judge_group, len(pairs), progress)

    verdicts = []
    for pair in pairs:
        ranked = Counter(votes[pair]).most_common()
        verdict = ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else "unclear"
        v = _median_round(pair, verdict, [f for f, vote in zip(figures[pair], votes[pair]) if vote == verdict]
                          or figures[pair])
        save_fusion_rule(db, v.to_row(device, config))
        verdicts.append(v)
    return verdicts
