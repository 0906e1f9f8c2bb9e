"""The measurement protocol: warm up, time each run, stop when the median is known well enough.

This file depends on the standard library and numpy only (no ``edgelat``
imports) because the ADB bridge pushes it, as a standalone file, to devices
that run the Python runner. Keep it that way.

Why a median CI and not a fixed run count: a fixed count wastes time on stable
kernels and under-samples noisy ones. The 95% confidence interval of the median
from order statistics needs no assumption about the latency distribution
(which is skewed and often multi-modal on phones), so a row can say honestly
"median 3.41 ms +/- 1.2%" or "unstable".
"""

from __future__ import annotations

import gc
import math
import time
from typing import Callable, Sequence

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
MIN_SAMPLES_FOR_CI = 6  # below this no order-statistic pair covers the median at 95%
_PY_SORT_MAX = 256  # up to this many samples, a list is sorted in Python (faster than numpy there)


def _median_ci_ranks(n: int, z: float = Z_95) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the order statistics bounding the median's CI.

    The rank of the median's position is Binomial(n, 1/2); with the normal
    approximation the 1-based bounds are ``n/2 - z*sqrt(n)/2`` (rounded down)
    and ``1 + n/2 + z*sqrt(n)/2`` (rounded up), which matches the exact
    binomial ranks for n=100 (40 and 61). Rounding outward keeps coverage >= 95%.
    """
    half = z * math.sqrt(n) / 2.0
    lo = max(1, math.floor(n / 2.0 - half))
    hi = min(n, math.ceil(1 + n / 2.0 + half))
    return lo - 1, hi - 1


def median_rel_ci(samples_ms: Sequence[float]) -> float:
    """Relative half-width of the 95% CI of the median: ``(x_hi - x_lo) / 2 / median``.

    Distribution-free (order statistics, binomial/normal approximation). Returns
    ``inf`` when there are too few samples for a 95% interval to exist (n < 6)
    or the median is zero with a non-zero spread.
    """
    # a short list (the stopping rule asks after every few runs) is sorted in Python: for the
    # sample counts most rows need, that is several times cheaper than numpy's per-call cost
    if isinstance(samples_ms, list) and len(samples_ms) <= _PY_SORT_MAX:
        x: Sequence[float] = sorted(samples_ms)
    else:
        x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(x)
    if n < MIN_SAMPLES_FOR_CI:
        return math.inf
    lo, hi = _median_ci_ranks(n)
    width = float(x[hi] - x[lo])
    med = float(_median_sorted(x))
    if med <= 0.0:
        return 0.0 if width == 0.0 else math.inf
    return width / 2.0 / med


def summarize(samples_ms: Sequence[float], target_rel_ci: float) -> dict:
    """Summary statistics of steady-state samples (milliseconds).

    Keys: median, mean, std (sample std, ddof=1; 0 for one sample), p10, p90
    (linear interpolation), n, rel_ci (see :func:`median_rel_ci`) and stable
    (rel_ci <= target_rel_ci).
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    rel_ci = median_rel_ci(x)
    p10, p90 = np.percentile(x, [10.0, 90.0])
    return {
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "p10": float(p10),
        "p90": float(p90),
        "n": int(x.size),
        "rel_ci": float(rel_ci),
        "stable": bool(rel_ci <= target_rel_ci),
    }


