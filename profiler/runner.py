"""The one way measurements are taken: put models on a device, benchmark them in groups, store each row.

Every caller that measures -- ``profile ops``/``profile model``
(:mod:`edgelat.profiler.jobs`), the predictor build's kernel and whole-model
groups, fusion detection, on-demand measuring for ``predict`` and search
validation -- hands :func:`run` the items (catalog kernels, graph kernels cut
out of a file, whole models by reference) and its options:

- ``group``: items benchmarked together (one batch on the device); the budget
  (``limit``) is asked before each group, never in the middle of one;
- ``passes``: each group measured that many times over, the middle pass kept
  (:func:`median_of_passes`), after ``settle_s`` seconds of unmeasured passes;
  ``enough`` is asked between passes and while settling;
- ``rounds``: the device interleaves a batch's items over that many rounds;
- ``again``: measure items already in the table (else they are skipped, so a
  rerun after an interruption measures nothing twice);
- ``sentinel``: a :class:`~edgelat.profiler.sentinel.DriftSentinel` checked at
  the start, after a group when due, and after the last group
  (``close_sentinel``); each kernel row stores the level it was measured at.

Rows are stored as they arrive (one pass) or as soon as their group is done
(several passes). Losing the device does not raise: the summary's ``lost``
holds the error, what was stored stays, and the rerun resumes. It is the unit
a hub dispatches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import sqlite_utils

from edgelat.values import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, DeviceError, EdgelatError, revive
from edgelat.lut import store
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.sentinel import DriftSentinel, stream

# progress(done, total, key, result): after each row is stored or fails (done counts skipped items).
Progress = Callable[[int, int, str, BenchmarkResult], None]

KERNEL, MODEL = "kernel", "model"


@dataclass(frozen=True)
class Item:
    """One thing to measure: a kernel row (``kind`` kernel) or a whole-model row (``kind`` model).

    ``data`` is the model; None builds it from ``kernel`` (a catalog kernel) when its group comes."""

    key: str  # the table key (kernel key or model ref) and the batch tag
    fmt: str
    kind: str = KERNEL
    kernel: KernelSpec | None = None
    data: bytes | None = field(default=None, repr=False)
    op: str = ""  # kernel rows: the op column
    spec: dict[str, Any] | None = None  # kernel rows: stored with the row
    name: str = ""  # model rows: the model's name

    def model(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.kernel is None:
            raise ValueError(f"item {self.key!r} has neither model bytes nor a kernel to build")
        from edgelat.profiler.builders import build_model

        return build_model(self.kernel, self.fmt)


def kernel_items(specs: Iterable[KernelSpec], fmt: str) -> list[Item]:
    """Catalog kernels as items (their models are built when their group comes)."""
    return [Item(s.key, fmt, KERNEL, kernel=s, op=s.op, spec=s.to_dict()) for s in specs]


def graph_kernel_item(key: str, op: str, spec: dict[str, Any], data: bytes, fmt: str) -> Item:
    """A kernel cut out of a model file (not built from the catalog), stored as a kernel row."""
    return Item(key, fmt, KERNEL, data=data, op=op, spec=spec)


def model_item(ref: str, data: bytes, fmt: str, name: str = "") -> Item:
    """A whole model, stored as a model row under ``ref``."""
    return Item(ref, fmt, MODEL, data=data, name=name)


@dataclass
class GroupDone:
    """What :func:`run` tells ``after_group``: the group's kept results by key, and its seconds."""

    index: int
    results: dict[str, BenchmarkResult]
    seconds: float


@dataclass
class RunOptions:
    group: int = 16
    passes: int = 1
    rounds: int = 0
    settle_s: float = 0.0
    limit: Callable[[], bool] | None = None  # before each group: True ends the run (a budget spent)
    enough: Callable[[], bool] | None = None  # between passes and while settling: True ends them
    again: bool = False
    store: bool = True  # False: measure only (the caller keeps the results, e.g. fusion probes)
    fail_fast: bool = False  # a failed item raises its error (after the rows before it are stored)
    progress: Progress | None = None
    after_group: Callable[[GroupDone], None] | None = None
    sentinel: DriftSentinel | None = None
    close_sentinel: bool = True  # check the sentinel after the last group
    environment: dict[str, Any] = field(default_factory=dict)  # added to each kept row's environment (e.g. its state)


