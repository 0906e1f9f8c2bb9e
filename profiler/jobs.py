"""Profiling jobs: measure kernels or whole models on a device into its table.

A job builds one model per kernel, sends each to the device once (by content
hash), streams the batch in chunks (each measured on the device in interleaved
rounds; drift-sentinel checks at the start, every few seconds and at the end),
and stores every result the moment it arrives. A job that dies halfway (agent killed, cable pulled) keeps what it measured, and the
rerun skips it: re-profiling is idempotent unless ``force`` is set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import sqlite_utils

from edgelat.agents.client import DeviceClient
from edgelat.agents.types import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, BadInput, CorruptModel, DeviceError, revive
from edgelat.lut import store
from edgelat.profiler.builders import build_model
from edgelat.profiler.intake import ModelFile, model_ref_for, read_model  # noqa: F401  (model_ref_for: callers import it from here too)
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.sentinel import SENTINEL_PROTOCOL, SENTINEL_SPECS, SentinelCheck, failures, level_of

# progress(done, total, tag, result): called after each kernel is stored or fails.
Progress = Callable[[int, int, str, BenchmarkResult], None]


#: Rounds a batch's kernels are interleaved over on the device (0 or 1: one by one).
DEFAULT_ROUNDS = 4
#: Kernels per chunk: every chunk is one batch (its sessions stay open on the device together).
DEFAULT_CHUNK = 16
#: Seconds between sentinel checks: one after the first chunk that ends this long after the
#: last check (and always one at the start and one at the end).
DEFAULT_SENTINEL_EVERY_S = 5.0


@dataclass
class JobSummary:
    """What a profiling job did; ``measured_seconds`` is time spent inside timed runs of
    stored rows, ``sentinel_seconds`` the same for the drift sentinel's checks."""

    device: str
    config: RuntimeConfig
    requested: int = 0
    skipped: int = 0
    measured: int = 0
    unstable: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    measured_seconds: float = 0.0
    sentinel_seconds: float = 0.0
    wall_seconds: float = 0.0
    rounds: int = 0
    sentinel: list[SentinelCheck] = field(default_factory=list)
    interrupted: str = ""  # why the batch stopped early (the rerun resumes)

    @property
    def levels(self) -> list[float]:
        return [c.level for c in self.sentinel if c.level is not None]

    @property
    def drift(self) -> float | None:
        """Largest over smallest sentinel level seen in this job, minus 1 (None: fewer than two)."""
        levels = self.levels
        return max(levels) / min(levels) - 1.0 if len(levels) >= 2 else None

    def sentinel_dict(self) -> dict:
        levels = self.levels
        notes = sorted({c.note for c in self.sentinel if c.note})
        return {
            "checks": [c.to_dict() for c in self.sentinel],
            "first_level": levels[0] if levels else None,
            "last_level": levels[-1] if levels else None,
            "min_level": min(levels) if levels else None,
            "max_level": max(levels) if levels else None,
            "drift": self.drift,
            "notes": notes,
        }

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "runtime": self.config.runtime,
            "threads": self.config.threads,
            "provider": self.config.provider,
            "requested": self.requested,
            "skipped": self.skipped,
            "measured": self.measured,
            "unstable": self.unstable,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "measured_seconds": round(self.measured_seconds, 3),
            "sentinel_seconds": round(self.sentinel_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "rounds": self.rounds,
            "sentinel": self.sentinel_dict(),
            "interrupted": self.interrupted or None,
        }


