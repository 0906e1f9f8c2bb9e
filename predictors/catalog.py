"""Which predictors a database holds: what ``edgelat predictor list`` shows.

Kernel-level predictors (one per device + runtime config, with the calibration the build
fitted beside it) and architecture-level predictors (one per space + device + config). Read
through sqlite-utils from the tables :mod:`edgelat.lut.schema` creates.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from edgelat.predictors.arch import TABLE as ARCH_TABLE
from edgelat.predictors.calibration import CAL_TABLE
from edgelat.predictors.kernel import TABLE as KERNEL_TABLE
from edgelat.values import iso_time


def list_predictors(db: sqlite_utils.Database, device: str | None = None) -> list[dict[str, Any]]:
    """Every stored predictor (optionally of one device), kernel level first, newest first within."""
    where, params = ("device = ?", [device]) if device else (None, [])
    cals = {(r["device"], r["config_key"]): r for r in db[CAL_TABLE].rows_where(where, params)}
    out: list[dict[str, Any]] = []
    for r in db[KERNEL_TABLE].rows_where(where, params, order_by="fitted_at desc"):
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
    for r in db[ARCH_TABLE].rows_where(where, params, order_by="fitted_at desc"):
        out.append({
            "level": "arch", "space": r["space"], "device": r["device"], "config_key": r["config_key"],
            "fitted_at": iso_time(r["fitted_at"]), "kind": r["kind"], "samples": r["n_samples"],
            "sources": json.loads(r["sources_json"] or "[]"), "validation": r["validation"],
            "metrics": json.loads(r["metrics_json"] or "{}"),
        })
    return out
