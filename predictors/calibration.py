"""Per-device calibration: the sum of a model's kernels -> the measured whole model.

Summing kernels measured one model at a time misses what happens between
kernels in a real run (one model-run overhead instead of one per kernel,
caches warm from the previous kernel, the memory planner). A small linear map
fitted on whole models measured on the same device + config corrects it.

Candidate forms (``s`` = sum of kernel predictions, ``n`` = number of kernels):
``identity`` (s), ``overhead`` (s - (n-1)*o, nothing fitted: each kernel was
measured as its own model and so carries the fixed cost ``o`` of one model run,
which a whole model pays once; ``o`` is measured on the device, see
:func:`run_overhead_ms`), ``ratio`` (a*s), ``affine`` (a*s + b), ``ratio+count``
(a*s + c*n: a fitted per-kernel correction). The form with the lowest
leave-one-out MAPE on the calibration models is kept -- identity unless a
fitted form beats it out of sample. Its leave-one-out predictions are kept too
(``loo_pred_``), so the report can show calibrated accuracy on models the
calibration did not see.

Which whole models calibrate is recorded in ``predictor_models`` (the model's
kernels as split from its file, and a role: ``calibration`` models are fitted
on, ``holdout`` models are only reported on).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import numpy as np
import sqlite_utils

from edgelat.agents.types import RuntimeConfig
from edgelat.profiler.ops import KernelSpec

MODELS_TABLE = "predictor_models"
CAL_TABLE = "kernel_calibrations"
FORMS = ("identity", "overhead", "ratio", "affine", "ratio+count")
ROLES = ("calibration", "holdout")


def ensure_tables(db: sqlite_utils.Database) -> None:
    if not db[MODELS_TABLE].exists():
        db[MODELS_TABLE].create(
            {
                "device": str,
                "config_key": str,
                "model_ref": str,
                "name": str,
                "role": str,
                "fmt": str,
                "kernels_json": str,
                "n_kernels": int,
                "recorded_at": float,
            },
            pk=("device", "config_key", "model_ref"),
        )
    if not db[CAL_TABLE].exists():
        db[CAL_TABLE].create(
            {"device": str, "config_key": str, "form": str, "coef_json": str, "meta_json": str, "fitted_at": float},
            pk=("device", "config_key"),
        )


def record_model(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig,
    model_ref: str,
    name: str,
    role: str,
    fmt: str,
    kernels: Sequence[KernelSpec],
) -> None:
    """Remember which kernels a measured whole model splits into, and its role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    ensure_tables(db)
    row = {
        "device": device,
        "config_key": config.key(),
        "model_ref": model_ref,
        "name": name,
        "role": role,
        "fmt": fmt,
        "kernels_json": json.dumps([k.key for k in kernels]),
        "n_kernels": len(kernels),
        "recorded_at": time.time(),
    }
    with db.conn:
        db[MODELS_TABLE].upsert(row, pk=("device", "config_key", "model_ref"))


def measured_models(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, role: str | None = None
) -> list[dict[str, Any]]:
    """Recorded models that have a whole-model measurement: name, role, kernels, measured_ms."""
    ensure_tables(db)
    sql = (
        f"select p.model_ref, p.name, p.role, p.kernels_json, m.median_ms from {MODELS_TABLE} p "
        "join model_measurements m on m.device = p.device and m.config_key = p.config_key and m.model_ref = p.model_ref "
        "where p.device = ? and p.config_key = ? and m.median_ms is not null"
    )
    params: list[Any] = [device, config.key()]
    if role is not None:
        sql += " and p.role = ?"
        params.append(role)
    out = []
    for ref, name, r, kernels, ms in db.execute(sql + " order by p.name", params).fetchall():
        out.append(
            {
                "model_ref": ref,
                "name": name,
                "role": r,
                "kernels": [KernelSpec.from_key(k) for k in json.loads(kernels)],
                "measured_ms": float(ms),
            }
        )
    return out


def run_overhead_ms(predictor) -> float:
    """The device's fixed cost of one model run: the measured latency of a one-op model
    on 8 numbers (:data:`~edgelat.predictors.fusion.OVERHEAD_SPEC`, which every build
    profiles first); 0.0 when it was never measured."""
    from edgelat.predictors.fusion import OVERHEAD_SPEC

    return float(predictor.table_hit(OVERHEAD_SPEC) or 0.0)


def _design(form: str, s: np.ndarray, n: np.ndarray) -> np.ndarray | None:
    if form == "ratio":
        return s[:, None]
    if form == "affine":
        return np.column_stack([s, np.ones_like(s)])
    if form == "ratio+count":
        return np.column_stack([s, n])
    return None  # identity


