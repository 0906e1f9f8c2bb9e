"""Which operator pairs a device's runtime fuses: the stored rules, and how kernels run under them.

The verdicts are measured per device + runtime config by
:mod:`edgelat.predictors.fusion_probe` (the build side); this module is what
the predict side reads. How they are measured:

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

from dataclasses import dataclass

import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.lut.predictors_store import fusion_rule_rows
from edgelat.profiler.ops import ACTIVATION_OPS, KernelSpec

FUSION_OPS: tuple[str, ...] = ("conv2d", "dwconv2d", "fc")
CANDIDATE_PAIRS: tuple[tuple[str, str], ...] = tuple((op, act) for op in FUSION_OPS for act in ACTIVATION_OPS)
# Probed by default: on a 1-D fc output the activation's own work is below timing noise
# on every device we measured, so fc pairs only ever come out "unclear" (kept as one kernel).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in CANDIDATE_PAIRS if p[0] != "fc")


@dataclass(frozen=True)
class FusionRules:
    """The pairs a device runs as two kernels; every other pair is one kernel."""

    separate: frozenset[tuple[str, str]] = frozenset()
    source: str = "default"  # "default" (nothing measured) or "measured"

    def fuses(self, op: str, act: str) -> bool:
        return (op, act) not in self.separate


def apply_rules(spec: KernelSpec, rules: FusionRules) -> list[KernelSpec]:
    """The kernels ``spec`` runs as on a device: itself, or op + activation when the
    pair is ``separate`` there (what the graph splitter would produce)."""
    if spec.op not in FUSION_OPS or spec.act == "none" or rules.fuses(spec.op, spec.act):
        return [spec]
    bare = KernelSpec(**{**spec.to_dict(), "act": "none"})
    _, h, w, c = bare.output_shape()
    return [bare, KernelSpec(spec.act, h, w, c)]


OVERHEAD_SPEC = KernelSpec("relu", 1, 1, 8)  # a one-op model on 8 numbers: the cost of a model run


def load_rules(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> FusionRules:
    """The stored verdicts of a device + config (the default rules if none were measured)."""
    rows = fusion_rule_rows(db, device, config)
    if not rows:
        return FusionRules()
    separate = frozenset((r["op"], r["act"]) for r in rows if r["verdict"] == "separate")
    return FusionRules(separate=separate, source="measured")


def verdict_rows(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> list[dict]:
    """The stored verdict rows of a device + config, by op and activation."""
    return fusion_rule_rows(db, device, config)