@dataclass
class RunSummary:
    requested: int = 0
    skipped: int = 0
    measured: int = 0
    unstable: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, BenchmarkResult] = field(default_factory=dict)  # kept result per key (ok or not)
    measured_seconds: float = 0.0  # inside the timed runs of the rows kept
    wall_seconds: float = 0.0
    groups: int = 0
    limited: bool = False  # ``limit`` ended the run before every group was measured
    lost: EdgelatError | None = None  # the device went away: what was stored stays

    @property
    def interrupted(self) -> str:
        return str(self.lost) if self.lost is not None else ""


class _Failed(Exception):
    """Carries a failed item's error past the lost-device handler (``fail_fast``)."""

    def __init__(self, error: EdgelatError) -> None:
        self.error = error


def median_of_passes(client: Any, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
                     passes: int, enough: Callable[[], bool] | None = None, settle_s: float = 0.0,
                     rounds: int = 0) -> dict[str, BenchmarkResult]:
    """Benchmark ``items`` in ``passes`` passes over the whole list; keep, per item (by tag),
    the pass whose median is the middle one (the lower middle for an even count; an item
    that failed in every pass keeps its error). ``enough``, asked after each pass, ends
    the passes early (a budget spent); one pass is always made. With ``settle_s``, passes
    whose figures are not kept run first, until that many seconds have gone (or ``enough``).

    Why: on a shared host (noisy neighbours on the same physical cores, invisible in the
    load average) or a phone (thermal throttling), the device's speed moves over
    seconds to minutes. The runs inside one measurement agree with each other, so
    nothing inside it shows the shift. Passes spread over time, with the middle one
    kept, are robust to a slowed pass and to a rare fast one alike; the fastest pass
    is not (it varies more between batches: docs/calibration.md). The kept row is one
    real measurement.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < settle_s and not (enough is not None and enough()):
        for _ in stream(client, items, config, protocol, rounds):  # a stream: run it to its end
            pass
    got: dict[str, list[BenchmarkResult]] = {}
    for i in range(max(1, passes)):
        if i and enough is not None and enough():
            break
        for r in stream(client, items, config, protocol, rounds):
            got.setdefault(r.tag, []).append(r)
    kept: dict[str, BenchmarkResult] = {}
    for tag, results in got.items():
        ok = sorted((r for r in results if r.ok and r.latency is not None), key=lambda r: r.latency.median)
        kept[tag] = ok[(len(ok) - 1) // 2] if ok else results[0]
    return kept


def todo_items(db: sqlite_utils.Database, device: str, config: RuntimeConfig, items: Sequence[Item],
               again: bool = False) -> list[Item]:
    """``items`` without repeats, and (unless ``again``) without those already in the device's table."""
    first: dict[str, Item] = {}
    for i in items:
        first.setdefault(i.key, i)
    unique = list(first.values())
    if again:
        return unique
    kernels = store.measured_kernel_keys(db, device, config) if any(i.kind == KERNEL for i in unique) else set()
    models = {r["model_ref"] for r in store.model_rows(db, device, config)} if any(i.kind == MODEL for i in unique) \
        else set()
    return [i for i in unique if i.key not in (kernels if i.kind == KERNEL else models)]


def run(db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig, protocol: MeasurementProtocol,
        items: Sequence[Item], options: RunOptions | None = None) -> RunSummary:
    """Measure ``items`` (those not yet in the table, all with ``again``) in groups of ``options.group``."""
    options = options or RunOptions()
    todo = todo_items(db, device, config, items, options.again)
    size = max(1, options.group)
    groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    requested = len({i.key for i in items})
    summary = RunSummary(requested=requested, skipped=requested - len(todo))
    return run_groups(db, device, client, config, protocol, groups, options, summary)


