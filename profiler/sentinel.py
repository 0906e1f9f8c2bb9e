"""The drift sentinel: a few fixed reference kernels that tell how fast the device is right now.

A device's speed moves (a neighbour's load, a clock governor, heat). Every row
passes its own confidence test, yet two passes minutes apart can disagree by
several percent, all in the same direction. A profiling job measures the
sentinel kernels at its start, between its chunks and at its end; their
medians, relative to the first ones ever stored for the device + runtime config
(its reference state), give the device's *level* (1.05 = 5% slower than the
reference). On a hub, consecutive short jobs on one device form one run: a
job opens with the check before it while that is fresh, and closes with one
only when a check is due (:class:`Carried`). Every row stores the level it was
measured at, and its median divided by it: the figure in the reference state.

The kernels are cheap catalog kernels of three kinds (a dense convolution: the
compute units; a depthwise convolution: vector units and memory; a fully
connected layer: weight streaming), measured to a tighter confidence than rows
because each check is one number that many rows lean on.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import sqlite_utils

from edgelat.values import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.profiler.ops import KernelSpec

SENTINEL_SPECS: tuple[KernelSpec, ...] = (
    KernelSpec("conv2d", 28, 28, 32, 32, kernel=3, bn=True, act="relu"),
    KernelSpec("dwconv2d", 56, 56, 64, kernel=3, bn=True, act="relu6"),
    KernelSpec("fc", 1, 1, 512, 512),
)

#: Seconds between checks while a job runs (one at its start and one at its end besides).
DEFAULT_EVERY_S = 5.0

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


def stream(client: Any, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
           rounds: int) -> Iterator[BenchmarkResult]:
    """``client.benchmark_batch``; rounds travel only when asked (> 1), so clients written
    before rounds existed keep working."""
    return client.benchmark_batch(list(items), config, protocol, rounds=rounds) if rounds > 1 else \
        client.benchmark_batch(list(items), config, protocol)


@functools.lru_cache(maxsize=4)
def sentinel_models(fmt: str) -> tuple[bytes, ...]:
    """The sentinel kernels' models in ``fmt``, built once per process (every job checks them;
    building them costs more than a short job's own kernel)."""
    from edgelat.profiler.builders import build_model

    return tuple(build_model(s, fmt) for s in SENTINEL_SPECS)


def put_models(client: Any, fmt: str) -> list[str]:
    """Put the sentinel kernels' models in ``fmt`` on the device; their sha256s (a hub readies a
    device that dialled in with them, and every check puts them, which costs nothing once held)."""
    return [client.put_model(data) for data in sentinel_models(fmt)]


@dataclass(frozen=True)
class Carried:
    """A run's last check and when it ended (``time.perf_counter``): the opening check of the next
    run on the same device, runtime config and rounds while it is fresher than the sentinel's period.
    ``pending``: rows stored after that check by a run that did not close itself (no check was
    due); the next run's first check brackets them, as the next check of one run would."""

    check: SentinelCheck
    ended: float
    pending: tuple[str, ...] = ()

    def fresh(self, every_s: float) -> bool:
        return time.perf_counter() - self.ended < every_s


