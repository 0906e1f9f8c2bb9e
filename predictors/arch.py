"""Architecture-level latency predictor: a space's encoding -> latency on one device.

The models are :mod:`edgelat.predictors.ridge` (a ridge on log-latency) and
:mod:`edgelat.predictors.fewshot` (the same with a prior borrowed from other devices);
this module gathers a device's training rows, fits, validates and stores them.

Fitted predictors live in the ``arch_predictors`` table, one per
(space, device, config key); see :func:`save_predictor`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import sqlite_utils

from edgelat.errors import BadInput
from edgelat.lut import archs_store
from edgelat.lut.archs_store import IMPORTED_CONFIG
from edgelat.predictors.fewshot import FewShotPredictor, source_sets
from edgelat.predictors.ridge import ArchPredictor, LinearLogModel

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.spaces.space import SearchSpace
    from edgelat.values import RuntimeConfig


# ---------------------------------------------------------------- training data
def config_key_for(db: sqlite_utils.Database, device: str, config: "RuntimeConfig") -> str:
    """The config key a device's arch predictor is stored under.

    Devices known only from imported measurements have no runtime config (the
    public datasets do not say how they ran), so theirs is ``"imported"``.
    """
    from edgelat.devices.registry import Registry

    if Registry(db).get(device).kind == "imported":
        return IMPORTED_CONFIG
    return config.key()


def training_set(
    space: "SearchSpace", measured: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(arch strings, genotypes, latencies) of measured rows, parsed once by the space."""
    archs = sorted(measured)
    pop = space.from_strings(archs)
    y = np.array([measured[a] for a in archs], dtype=np.float64)
    return archs, pop, y


# ---------------------------------------------------------------- persistence
def save_predictor(
    db: sqlite_utils.Database,
    space_name: str,
    device: str,
    config_key: str,
    model: LinearLogModel,
    *,
    n_samples: int,
    fit_seconds: float,
    metrics: dict[str, Any],
    validation: str,
    sources: Sequence[str] = (),
) -> None:
    """Store (replace) the fitted predictor of (space, device, config) with its metadata."""
    archs_store.save_predictor_row(db, {
        "space": space_name,
        "device": device,
        "config_key": config_key,
        "kind": model.kind,
        "model_json": json.dumps(model.to_dict()),
        "n_samples": int(n_samples),
        "n_features": int(model.coef_.shape[0]),
        "fit_seconds": float(fit_seconds),
        "metrics_json": json.dumps(metrics),
        "validation": validation,
        "sources_json": json.dumps(list(sources)),
        "fitted_at": time.time(),
    })


def load_predictor(
    db: sqlite_utils.Database, space_name: str, device: str, config_key: str
) -> tuple[LinearLogModel, dict[str, Any]] | None:
    """The stored predictor and its metadata row, or None when none was fitted."""
    row = archs_store.predictor_row(db, space_name, device, config_key)
    if row is None:
        return None
    state = json.loads(row["model_json"])
    if state["kind"] == "fewshot":
        model: LinearLogModel = FewShotPredictor.from_dict(state)
    else:
        model = ArchPredictor.from_dict(state)
    meta = dict(row)
    meta["metrics"] = json.loads(row["metrics_json"] or "{}")
    meta["sources"] = json.loads(row["sources_json"] or "[]")
    return model, meta


# ---------------------------------------------------------------- fitting a device
HOLDOUT_MIN = 50  # from this many samples on, validate on a held-out 20%; below, leave-one-out


def _fit_one(space: "SearchSpace", X: np.ndarray, y: np.ndarray, sources: dict[str, Any] | None) -> LinearLogModel:
    if sources is None:
        return ArchPredictor(space).fit(X, y)
    return FewShotPredictor(space).fit(X, y, sources)


#: with fewer training rows than this, ``fit`` compares borrowing from other devices with
#: fitting alone (leave-one-out over the training rows) and keeps the better
AUTO_FEW_SHOT_MAX = 200


def _loo_mape(space: "SearchSpace", X: np.ndarray, y: np.ndarray, sources: dict[str, Any] | None) -> float:
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = _fit_one(space, X[keep], y[keep], sources).predict(X[i : i + 1])[0]
    return float(np.mean(np.abs(pred - y) / y))


def _choose_few_shot(space: "SearchSpace", X: np.ndarray, y: np.ndarray,
                     sources: dict[str, Any]) -> tuple[bool, str]:
    """Whether borrowing from ``sources`` predicts the device's training rows better (and why)."""
    if len(sources) < 2:
        return False, f"{len(sources)} other device(s) have enough measurements in the space to borrow from (2 needed)"
    if len(y) > AUTO_FEW_SHOT_MAX:
        return False, f"{len(y)} training architectures are enough to fit alone"
    alone, borrowed = _loo_mape(space, X, y, None), _loo_mape(space, X, y, sources)
    verdict = borrowed < alone
    return verdict, (f"leave-one-out over the {len(y)} training architectures: MAPE {100 * borrowed:.1f}% borrowing "
                     f"from {len(sources)} device(s), {100 * alone:.1f}% alone")


