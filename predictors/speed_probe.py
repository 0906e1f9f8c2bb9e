"""The speed check's measurements: the build's held-out whole models measured again on the device.

The arithmetic is :mod:`edgelat.predictors.speed`'s; this module reaches the device (through the
job runner, storing nothing: the build's rows stay the "then"), for ``predict`` and ``search``.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlite_utils

from edgelat.errors import EdgelatError
from edgelat.predictors.speed import MIN_PROBES, SpeedCheck, block_share
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
    return SpeedCheck.of({name: (ms, now.get(ref)) for ref, (name, ms) in then.items()},
                         _block_shares(db, device, config, [kept[name] for name, _ in then.values()]))


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