def _solve(form: str, s: np.ndarray, n: np.ndarray, y: np.ndarray, overhead_ms: float) -> np.ndarray:
    """Least squares on relative error (each model counts by its percentage error)."""
    if form == "overhead":
        return np.array([overhead_ms])
    A = _design(form, s, n)
    if A is None:
        return np.array([])
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def _apply(form: str, coef: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    if form == "overhead":
        return s - np.maximum(n - 1, 0) * coef[0]
    A = _design(form, s, n)
    return s.copy() if A is None else A @ coef


class Calibration:
    """Linear map from the kernel sum to the whole-model latency (scikit-learn style)."""

    # fewest calibration models each form needs before leave-one-out can judge it
    MIN_MODELS = {"identity": 0, "overhead": 1, "ratio": 2, "affine": 4, "ratio+count": 4}

    def __init__(self, forms: Sequence[str] = FORMS, overhead_ms: float = 0.0) -> None:
        self.forms = forms
        self.overhead_ms = overhead_ms

    def fit(self, sums: Sequence[float], counts: Sequence[int], measured: Sequence[float]) -> "Calibration":
        s = np.asarray(sums, dtype=np.float64)
        n = np.asarray(counts, dtype=np.float64)
        y = np.asarray(measured, dtype=np.float64)
        self.n_models_ = len(y)
        self.loo_mape_: dict[str, float] = {}
        loo: dict[str, np.ndarray] = {}
        for form in self.forms:
            if len(y) < max(self.MIN_MODELS[form], 1) or (form == "overhead" and self.overhead_ms <= 0):
                continue
            pred = np.empty(len(y))
            for i in range(len(y)):
                keep = np.arange(len(y)) != i
                coef = _solve(form, s[keep], n[keep], y[keep], self.overhead_ms)
                pred[i] = _apply(form, coef, s[i : i + 1], n[i : i + 1])[0]
            loo[form] = pred
            self.loo_mape_[form] = float(np.mean(np.abs(pred - y) / y))
        self.form_ = min(self.loo_mape_, key=self.loo_mape_.get) if self.loo_mape_ else "identity"
        self.coef_ = _solve(self.form_, s, n, y, self.overhead_ms) if len(y) else np.array([])
        self.loo_pred_ = loo.get(self.form_, s.copy())
        return self

    def predict(self, sums: Sequence[float], counts: Sequence[int]) -> np.ndarray:
        s = np.asarray(sums, dtype=np.float64)
        n = np.asarray(counts, dtype=np.float64)
        return np.maximum(_apply(self.form_, self.coef_, s, n), 1e-6)

    @property
    def is_identity(self) -> bool:
        return self.form_ == "identity"

    def save(self, db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> None:
        ensure_tables(db)
        row = {
            "device": device,
            "config_key": config.key(),
            "form": self.form_,
            "coef_json": json.dumps([float(c) for c in self.coef_]),
            "meta_json": json.dumps({"n_models": self.n_models_, "loo_mape": self.loo_mape_}),
            "fitted_at": time.time(),
        }
        with db.conn:
            db[CAL_TABLE].upsert(row, pk=("device", "config_key"))

    @classmethod
    def load(cls, db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> "Calibration | None":
        ensure_tables(db)
        rows = list(db[CAL_TABLE].rows_where("device = ? and config_key = ?", [device, config.key()]))
        if not rows:
            return None
        cal = cls()
        cal.form_ = rows[0]["form"]
        cal.coef_ = np.asarray(json.loads(rows[0]["coef_json"]), dtype=np.float64)
        meta = json.loads(rows[0]["meta_json"])
        cal.n_models_ = meta["n_models"]
        cal.loo_mape_ = meta["loo_mape"]
        return cal


def fit_calibration(db: sqlite_utils.Database, device: str, config: RuntimeConfig, predictor) -> Calibration | None:
    """Fit and store the calibration from the device's ``calibration`` models (None if it has none)."""
    models = measured_models(db, device, config, role="calibration")
    models = [m for m in models if not predictor.missing(m["kernels"])]
    if not models:
        return None
    sums = [float(predictor.predict_specs(m["kernels"]).sum()) for m in models]
    cal = Calibration(overhead_ms=run_overhead_ms(predictor)).fit(sums, [len(m["kernels"]) for m in models], [m["measured_ms"] for m in models])
    cal.save(db, device, config)
    return cal
