"""Architecture-level latency predictor: a space's encoding -> latency on one device.

Why a ridge on log-latency: on the public NAS-Bench-201, FBNet and OFA
measurements an architecture's latency is close to a sum of per-choice costs,
so a linear model over the one-hot encoding reaches the measurement noise with
a few hundred samples (MLPs and boosted trees were tried and did worse at that
size), it answers a batch with one matrix product (millions per second), and it
persists as a plain JSON vector. The log target keeps the relative error even
across fast and slow architectures and makes predictions positive.

The penalty is chosen per fit by exact leave-one-out error over a grid (one SVD),
and those leave-one-out predictions are kept as an honest accuracy estimate.

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

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.values import RuntimeConfig
    from edgelat.search.space import SearchSpace

ALPHAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# Config key of predictors for devices known only from imported measurements: the
# imported numbers carry no runtime config, so one predictor serves any config.
IMPORTED_CONFIG = "imported"
TABLE = "arch_predictors"


def single_blas_thread() -> Any:
    """A context that runs BLAS on one thread.

    The matrices here are small (features x features); on a busy host, OpenBLAS's
    second thread spins against other processes and makes them many times slower
    (figures: docs/measurements.md). Falls back to a no-op without threadpoolctl
    (a scikit-learn dependency).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def check_xy(X: Any, y: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise BadInput(f"expected a 2-D feature matrix, got shape {X.shape}")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != X.shape[0]:
        raise BadInput(f"{X.shape[0]} architectures but {y.shape[0]} latencies")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y <= 0)):
        raise BadInput("latencies must be positive finite milliseconds")
    return X, y


class LinearLogModel:
    """Shared by the arch-level predictors: ``latency = exp(X @ coef_ + intercept_)``."""

    kind = "linear"
    coef_: np.ndarray
    intercept_: float

    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "coef_"):
            raise BadInput(f"{type(self).__name__} is not fitted yet; call fit() first")
        if X.shape[1] != self.coef_.shape[0]:
            raise BadInput(f"expected {self.coef_.shape[0]} features, got {X.shape[1]}")

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency in ms for each row of the encoded batch ``X``."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise BadInput(f"expected a 2-D feature matrix, got shape {X.shape}")
        self._check_fitted(X)
        coef = self.coef_.astype(X.dtype, copy=False) if X.dtype == np.float32 else self.coef_
        return np.exp(X @ coef + self.intercept_).astype(np.float64, copy=False)

    def predict_pop(self, space: "SearchSpace", pop: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of genotypes ``pop`` of ``space``."""
        return self.predict(space.encode(pop))

    # persistence -------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (fitted weights and hyper-parameters)."""
        return {"kind": self.kind, "coef": self.coef_.tolist(), "intercept": float(self.intercept_), **self._state()}


class ArchPredictor(LinearLogModel):
    """Ridge regression on log-latency over an architecture encoding.

    ``alphas`` is the penalty grid searched by exact leave-one-out error.
    Fitted state: ``coef_``, ``intercept_``, ``alpha_``, ``n_samples_``,
    ``loo_pred_`` (leave-one-out predictions in ms, same order as the fit rows).
    """

    kind = "ridge"

    def __init__(self, space: "SearchSpace | None" = None, alphas: Sequence[float] = ALPHAS) -> None:
        self.space = space
        self.alphas = alphas

    def fit(self, X: Any, y_ms: Any) -> "ArchPredictor":
        X, y = check_xy(X, y_ms)
        assert y is not None
        n = X.shape[0]
        if n < 2:
            raise BadInput(f"need at least 2 measured architectures to fit, got {n}")
        with single_blas_thread():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> "ArchPredictor":
        n = X.shape[0]
        t = np.log(y)
        xm, tm = X.mean(axis=0), t.mean()
        Xc, tc = X - xm, t - tm
        # eigen-decomposition of the (F x F) Gram matrix rather than an SVD of X:
        # several times cheaper for n >> F, and it gives exact leave-one-out leverages
        s2, V = np.linalg.eigh(Xc.T @ Xc)
        s2 = np.maximum(s2, 0.0)
        Z = Xc @ V  # (n, F): the rows in the eigenbasis
        Zt = V.T @ (Xc.T @ tc)
        Z2 = Z * Z
        best: tuple[float, float, np.ndarray] | None = None
        for alpha in self.alphas:
            inv = 1.0 / (s2 + alpha)
            fitted = Z @ (inv * Zt)
            lev = Z2 @ inv + 1.0 / n
            resid = (tc - fitted) / np.maximum(1.0 - lev, 1e-9)
            err = float(np.mean(resid**2))
            if best is None or err < best[0]:
                best = (err, float(alpha), t - resid)
        assert best is not None
        _, alpha, loo_log = best
        coef = V @ (Zt / (s2 + alpha))
        self.coef_ = coef
        self.intercept_ = float(tm - xm @ coef)
        self.alpha_ = alpha
        self.n_samples_ = n
        self.loo_pred_ = np.exp(loo_log)
        return self

    def _state(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "n_samples": self.n_samples_}

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: "SearchSpace | None" = None) -> "ArchPredictor":
        m = cls(space)
        m.coef_ = np.asarray(d["coef"], dtype=np.float64)
        m.intercept_ = float(d["intercept"])
        m.alpha_ = float(d.get("alpha", 0.0))
        m.n_samples_ = int(d.get("n_samples", 0))
        return m


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


