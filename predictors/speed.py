"""The speed check: how fast the device runs whole models now, against when its predictor was built.

A prediction is made of figures measured during the build: the kernels, and the whole
models its calibration was fitted on. A device's speed moves over hours and days (a
shared host's neighbours, a phone's power and thermal state), so a prediction made a
day later answers for the device as it was then, while ``profile model`` measures it
as it is now. The check measures a few whole models again -- the build's held-out
models, which it measured warm right before fitting and which no fit used -- and the
geometric mean of now / then is the ``factor`` the warm prediction is scaled by.

Why whole models and not the drift sentinel (:mod:`edgelat.profiler.sentinel`): the
sentinel's kernels are small and stay in cache, so it does not see a neighbour that
takes memory bandwidth, which slows whole models with large weights most; whole
models measured the way the calibration measured them see what the calibration saw.
What it came to on one machine: ``docs/calibration.md``.

This module is the arithmetic (no device): :mod:`edgelat.on_demand` finds the probes,
measures them through the runner and hands the :class:`SpeedCheck` to
:func:`edgelat.predictors.model_predict.answer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: fewest probes measured now that make a factor (one alone is one measurement's noise)
MIN_PROBES = 2
#: weight, in probes, of the pull of each kind's factor toward the plain one (see :meth:`SpeedCheck.of`)
KIND_PRIOR = 0.5
#: checks this recent (s) are combined: each probe's median over them is its "now". One check is a
#: snapshot of a few seconds; a machine's speed wanders by a few percent from one to the next
#: (docs/calibration.md, stops 16 and 17), and its real moves take hours
RECENT_S = 600.0
#: a build younger than this (s) is not checked: its figures are the device's latest measurement, and
#: a check minutes later, in another load history, moved predictions by several percent where the
#: references did not (three builds, checked right after: docs/calibration.md, stop 17). Checked
#: the day after, it brought predictions back to the references (stop 16). Between the two it is a
#: choice, not a measurement.
MIN_AGE_S = 3600.0


@dataclass
class SpeedCheck:
    """One check: ``factor`` (now / then over all probes, 0.94 = 6% faster now; None: no check,
    ``note`` says why), per probe its name, ``then_ms`` (measured by the build), ``now_ms`` and
    ``block_share`` (the share of its kernel sum in inverted-residual blocks), and ``by_kind``:
    the factors of inverted-residual blocks and of every other kernel.

    Why two kinds (our reading of a few checks, docs/calibration.md): the two use a core
    differently (depthwise convolutions and their expansions move activations through the
    caches; dense convolutions and fc layers keep the multipliers busy), so a neighbour that
    takes one resource can slow one kind more (in three of five checks of one build the day after
    it, the MobileNet-like probes had sped up 3 to 5% more than the others; in two, as much). The
    held-out models are three MobileNet-like and three plain or residual networks; each
    kind's factor is fitted on the log ratios of the probes, by their block share, pulled
    toward the plain factor with the weight of :data:`KIND_PRIOR` probes."""

    factor: float | None
    probes: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    by_kind: tuple[float, float] | None = None  # (inverted-residual blocks, everything else)
    checks: int = 1  # the checks combined (within RECENT_S) into each probe's now_ms

    @classmethod
    def skipped(cls, why: str, probes: list[dict[str, Any]] | None = None) -> "SpeedCheck":
        """No check (``why``): the figure stays the build's, and the note says so."""
        return cls(None, list(probes or []), f"no speed check: {why}; the figure is the device's speed when the "
                                             "predictor was built")

    @classmethod
    def of(cls, then_now: dict[str, tuple[float, float | None]], shares: dict[str, float] | None = None,
           checks: int = 1) -> "SpeedCheck":
        """From ``{name: (then_ms, now_ms)}`` (``now_ms`` None: that probe failed now) and, per
        probe, its block share (:func:`block_share`; without them, one factor for every kernel);
        ``checks``: how many recent checks each ``now_ms`` is the median of."""
        shares = shares or {}
        probes = [{"name": n, "then_ms": t, "now_ms": m, "block_share": shares.get(n)} for n, (t, m) in then_now.items()]
        ok = [(n, t, m) for n, (t, m) in then_now.items() if m is not None and m > 0 and t > 0]
        if len(ok) < MIN_PROBES:
            return cls.skipped(f"{len(ok)} of the build's held-out models measured now (at least {MIN_PROBES} needed)",
                               probes)
        logs = np.array([math.log(m / t) for _, t, m in ok])
        factor = math.exp(float(logs.mean()))
        by_kind = None
        if all(n in shares for n, _, _ in ok):
            s = np.array([shares[n] for n, _, _ in ok])
            A = np.vstack([np.column_stack([s, 1 - s]), math.sqrt(KIND_PRIOR) * np.eye(2)])
            y = np.concatenate([logs, math.sqrt(KIND_PRIOR) * np.full(2, logs.mean())])
            a, b = np.linalg.lstsq(A, y, rcond=None)[0]
            by_kind = (math.exp(float(a)), math.exp(float(b)))
        how = "faster" if factor < 1 else "slower"
        when = "now" if checks <= 1 else f"now (the median of {checks} checks in the last {RECENT_S / 60:.0f} minutes)"
        note = (f"speed check: the device ran {len(ok)} of its build's held-out models {100 * abs(1 - factor):.1f}% "
                f"{how} {when} than when the predictor was built (factor {factor:.3f}")
        note += f"; {by_kind[0]:.3f} for inverted-residual blocks, {by_kind[1]:.3f} for other kernels)" if by_kind else ")"
        return cls(factor, probes, note + "; the prediction is scaled by it", by_kind, checks)

    def factor_for(self, block_share: Any) -> Any:
        """The factor of a model whose kernel sum has ``block_share`` (a number, or an array of
        them) in inverted-residual blocks; None without a check."""
        if self.factor is None or self.by_kind is None:
            return self.factor
        a, b = self.by_kind
        out = np.exp(np.asarray(block_share, dtype=np.float64) * math.log(a / b) + math.log(b))
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "by_kind": None if self.by_kind is None else
                {"inverted-residual": self.by_kind[0], "other": self.by_kind[1]}, "probes": self.probes,
                "checks": self.checks, "note": self.note}


def block_share(parts: Any) -> Any:
    """The share of a kernel sum in inverted-residual blocks, from its per-group parts
    (:func:`~edgelat.predictors.calibration.group_sums`; one model's, or one row per model);
    0 for an empty sum."""
    from edgelat.predictors.calibration import GROUPS

    p = np.asarray(parts, dtype=np.float64)
    blocks = p[..., [GROUPS.index("block-se"), GROUPS.index("block")]].sum(axis=-1)
    total = p.sum(axis=-1)
    out = np.divide(blocks, total, out=np.zeros_like(total), where=total > 0)
    return float(out) if out.ndim == 0 else out


def scaled(ms: list[float], sources: list[str], factor: float | None) -> list[float]:
    """Kernel figures in the build's terms: those measured now (``measured-now``) divided by the
    factor, the build's own (table, regressor) as they are."""
    if not factor:
        return list(ms)
    return [v / factor if s == "measured-now" else v for v, s in zip(ms, sources)]