def run_groups(db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig,
               protocol: MeasurementProtocol, groups: Sequence[Sequence[Item]],
               options: RunOptions | None = None, summary: RunSummary | None = None) -> RunSummary:
    """Measure the given groups as they are (a key may come back in several groups: fusion
    probes measure the near-empty model in each); see the module docstring."""
    options = options or RunOptions()
    started = time.perf_counter()
    summary = summary or RunSummary(requested=sum(len(g) for g in groups))
    if not groups:
        return summary
    shas: dict[tuple[str, str], str] = {}
    sentinel = options.sentinel
    done_before = 0  # rows stored or failed before this group (progress)
    try:
        for index, group in enumerate(groups):
            if options.limit is not None and options.limit():
                summary.limited = True
                break
            t0 = time.perf_counter()
            if sentinel is not None and sentinel.last is None:  # the check that starts a run
                sentinel.check()
            batch = []
            for item in group:
                if (item.key, item.fmt) not in shas:
                    shas[item.key, item.fmt] = client.put_model(item.model())
                batch.append(BenchmarkItem(shas[item.key, item.fmt], item.fmt, item.key))
            by_key = {i.key: i for i in group}
            kept: dict[str, BenchmarkResult] = {}
            if options.passes <= 1 and options.settle_s <= 0:  # one pass: each row stored as it arrives
                for result in stream(client, batch, config, protocol, options.rounds):
                    kept[result.tag] = result
                    done_before += 1
                    _keep(db, device, by_key, result, options, summary, done_before)
            else:
                kept = median_of_passes(client, batch, config, protocol, options.passes, options.enough,
                                        options.settle_s, options.rounds)
                for item in group:
                    done_before += 1
                    result = kept.get(item.key) or BenchmarkResult("", config, tag=item.key, error="no result")
                    _keep(db, device, by_key, result, options, summary, done_before)
            missing = [i.key for i in group if i.key not in kept]
            if missing:
                raise DeviceError(f"the device returned no result for {', '.join(missing[:3])}")
            summary.groups += 1
            last = index == len(groups) - 1
            if sentinel is not None and ((last and options.close_sentinel) or sentinel.due()):
                sentinel.check()
            if options.after_group is not None:
                options.after_group(GroupDone(index, kept, time.perf_counter() - t0))
    except (AgentUnreachable, DeviceError) as exc:
        summary.lost = exc
    except _Failed as failed:
        summary.wall_seconds = time.perf_counter() - started
        raise failed.error from None
    summary.wall_seconds = time.perf_counter() - started
    return summary


def run_probes(db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig,
               protocol: MeasurementProtocol, groups: Sequence[Sequence[Item]], what: str,
               take: Callable[[int, dict[str, Any]], None], per_round: int,
               progress: Callable[[int, int, str], None] | None = None) -> None:
    """Measure probe groups (a build's fusion and layout probes), storing nothing: each group's
    latencies by key go to ``take(index, latencies)``. A probe that fails raises DeviceError
    naming ``what``; a lost device raises its loss. ``progress(round, rounds, message)`` after
    every ``per_round`` groups."""
    rounds = len(groups) // max(1, per_round)

    def after(done: GroupDone) -> None:
        got = {}
        for tag, result in done.results.items():
            if not result.ok or result.latency is None:
                raise DeviceError(f"{what} {tag} failed on {device}: {result.error}")
            got[tag] = result.latency
        take(done.index, got)
        if progress is not None and (done.index + 1) % per_round == 0:
            r = (done.index + 1) // per_round
            progress(r, rounds, f"{what}s, round {r}/{rounds}")

    run = run_groups(db, device, client, config, protocol, groups, RunOptions(store=False, after_group=after))
    if run.lost is not None:
        raise run.lost


def _keep(db: sqlite_utils.Database, device: str, by_key: dict[str, Item], result: BenchmarkResult,
          options: RunOptions, summary: RunSummary, done: int) -> None:
    """Store one kept result (or count its failure) and tell ``progress``."""
    item = by_key.get(result.tag)
    if item is None:
        raise DeviceError(f"device returned a result for an unknown item {result.tag!r}")
    summary.results[item.key] = result
    if options.environment:
        result.environment = {**(result.environment or {}), **options.environment}
    if result.ok and result.latency is not None:
        if options.store:
            _store(db, device, item, result, options.sentinel)
        summary.measured += 1
        summary.unstable += 0 if result.latency.stable else 1
        summary.measured_seconds += result.latency.mean * result.latency.n / 1000.0
    else:
        error = result.error or "no latency reported"
        summary.failed.append((item.key, error))
        if options.fail_fast:
            raise _Failed(revive(result.error or "DeviceError: the device reported no latency"))
    if options.progress is not None:
        options.progress(summary.skipped + done, summary.requested, item.key, result)


def _store(db: sqlite_utils.Database, device: str, item: Item, result: BenchmarkResult,
           sentinel: DriftSentinel | None) -> None:
    if item.kind == MODEL:
        store.add_model_result(db, device, item.key, item.name, result)
        return
    if sentinel is not None:
        result.environment["sentinel"] = sentinel.environment()
    else:
        result.environment["sentinel"] = {"level_before": None, "note": "not controlled: sentinel off"}
    store.add_kernel_result(db, device, item.key, item.op, item.spec or {}, result,
                            sentinel_level=sentinel.row_level() if sentinel is not None else None)
    if sentinel is not None:
        sentinel.stored(item.key)