def measured_archs(
    db: sqlite_utils.Database,
    space_name: str,
    device: str,
    config_key: str | None,
    imported: bool = True,
) -> dict[str, float]:
    """Every whole-architecture latency (ms) of ``device`` in the space, by arch string.

    Imported rows (``arch_measurements``, unless ``imported`` is False) and rows
    measured here through ``profile`` (``model_measurements`` with model_ref
    ``<space>:<arch>``, for ``config_key``; none when it is None); the latter
    win where both exist, since they belong to the runtime config asked for.
    """
    out: dict[str, float] = {}
    if imported:
        for arch, ms in db.execute(
            "select arch, latency_ms from arch_measurements where space = ? and device = ?", [space_name, device]
        ).fetchall():
            if ms is not None:
                out[arch] = float(ms)
    if config_key is not None and config_key != IMPORTED_CONFIG:
        prefix = f"{space_name}:"
        for ref, ms in db.execute(
            "select model_ref, median_ms from model_measurements where device = ? and config_key = ? "
            "and substr(model_ref, 1, ?) = ?",
            [device, config_key, len(prefix), prefix],
        ).fetchall():
            if ms is not None:
                out[ref[len(prefix):]] = float(ms)
    return out


def training_set(
    space: "SearchSpace", measured: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(arch strings, genotypes, latencies) of measured rows, parsed once by the space."""
    archs = sorted(measured)
    pop = space.from_strings(archs)
    y = np.array([measured[a] for a in archs], dtype=np.float64)
    return archs, pop, y


# ---------------------------------------------------------------- persistence
def _ensure_table(db: sqlite_utils.Database) -> None:
    """The tables are created by the store's numbered migrations (:mod:`edgelat.lut.schema`)."""
    from edgelat.lut.store import ensure_schema

    ensure_schema(db)


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
    _ensure_table(db)
    row = {
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
    }
    with db.conn:
        db[TABLE].upsert(row, pk=("space", "device", "config_key"))


def load_predictor(
    db: sqlite_utils.Database, space_name: str, device: str, config_key: str
) -> tuple[LinearLogModel, dict[str, Any]] | None:
    """The stored predictor and its metadata row, or None when none was fitted."""
    if not db[TABLE].exists():
        return None
    rows = list(
        db[TABLE].rows_where(
            "space = ? and device = ? and config_key = ?", [space_name, device, config_key], limit=1
        )
    )
    if not rows:
        return None
    row = rows[0]
    state = json.loads(row["model_json"])
    if state["kind"] == "fewshot":
        from edgelat.predictors.fewshot import FewShotPredictor

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
    from edgelat.predictors.fewshot import FewShotPredictor

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
    measured = measured_archs(db, space.name, device, ck)
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
        from edgelat.predictors.fewshot import source_sets

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
