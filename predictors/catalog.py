"""Which predictors a database holds: what ``edgelat predictor list`` shows.

Kernel-level predictors (one per device + runtime config, with the calibration the build
fitted beside it) and architecture-level predictors (one per space + device + config). Read
through :mod:`edgelat.lut.predictors_store` and :mod:`edgelat.lut.archs_store`.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from edgelat.lut import archs_store, predictors_store
from edgelat.values import iso_time


def list_predictors(db: sqlite_utils.Database, device: str | None = None) -> list[dict[str, Any]]:
    """Every stored predictor (optionally of one device), kernel level first, newest first within."""
    cals = {(r["device"], r["config_key"]): r for r in predictors_store.calibration_rows(db, device)}
    out: list[dict[str, Any]] = []
    for r in predictors_store.kernel_predictor_rows(db, device):
        meta = json.loads(r["meta_json"] or "{}")
        cal = cals.get((r["device"], r["config_key"]))
        cal_meta = json.loads(cal["meta_json"] or "{}") if cal else {}
        out.append({
            "level": "kernel", "device": r["device"], "config_key": r["config_key"],
            "fitted_at": iso_time(r["fitted_at"]), "table_rows": r["n_rows"],
            "regressors": {op: meta.get("choice", {}).get(op) for op in meta.get("ops", [])},
            "stored_format": r.get("format") or "pickle (refused: rebuild it)",
            "calibration": None if cal is None else {
                "form": cal["form"], "models": cal_meta.get("n_models"),
                "loo_mape": (cal_meta.get("loo_mape") or {}).get(cal["form"])},
        })
    for r in archs_store.predictor_rows(db, device):
        out.append({
            "level": "arch", "space": r["space"], "device": r["device"], "config_key": r["config_key"],
            "fitted_at": iso_time(r["fitted_at"]), "kind": r["kind"], "samples": r["n_samples"],
            "sources": json.loads(r["sources_json"] or "[]"), "validation": r["validation"],
            "metrics": json.loads(r["metrics_json"] or "{}"),
        })
    return out