class DriftSentinel:
    """The sentinel of one run of measurements (a profiling job, a predictor build).

    :meth:`check` measures the sentinel kernels and stores the check; rows stored
    between two checks are first given the level of the one before
    (:meth:`row_level`) and, once the next check is in, the geometric mean of the
    two. The runner (:mod:`edgelat.profiler.runner`) checks at the start, after
    a group when :meth:`due`, and at the end (:meth:`close`)."""

    def __init__(self, db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig,
                 rounds: int = 0, every_s: float = DEFAULT_EVERY_S, started: float | None = None,
                 opening: "Carried | None" = None) -> None:
        self.db, self.device, self.client, self.config = db, device, client, config
        self.rounds, self.every_s = rounds, every_s
        self.started = time.perf_counter() if started is None else started
        self.checks: list[SentinelCheck] = []
        self.seconds = 0.0  # inside the sentinel's timed runs
        self._items: list[BenchmarkItem] | None = None
        self._pending: list[str] = []  # rows stored since the last check
        self._left: tuple[float | None, list[str]] | None = None  # a stale opening's pending rows and level
        self._last_at = 0.0
        if opening is not None and opening.fresh(every_s):
            # the check that ended the run before on this device stands for this run's start, as a
            # check between two chunks of one run would (it is stored already)
            c = opening.check
            self.checks.append(SentinelCheck(opening.ended - self.started, c.level, dict(c.medians), c.note))
            self._last_at = opening.ended
            self._pending = list(opening.pending)
        elif opening is not None and opening.pending:
            self._left = (opening.check.level, list(opening.pending))

    def carried(self) -> "Carried | None":
        """The last check, for the next run on this device to start from (None: no check)."""
        return Carried(self.checks[-1], self._last_at, tuple(self._pending)) if self.checks else None

    @property
    def last(self) -> SentinelCheck | None:
        return self.checks[-1] if self.checks else None

    def due(self) -> bool:
        """No check yet, or ``every_s`` since the last one ended."""
        return self.last is None or time.perf_counter() - self._last_at >= self.every_s

    def row_level(self) -> float | None:
        return self.last.level if self.last is not None else None

    def environment(self) -> dict[str, Any]:
        """What a row's environment records about the sentinel when it is stored."""
        last = self.last
        return {"level_before": last.level if last else None, "note": (last.note if last else "") or None}

    def stored(self, key: str) -> None:
        self._pending.append(key)

    def check(self) -> SentinelCheck:
        """Measure the sentinel kernels once, store the check, and bracket the rows since the last one."""
        from edgelat.lut import store

        if self._items is None:
            fmt = self.config.model_format
            shas = put_models(self.client, fmt)
            self._items = [BenchmarkItem(sha, fmt, s.key) for s, sha in zip(SENTINEL_SPECS, shas)]
        results = list(stream(self.client, self._items, self.config, SENTINEL_PROTOCOL, self.rounds))
        medians = {r.tag: r.latency.median for r in results if r.ok and r.latency is not None}
        self.seconds += sum(r.latency.mean * r.latency.n / 1000.0 for r in results if r.ok and r.latency is not None)
        note = failures(results)
        reference = store.sentinel_reference(self.db, self.device, self.config)
        if not reference:  # the first check ever on this device + config is its reference state
            store.add_sentinel_reference(self.db, self.device, self.config, medians)
            level = 1.0 if medians else None
        else:
            level = level_of(medians, reference)
            new = {k: m for k, m in medians.items() if k not in reference}
            if new:
                store.add_sentinel_reference(self.db, self.device, self.config, new)
        if level is None:
            note = "sentinel level unknown: " + (note or "no sentinel kernel comparable with the device's reference")
        store.add_sentinel_check(self.db, self.device, self.config, level, medians, note)
        before = self.row_level()
        check = SentinelCheck(time.perf_counter() - self.started, level, medians, note)
        both = bracket(before, level)
        if both is not None and self._pending:
            store.set_sentinel_level(self.db, self.device, self.config, self._pending, both)
        self._pending = []
        if self._left is not None:  # rows a stale opening left pending: between its check and this one
            left_level, keys = self._left
            self._left = None
            late = bracket(left_level, level)
            if late is not None:
                store.set_sentinel_level(self.db, self.device, self.config, keys, late)
        self.checks.append(check)
        self._last_at = time.perf_counter()
        return check

    def close(self) -> SentinelCheck | None:
        """The check that ends a run: only when rows were stored since the last one."""
        return self.check() if self._pending else None


def bracket(before: float | None, after: float | None) -> float | None:
    """The level of rows measured between two checks: their geometric mean, or the one known."""
    if before is not None and after is not None:
        return math.sqrt(before * after)
    return before if before is not None else after
