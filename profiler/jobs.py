"""Profiling jobs: measure kernels or whole models on a device into its table.

What ``profile ops`` and ``profile model`` run, through the one job runner
(:mod:`edgelat.profiler.runner`): a job builds one model per kernel, sends each
to the device once (by content hash), streams the batch in chunks (each
measured on the device in interleaved rounds; drift-sentinel checks at the
start, every few seconds and at the end), and stores every result the moment it
arrives. A job that dies halfway (agent killed, cable pulled) keeps what it
measured, and the rerun skips it: re-profiling is idempotent unless ``force`` is set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import sqlite_utils

from edgelat.agents.client import DeviceClient
from edgelat.values import BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel
from edgelat.profiler import runner
from edgelat.profiler.intake import ModelFile, model_ref_for, read_model  # noqa: F401  (model_ref_for: callers import it from here too)
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.runner import Progress  # noqa: F401  (progress(done, total, key, result), per row)
from edgelat.profiler.sentinel import DEFAULT_EVERY_S, Carried, DriftSentinel, SentinelCheck


#: Rounds a batch's kernels are interleaved over on the device (0 or 1: one by one).
DEFAULT_ROUNDS = 4
#: Kernels per chunk: every chunk is one batch (its sessions stay open on the device together).
DEFAULT_CHUNK = 16
#: Seconds between sentinel checks: one after the first chunk that ends this long after the
#: last check (and always one at the start and one at the end).
DEFAULT_SENTINEL_EVERY_S = DEFAULT_EVERY_S


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
    carried: Carried | None = None  # the last sentinel check, for the next run on the device to start from

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
    sentinel_opening: Carried | None = None,
    sentinel_close: bool = True,
) -> JobSummary:
    """Measure each kernel not yet in the device's table (all of them with ``force``).

    The kernels go in chunks of ``chunk``, each one batch measured on the device in
    ``rounds`` interleaved rounds (:func:`edgelat.profiler.runner.run`). With ``sentinel``, the drift sentinel
    (:mod:`edgelat.profiler.sentinel`) is checked before the first chunk, after
    the first chunk that ends ``sentinel_every_s`` after the last check (0: after
    every chunk), and after the last chunk; a row is stored as it arrives with the
    last level checked, then given the geometric mean of the levels before and
    after it once the next check is in. Losing the device mid-batch does not raise: the
    summary's ``interrupted`` says why and how many rows were kept, so the caller
    can tell the user to rerun. ``sentinel_opening``: the last check of the run before on this
    device (:meth:`DriftSentinel.carried`, same config and rounds) starts this one while it is fresh.
    ``sentinel_close`` False: the closing check only when one is due; rows after the last check
    wait in ``summary.carried`` for the next run's first check (a chain of short jobs on one device).
    """
    return profile_items(db, device, client, runner.kernel_items(specs, config.model_format), config, protocol,
                         force, progress, rounds, chunk, sentinel, sentinel_every_s, sentinel_opening, sentinel_close)


def profile_items(
    db: sqlite_utils.Database,
    device: str,
    client: DeviceClient,
    items: Sequence[runner.Item],
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    force: bool = False,
    progress: Progress | None = None,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = DEFAULT_CHUNK,
    sentinel: bool = True,
    sentinel_every_s: float = DEFAULT_SENTINEL_EVERY_S,
    sentinel_opening: Carried | None = None,
    sentinel_close: bool = True,
) -> JobSummary:
    """:func:`profile_kernels` for runner items (catalog kernels, kernels cut out of a file)."""
    started = time.perf_counter()
    drift = DriftSentinel(db, device, client, config, rounds, sentinel_every_s, started,
                          opening=sentinel_opening) if sentinel else None
    run = runner.run(db, device, client, config, protocol, items,
                     runner.RunOptions(group=chunk, rounds=rounds, again=force, progress=progress, sentinel=drift,
                                       close_sentinel=sentinel_close))
    summary = JobSummary(device=device, config=config, requested=run.requested, skipped=run.skipped,
                         measured=run.measured, unstable=run.unstable, failed=run.failed,
                         measured_seconds=run.measured_seconds, rounds=max(0, rounds))
    if drift is not None:
        summary.sentinel, summary.sentinel_seconds = drift.checks, drift.seconds
        summary.carried = drift.carried()
    if run.lost is not None:
        summary.interrupted = f"{run.lost} ({run.measured} new rows kept; rerun the same command to measure the rest)"
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
    from edgelat.profiler.states import SETTLE_S, check_state, state_name, state_ref

    check_state(state)
    settle = (SETTLE_S if settle_s is None else settle_s) if state == "sustained" else 0.0
    ref = state_ref(model_ref or model_ref_for(data), state)
    run = runner.run(db, device, client, config, protocol, [runner.model_item(ref, data, fmt, state_name(name, state))],
                     runner.RunOptions(group=1, again=True, fail_fast=True, settle_s=settle,
                                       environment={"state": state, "settled_s": settle}))
    if run.lost is not None:
        raise run.lost
    return run.results[ref]


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
