"""What the kernel-level predictor build stores beside a device's table.

Tables, each keyed by device + runtime config (and more):

- ``kernel_predictors``: the fitted kernel-level predictor (state as JSON, regressors
  as an ``.npz`` blob, the ``format`` it was saved in);
- ``kernel_calibrations``: the kernel-sum -> whole-model map fitted with it;
- ``predictor_models``: which whole models calibrate (or are held out), and the kernels
  each splits into;
- ``fusion_rules``: the measured fusion verdict of each (op, activation) pair;
- ``predictor_builds``: a build's progress, so an interrupted build resumes;
- ``speed_checks``: each speed check's probe latencies, beside the build's figures they were
  compared with (see :mod:`edgelat.predictors.speed_probe`).

Every table is created by :mod:`edgelat.lut.schema`; a database opened elsewhere (in
memory) is brought to the latest schema first, as the predictors did before.
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from edgelat.lut.store import ensure_schema
from edgelat.values import RuntimeConfig

KERNEL_PREDICTORS = "kernel_predictors"
CALIBRATIONS = "kernel_calibrations"
MODELS = "predictor_models"
FUSION_RULES = "fusion_rules"
BUILDS = "predictor_builds"
SPEED_CHECKS = "speed_checks"

_WHERE = "device = ? and config_key = ?"


def _first(db: sqlite_utils.Database, table: str, device: str, config: RuntimeConfig) -> dict[str, Any] | None:
    ensure_schema(db)
    rows = list(db[table].rows_where(_WHERE, [device, config.key()]))
    return dict(rows[0]) if rows else None


def _upsert(db: sqlite_utils.Database, table: str, row: dict[str, Any], pk: tuple[str, ...]) -> None:
    ensure_schema(db)
    with db.conn:
        db[table].upsert(row, pk=pk)


def _of_device(db: sqlite_utils.Database, table: str, device: str | None, order_by: str | None = None
               ) -> list[dict[str, Any]]:
    where, params = ("device = ?", [device]) if device else (None, [])
    return [dict(r) for r in db[table].rows_where(where, params, order_by=order_by)]


# ---------------------------------------------------------------- kernel predictors
def save_kernel_predictor(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store (replace) the kernel predictor row of its device + config key."""
    _upsert(db, KERNEL_PREDICTORS, row, ("device", "config_key"))


def kernel_predictor_row(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any] | None:
    """The stored kernel predictor row of a device + config, or None."""
    return _first(db, KERNEL_PREDICTORS, device, config)


def kernel_predictor_rows(db: sqlite_utils.Database, device: str | None = None) -> list[dict[str, Any]]:
    """Every kernel predictor row (optionally of one device), newest first."""
    return _of_device(db, KERNEL_PREDICTORS, device, order_by="fitted_at desc")


# ---------------------------------------------------------------- calibrations
def save_calibration(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store (replace) the calibration row of its device + config key."""
    _upsert(db, CALIBRATIONS, row, ("device", "config_key"))


def calibration_row(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any] | None:
    """The stored calibration row of a device + config, or None."""
    return _first(db, CALIBRATIONS, device, config)


def calibration_rows(db: sqlite_utils.Database, device: str | None = None) -> list[dict[str, Any]]:
    """Every calibration row (optionally of one device)."""
    return _of_device(db, CALIBRATIONS, device)


# ---------------------------------------------------------------- calibration models
def record_model(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store (replace) which kernels a measured whole model splits into, and its role."""
    _upsert(db, MODELS, row, ("device", "config_key", "model_ref"))


def measured_models(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, role: str | None = None, suffix: str = ""
) -> list[tuple[str, str, str, str, float]]:
    """(model ref, name, role, kernel keys as JSON, measured median ms) of every recorded model
    (of ``role``, when given) that has a whole-model measurement stored under its ref + ``suffix``
    (a device state's suffix, :func:`edgelat.profiler.states.state_ref`), in name order."""
    ensure_schema(db)
    sql = (
        f"select p.model_ref, p.name, p.role, p.kernels_json, m.median_ms from {MODELS} p "
        "join model_measurements m on m.device = p.device and m.config_key = p.config_key "
        "and m.model_ref = p.model_ref || ? "
        "where p.device = ? and p.config_key = ? and m.median_ms is not null"
    )
    params: list[Any] = [suffix, device, config.key()]
    if role is not None:
        sql += " and p.role = ?"
        params.append(role)
    return [tuple(r) for r in db.execute(sql + " order by p.name", params).fetchall()]


# ---------------------------------------------------------------- fusion rules
def fusion_rule_rows(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> list[dict[str, Any]]:
    """The measured fusion verdicts of a device + config, in (op, act) order."""
    ensure_schema(db)
    return [dict(r) for r in db[FUSION_RULES].rows_where(_WHERE, [device, config.key()], order_by="op, act")]


def save_fusion_rule(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store (replace) one verdict of its device + config key + (op, act)."""
    _upsert(db, FUSION_RULES, row, ("device", "config_key", "op", "act"))


# ---------------------------------------------------------------- build progress
def build_state_row(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any] | None:
    """The stored progress of a device + config's predictor build, or None before its first round."""
    return _first(db, BUILDS, device, config)


def save_build_state(db: sqlite_utils.Database, state: dict[str, Any]) -> None:
    """Store (replace) a build's progress (``updated_at`` is set to now)."""
    state["updated_at"] = time.time()
    _upsert(db, BUILDS, state, ("device", "config_key"))


# ---------------------------------------------------------------- speed checks
def save_speed_probes(db: sqlite_utils.Database, device: str, config: RuntimeConfig,
                      probes: list[tuple[str, float, float]], measured_at: float) -> None:
    """Store one speed check's probes: (model ref, the build's ms, ms now) each."""
    ensure_schema(db)
    with db.conn:
        db[SPEED_CHECKS].insert_all({"device": device, "config_key": config.key(), "model_ref": ref, "then_ms": then,
                                     "now_ms": now, "measured_at": measured_at} for ref, then, now in probes)


def recent_speed_probes(db: sqlite_utils.Database, device: str, config: RuntimeConfig,
                        since: float) -> list[dict[str, Any]]:
    """The probes of the device's speed checks measured at or after ``since``, oldest first."""
    ensure_schema(db)
    return [dict(r) for r in db[SPEED_CHECKS].rows_where(f"{_WHERE} and measured_at >= ?", [device, config.key(), since],
                                                        order_by="measured_at")]