def _unique(specs: Sequence[KernelSpec]) -> list[KernelSpec]:
    seen: dict[str, KernelSpec] = {}
    for spec in specs:
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def _batch(client: DeviceClient, items: list[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
           rounds: int) -> Iterator[BenchmarkResult]:
    # rounds travel only when asked, so clients written before rounds existed keep working
    return client.benchmark_batch(items, config, protocol, rounds=rounds) if rounds > 1 else \
        client.benchmark_batch(items, config, protocol)


def _check_sentinel(db: sqlite_utils.Database, device: str, client: DeviceClient, items: list[BenchmarkItem],
                    config: RuntimeConfig, rounds: int, started: float, summary: JobSummary) -> SentinelCheck:
    """Measure the sentinel kernels once and turn them into a level (stored as a check)."""
    results = list(_batch(client, items, config, SENTINEL_PROTOCOL, rounds))
    medians = {r.tag: r.latency.median for r in results if r.ok and r.latency is not None}
    summary.sentinel_seconds += sum(r.latency.mean * r.latency.n / 1000.0 for r in results
                                    if r.ok and r.latency is not None)
    note = failures(results)
    reference = store.sentinel_reference(db, device, config)
    if not reference:  # the first check ever on this device + config is its reference state
        store.add_sentinel_reference(db, device, config, medians)
        level = 1.0 if medians else None
    else:
        level = level_of(medians, reference)
        store.add_sentinel_reference(db, device, config, {k: m for k, m in medians.items() if k not in reference})
    if level is None:
        note = note or "no sentinel kernel comparable with the device's reference"
        note = f"sentinel level unknown: {note}"
    store.add_sentinel_check(db, device, config, level, medians, note)
    check = SentinelCheck(time.perf_counter() - started, level, medians, note)
    summary.sentinel.append(check)
    return check


def _bracket(before: float | None, after: float | None) -> float | None:
    """The level of rows measured between two checks: their geometric mean, or the one known."""
    if before is not None and after is not None:
        return math.sqrt(before * after)
    return before if before is not None else after


def profile_kernels(
    db: sqlite_utils.Database,
    device: str,
    client: DeviceClient,
    specs: Sequence[KernelSpec],
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    force: bool = False,
    progress: Progress | None = None,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = DEFAULT_CHUNK,
    sentinel: bool = True,
    sentinel_every_s: float = DEFAULT_SENTINEL_EVERY_S,
) -> JobSummary:
    """Measure each kernel not yet in the device's table (all of them with ``force``).

    The kernels go in chunks of ``chunk``, each one batch measured on the device in
    ``rounds`` interleaved rounds. With ``sentinel``, the drift sentinel
    (:mod:`edgelat.profiler.sentinel`) is checked before the first chunk, after
    the first chunk that ends ``sentinel_every_s`` after the last check (0: after
    every chunk), and after the last chunk; a row is stored as it arrives with the
    last level checked, then given the geometric mean of the levels before and
    after it once the next check is in. Losing the device mid-batch does not raise: the
    summary's ``interrupted`` says why and how many rows were kept, so the caller
    can tell the user to rerun.
    """
    started = time.perf_counter()
    specs = _unique(specs)
    summary = JobSummary(device=device, config=config, requested=len(specs), rounds=max(0, rounds))
    done = set() if force else store.measured_kernel_keys(db, device, config)
    todo = [s for s in specs if s.key not in done]
    summary.skipped = len(specs) - len(todo)
    if not todo:
        summary.wall_seconds = time.perf_counter() - started
        return summary

    fmt = config.model_format
    by_tag: dict[str, KernelSpec] = {}
    items: list[BenchmarkItem] = []
    count = 0
    try:
        for spec in todo:
            sha = client.put_model(build_model(spec, fmt))
            items.append(BenchmarkItem(model_sha256=sha, model_format=fmt, tag=spec.key))
            by_tag[spec.key] = spec
        sentinel_items = [BenchmarkItem(client.put_model(build_model(s, fmt)), fmt, s.key)
                          for s in SENTINEL_SPECS] if sentinel else []
        level = _check_sentinel(db, device, client, sentinel_items, config, rounds, started, summary) \
            if sentinel else None
        stored: list[str] = []  # rows since the last check
        last_check = time.perf_counter()
        for at in range(0, len(items), max(1, chunk)):
            for result in _batch(client, items[at : at + max(1, chunk)], config, protocol, rounds):
                count += 1
                spec = by_tag.get(result.tag)
                if spec is None:
                    raise DeviceError(f"device returned a result for an unknown kernel {result.tag!r}")
                if result.ok and result.latency is not None:
                    if level is not None:
                        result.environment["sentinel"] = {"level_before": level.level, "note": level.note or None}
                    else:
                        result.environment["sentinel"] = {"level_before": None, "note": "not controlled: sentinel off"}
                    store.add_kernel_result(db, device, spec.key, spec.op, spec.to_dict(), result,
                                            sentinel_level=level.level if level is not None else None)
                    stored.append(spec.key)
                    summary.measured += 1
                    summary.unstable += 0 if result.latency.stable else 1
                    summary.measured_seconds += result.latency.mean * result.latency.n / 1000.0
                else:
                    summary.failed.append((spec.key, result.error or "no latency reported"))
                if progress is not None:
                    progress(summary.skipped + count, summary.requested, spec.key, result)
            last_chunk = at + max(1, chunk) >= len(items)
            if sentinel and (last_chunk or time.perf_counter() - last_check >= sentinel_every_s):
                after = _check_sentinel(db, device, client, sentinel_items, config, rounds, started, summary)
                last_check = time.perf_counter()
                both = _bracket(level.level if level else None, after.level)
                if both is not None and stored:
                    store.set_sentinel_level(db, device, config, stored, both)
                stored = []
                level = after
    except (AgentUnreachable, DeviceError) as exc:
        summary.interrupted = (
            f"{exc} ({summary.measured} new rows kept; rerun the same command to measure the rest)"
        )
    summary.wall_seconds = time.perf_counter() - started
    return summary


def profile_model(
    db: sqlite_utils.Database,
    device: str,
    client: DeviceClient,
    data: bytes,
    fmt: str,
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    model_ref: str | None = None,
    name: str = "",
    state: str = "warm",
    settle_s: float | None = None,
) -> BenchmarkResult:
    """Measure one whole model and store it under ``model_ref`` (default: its content hash).

    ``data`` must be self-contained (what :func:`edgelat.profiler.intake.read_model` returns for a
    file). A model the device refuses (over its upload cap) or rejects raises the device's error
    class (e.g. :class:`~edgelat.errors.CorruptModel`); nothing is stored. ``state`` ``sustained``
    first runs the model unmeasured for ``settle_s`` (default :data:`~edgelat.profiler.states.SETTLE_S`,
    as the predictor build settles) and stores the row apart from the warm one
    (:func:`~edgelat.profiler.states.state_ref`); the row's environment records the state."""
    from edgelat.profiler.states import SETTLE_S, check_state, settle, state_name, state_ref

    check_state(state)
    sha = client.put_model(data)
    item = BenchmarkItem(model_sha256=sha, model_format=fmt, tag=name)
    settled = 0.0
    if state == "sustained":
        settled = settle(client, [item], config, protocol, SETTLE_S if settle_s is None else settle_s)
    result = client.benchmark(item, config, protocol)
    if not result.ok or result.latency is None:
        raise revive(result.error or "DeviceError: the device reported no latency")
    result.environment = {**(result.environment or {}), "state": state, "settled_s": round(settled, 1)}
    ref = model_ref or model_ref_for(data)
    store.add_model_result(db, device, state_ref(ref, state), state_name(name, state), result)
    return result


def profile_model_file(
    db: sqlite_utils.Database,
    device: str,
    path: str | Path,
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    runner: str | None = None,
    runtime_given: bool = True,
    state: str = "warm",
    settle_s: float | None = None,
) -> tuple[ModelFile, BenchmarkResult]:
    """Read a model file (:func:`~edgelat.profiler.intake.read_model`), measure it whole on a
    named device and store the row: what ``edgelat profile model`` and the Python API call.

    ``runtime_given`` False lets the file's format choose the runtime (LiteRT for TFLite);
    a phone's runner decides it (:func:`~edgelat.devices.runtime.resolve_runtime`).
    """
    from edgelat.devices.registry import Registry
    from edgelat.devices.runtime import resolve_runtime

    m = read_model(path)
    registry = Registry(db)
    try:
        config = resolve_runtime(registry.get(device), runner, config, runtime_given, m.format)
    except BadInput as exc:
        raise BadInput(f"{m.name}: {exc}") from exc
    with registry.connect(device, runner=runner) as client:
        try:
            result = profile_model(db, device, client, m.data, m.format, config, protocol, model_ref=m.ref, name=m.name,
                                   state=state, settle_s=settle_s)
        except (BadInput, CorruptModel) as exc:  # refused (upload cap) or rejected by the device
            raise type(exc)(f"{m.path}: {exc}") from exc
    registry.touch(device, "available")
    return m, result