def fit_device_predictor(
    db: sqlite_utils.Database,
    space: "SearchSpace",
    device: str,
    config: "RuntimeConfig",
    few_shot: bool | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit, validate and store the arch predictor of (space, device, config); returns the summary.

    Training rows are the device's measured architectures (imported and
    profiled). ``samples`` keeps only that many random rows for training (to
    adapt from a few measurements, or to see how few suffice): every other
    measured row then validates. Otherwise the metrics come from a held-out
    20% (at least :data:`HOLDOUT_MIN` rows) or from leave-one-out refits, and
    the stored model is refitted on every row. ``few_shot=True`` builds the prior
    from the other devices' measurements in the space
    (:class:`~edgelat.predictors.fewshot.FewShotPredictor`); ``False`` fits alone;
    ``None`` (the default) decides by itself: with few training rows it keeps
    whichever of the two predicts them better out of sample, and the summary's
    ``few_shot_reason`` says which and why.
    """
    from edgelat.predictors.metrics import report

    ck = config_key_for(db, device, config)
    measured = archs_store.measured_archs(db, space.name, device, ck)
    n = len(measured)
    if n < 2:
        raise BadInput(
            f"{device!r} has {n} measured {space.name} architectures (need at least 2); import some with "
            f"'edgelat lut import-archs FILE --space {space.name}' or profile them on the device"
        )
    archs, pop, y = training_set(space, measured)
    X = space.encode(pop).astype(np.float64)
    sources = None
    source_names: list[str] = []
    if few_shot is not False:
        raw = source_sets(db, space, exclude_device=device)
        sources = {name: (space.encode(space.from_strings(a)).astype(np.float64), v) for name, (a, v) in raw.items()}
        # fit the source predictors once (they do not depend on the target's split)
        sources = {name: ArchPredictor(space).fit(Xs, ys) for name, (Xs, ys) in sources.items()}

    rng = np.random.default_rng(seed)
    if samples is not None:
        if samples < 2:
            raise BadInput(f"--samples must be at least 2, got {samples}")
        if samples >= n:
            raise BadInput(f"--samples {samples} leaves nothing to validate on: {device!r} has {n} measured architectures")
        order = rng.permutation(n)
        train, val = order[:samples], order[samples:]
    elif n >= HOLDOUT_MIN:
        order = rng.permutation(n)
        n_val = max(1, n // 5)
        val, train = order[:n_val], order[n_val:]
    else:
        train, val = np.arange(n), None
    reason = "asked for (--few-shot)" if few_shot else "asked not to (--no-few-shot)"
    if few_shot is None:
        chosen, reason = _choose_few_shot(space, X[train], y[train], sources or {})
        if not chosen:
            sources = None
    source_names = sorted(sources) if sources else []

    if samples is not None:
        t0 = time.perf_counter()
        model = _fit_one(space, X[train], y[train], sources)
        fit_seconds = time.perf_counter() - t0
        pred = model.predict(X[val])
        validation = f"held-out: the {len(val)} measured architectures not among the {samples} training samples"
        n_train, y_val = samples, y[val]
    else:
        if val is not None:
            pred = _fit_one(space, X[train], y[train], sources).predict(X[val])
            y_val = y[val]
            validation = f"held-out: a random 20% ({len(val)} rows) predicted by a fit on the other {len(train)}"
        else:
            pred = np.empty(n)
            for i in range(n):
                keep = np.arange(n) != i
                pred[i] = _fit_one(space, X[keep], y[keep], sources).predict(X[i : i + 1])[0]
            y_val = y
            validation = f"leave-one-out over the {n} measured architectures"
        t0 = time.perf_counter()
        model = _fit_one(space, X, y, sources)
        fit_seconds = time.perf_counter() - t0
        n_train = n
    metrics = report(y_val, pred)
    save_predictor(
        db, space.name, device, ck, model, n_samples=n_train, fit_seconds=fit_seconds,
        metrics=metrics, validation=validation, sources=source_names,
    )
    return {
        "space": space.name,
        "device": device,
        "config_key": ck,
        "kind": model.kind,
        "n_samples": n_train,
        "n_measured": n,
        "fit_seconds": round(fit_seconds, 4),
        "validation": validation,
        "metrics": metrics,
        "sources": source_names,
        "few_shot": bool(source_names),
        "few_shot_reason": reason,
    }