def run_protocol(
    run_once: Callable[[], None],
    warmup: int = 5,
    min_runs: int = 10,
    max_runs: int = 1000,
    target_rel_ci: float = 0.02,
    max_seconds: float = 10.0,
    clock: Callable[[], int] = time.perf_counter_ns,
    before_steady: Callable[[], None] | None = None,
) -> tuple[list[float], dict]:
    """Warm up, then time ``run_once`` call by call until the median is pinned down.

    * ``warmup`` untimed runs first (cut short once they pass ``max_seconds``,
      after at least one; the steady loop then gets its own ``max_seconds``),
      then ``before_steady()`` if given (the local backend starts its energy
      meter there so energy covers the steady loop only).
    * Each steady run is timed on its own with ``clock`` (integer nanoseconds).
    * From ``min_runs`` on, the CI is checked every few runs (every ~10% of the
      samples so far, so checking stays cheap); the loop stops when
      ``rel_ci <= target_rel_ci``, at ``max_runs`` runs, or when the steady loop
      has used ``max_seconds``. At least one steady run is always made.
    * The garbage collector is paused during the steady loop so a collection
      of unrelated objects is not billed to the model.

    Returns the raw samples in ms and :func:`summarize`'s dict plus
    ``stopped_by`` ("target", "max_runs" or "max_seconds") and ``warmup`` (runs
    done). ``stable`` is False when a cap stopped the loop above target.
    """
    if max_runs < 1:
        raise ValueError("max_runs must be >= 1")
    min_runs = max(1, min(min_runs, max_runs))
    budget_ns = int(max_seconds * 1e9)

    warm_start = clock()
    done_warmup = 0
    for _ in range(max(0, warmup)):
        run_once()
        done_warmup += 1
        if clock() - warm_start >= budget_ns:
            break

    if before_steady is not None:
        before_steady()

    samples: list[float] = []
    stopped_by = "max_runs"
    next_check = min_runs
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        while True:
            t0 = clock()
            run_once()
            t1 = clock()
            samples.append((t1 - t0) / 1e6)
            n = len(samples)
            if n >= next_check:
                if median_rel_ci(samples) <= target_rel_ci:
                    stopped_by = "target"
                    break
                next_check = n + max(1, n // 10)
            if n >= max_runs:
                stopped_by = "max_runs"
                break
            if t1 - start >= budget_ns:
                stopped_by = "max_seconds"
                break
    finally:
        if gc_was_enabled:
            gc.enable()

    summary = summarize(samples, target_rel_ci)
    summary["stopped_by"] = stopped_by
    summary["warmup"] = done_warmup
    return samples, summary


def _median(values: Sequence[float]) -> float:
    """The median as :func:`numpy.median` gives it, without numpy's per-call cost on short lists."""
    return _median_sorted(sorted(values))


def _median_sorted(x: Sequence[float]) -> float:
    """The median of already sorted values (the mean of the middle two for an even count)."""
    mid = len(x) // 2
    return x[mid] if len(x) % 2 else (x[mid - 1] + x[mid]) / 2.0


class RoundsTimer:
    """One item's samples spread over interleaved rounds (the rounds path of a batch).

    A batch in rounds visits its items in a new shuffled order each round and
    gives each a short burst of timed runs, so a slow drift of the device's
    speed spreads over all items instead of biasing the late ones. The stopping
    rule is the one of :func:`run_protocol`, applied to all samples of all
    rounds together: from ``min_rounds`` rounds and ``min_runs`` samples on, the
    item stops when the median's CI is within target, or at ``max_runs``
    samples, or once its timed runs used ``max_seconds``.

    Burst size: ``ceil(min_runs / min_rounds)`` runs for the first
    ``min_rounds`` rounds (so the first CI check sees every round), then about
    10% of the samples so far (the check cadence of :func:`run_protocol`).
    Each burst of an item whose median so far is under ``rewarm_below_ms``
    starts with ``rewarm`` untimed runs: the item before it evicted this one's
    weights and activations from the caches, and a cold first run would be
    billed. Slower items skip it: their working sets outgrow the caches anyway,
    and their re-warm runs would be most of the batch's untimed time.
    """

    def __init__(
        self,
        min_rounds: int,
        min_runs: int = 10,
        max_runs: int = 1000,
        target_rel_ci: float = 0.02,
        max_seconds: float = 10.0,
        rewarm: int = 1,
        rewarm_below_ms: float = 1.0,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if max_runs < 1:
            raise ValueError("max_runs must be >= 1")
        self.min_rounds = max(1, int(min_rounds))
        self.min_runs = max(1, min(min_runs, max_runs))
        self.max_runs = max_runs
        self.target_rel_ci = target_rel_ci
        self.budget_ns = int(max_seconds * 1e9)
        self.rewarm = max(0, int(rewarm))
        self.rewarm_below_ms = rewarm_below_ms
        self.rewarmed = 0  # untimed re-warm runs made
        self.clock = clock
        self.samples: list[float] = []
        self.rounds = 0  # bursts done
        self.steady_ns = 0  # time inside timed runs, all rounds
        self.stopped_by = ""

    @property
    def done(self) -> bool:
        return bool(self.stopped_by)

    def burst_size(self) -> int:
        first = max(1, math.ceil(self.min_runs / self.min_rounds))
        size = first if self.rounds < self.min_rounds else max(first, len(self.samples) // 10)
        return max(1, min(size, self.max_runs - len(self.samples)))

    def burst(self, run_once: Callable[[], None]) -> list[float]:
        """One round's turn: ``rewarm`` untimed runs, then a timed burst; then the stopping rule."""
        if self.done:
            raise RuntimeError("burst() after the item stopped")
        if not self.samples or _median(self.samples) < self.rewarm_below_ms:
            for _ in range(self.rewarm):
                run_once()
                self.rewarmed += 1
        got: list[float] = []
        clock = self.clock
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(self.burst_size()):
                t0 = clock()
                run_once()
                t1 = clock()
                got.append((t1 - t0) / 1e6)
                self.steady_ns += t1 - t0
        finally:
            if gc_was_enabled:
                gc.enable()
        self.samples.extend(got)
        self.rounds += 1
        self._check()
        return got

    def _check(self) -> None:
        n = len(self.samples)
        if self.rounds >= self.min_rounds and n >= self.min_runs and median_rel_ci(self.samples) <= self.target_rel_ci:
            self.stopped_by = "target"
        elif n >= self.max_runs:
            self.stopped_by = "max_runs"
        elif self.steady_ns >= self.budget_ns:
            self.stopped_by = "max_seconds"

    def summary(self) -> dict:
        """:func:`summarize` of all samples plus ``stopped_by`` and ``rounds``."""
        out = summarize(self.samples, self.target_rel_ci)
        out["stopped_by"] = self.stopped_by or "unfinished"
        out["rounds"] = self.rounds
        return out
