"""The speed check's measurements: the build's held-out whole models measured again on the device.

The arithmetic is :mod:`edgelat.predictors.speed`'s; this module reaches the device (through the
job runner, storing nothing: the build's rows stay the "then"), for ``predict`` and ``search``.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlite_utils

from edgelat.errors import EdgelatError
from edgelat.predictors.speed import MIN_AGE_S, MIN_PROBES, RECENT_S, SpeedCheck, block_share
from edgelat.values import RuntimeConfig


def check_speed(db: sqlite_utils.Database, device: str, config: RuntimeConfig, client: Any = None) -> SpeedCheck:
    """Measure the build's held-out whole models on the device now (storing nothing: the build's
    rows are the "then") and compare: :class:`~edgelat.predictors.speed.SpeedCheck`. Without a
    build's held-out models, or with the device out of reach, a check without a factor, its
    note saying why."""
    from edgelat.devices.registry import Registry
    from edgelat.predictors.calibration import measured_models
    from edgelat.predictors.sampling import default_models
    from edgelat.profiler import runner
    from edgelat.profiler.jobs import model_ref_for

    fmt = config.model_format
    kept = {m["name"]: m for m in measured_models(db, device, config, role="holdout")}
    items, then = [], {}
    for name, role, specs in default_models():
        if role != "holdout" or name not in kept:
            continue
        data = _probe_bytes(name, tuple(specs), fmt)
        if model_ref_for(data) != kept[name]["model_ref"]:  # built by another version of the builder
            continue
        items.append(runner.model_item(kept[name]["model_ref"], data, fmt, name))
        then[kept[name]["model_ref"]] = (name, kept[name]["measured_ms"])
    if len(items) < MIN_PROBES:
        return SpeedCheck.skipped(f"the predictor build of {device} left {len(items)} held-out models to measure "
                                  "again (rebuild with 'edgelat predictor build')")
    age = _age_s(db, device, config, list(then))
    if age is not None and age < MIN_AGE_S:
        return SpeedCheck.skipped(f"the build measured its held-out models {age / 60:.0f} minutes ago (the check "
                                  f"starts {MIN_AGE_S / 60:.0f} minutes after)")
    try:
        if client is not None:
            run = _measure(db, device, client, config, items)
        else:
            with Registry(db).connect(device) as own:
                run = _measure(db, device, own, config, items)
    except EdgelatError as exc:
        return SpeedCheck.skipped(f"{device} cannot be reached now ({exc})")
    if run.lost is not None:
        return SpeedCheck.skipped(f"{device} was lost while measuring ({run.lost})")
    now = {ref: r.latency.median for ref, r in run.results.items() if r.ok and r.latency is not None}
    then_now, checks = _with_recent(db, device, config, then, now)
    return SpeedCheck.of(then_now, _block_shares(db, device, config, [kept[name] for name, _ in then.values()]), checks)


def _age_s(db: sqlite_utils.Database, device: str, config: RuntimeConfig, refs: list[str]) -> float | None:
    """Seconds since the newest of the build's measurements of ``refs`` (None without a time)."""
    import time

    from edgelat.lut.store import models_measured_at

    at = models_measured_at(db, device, config, refs)
    return None if at is None else time.time() - at


def _with_recent(db: sqlite_utils.Database, device: str, config: RuntimeConfig, then: dict[str, tuple[str, float]],
                 now: dict[str, float]) -> tuple[dict[str, tuple[float, float | None]], int]:
    """Store this check and combine it with the device's checks of the last ``RECENT_S``
    against the same build rows: per probe, ``{name: (then_ms, median of now_ms)}``, and how
    many checks went into the medians. A probe that failed now stays failed. Where the
    database takes no write (read-only, full), this check alone."""
    import sqlite3
    import statistics
    import time

    from edgelat.lut import predictors_store

    at = time.time()
    try:
        predictors_store.save_speed_probes(db, device, config, [(ref, then[ref][1], ms) for ref, ms in now.items()], at)
        recent = predictors_store.recent_speed_probes(db, device, config, at - RECENT_S)
    except (sqlite3.Error, EdgelatError):
        recent = [{"model_ref": ref, "then_ms": then[ref][1], "now_ms": ms} for ref, ms in now.items()]
    out: dict[str, tuple[float, float | None]] = {}
    checks = 1
    for ref, (name, then_ms) in then.items():
        values = [r["now_ms"] for r in recent if r["model_ref"] == ref and r["then_ms"] == then_ms]
        out[name] = (then_ms, statistics.median(values) if ref in now and values else None)
        checks = max(checks, len(values))
    return out, checks


@functools.lru_cache(maxsize=16)
def _probe_bytes(name: str, specs: tuple[Any, ...], fmt: str) -> bytes:
    """A held-out model's file, built once per process (the builder is deterministic with seed 0,
    as the build made it; a predict or search in a loop measures the probes each time, not
    builds them)."""
    from edgelat.profiler.builders import build_model

    return build_model(list(specs), fmt, seed=0)


def _block_shares(db: sqlite_utils.Database, device: str, config: RuntimeConfig,
                  models: list[dict[str, Any]]) -> dict[str, float] | None:
    """Per probe, the share of its kernel sum (as the device's predictor prices it) in
    inverted-residual blocks; None without a predictor that prices them all."""
    from edgelat.predictors.calibration import group_sums
    from edgelat.predictors.kernel import KernelPredictor

    predictor = KernelPredictor.load(db, device, config)
    if predictor is None or any(predictor.missing(m["kernels"]) for m in models):
        return None
    return {m["name"]: block_share(group_sums(m["kernels"], predictor.predict_specs(m["kernels"]))) for m in models}


def _measure(db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig, items: list[Any]) -> Any:
    from edgelat.predictors.sampling import MODEL_PROTOCOL
    from edgelat.profiler import runner

    return runner.run(db, device, client, config, MODEL_PROTOCOL, items,
                      runner.RunOptions(group=len(items), again=True, store=False))
