"""Point lookups in a device's tables by key: what ``predict`` needs besides the fitted predictors."""

from __future__ import annotations

from typing import Sequence

import sqlite_utils

from edgelat.agents.types import RuntimeConfig


def kernel_medians(db: sqlite_utils.Database, device: str, config: RuntimeConfig, keys: Sequence[str]) -> dict[str, float]:
    """Measured medians (ms) of the kernel rows with these keys (keys without a row or a median are absent)."""
    keys = list(keys)
    if not keys:
        return {}
    marks = ",".join("?" for _ in keys)
    rows = db.execute(
        f"select kernel_key, median_ms from kernel_measurements where device = ? and config_key = ? "
        f"and kernel_key in ({marks}) and median_ms is not null",
        [device, config.key(), *keys],
    ).fetchall()
    return {k: float(v) for k, v in rows}


def model_median(db: sqlite_utils.Database, device: str, config: RuntimeConfig, model_ref: str) -> float | None:
    """The measured median (ms) of a whole model on a device + config, None if it was never measured."""
    row = db.execute(
        "select median_ms from model_measurements where device = ? and config_key = ? and model_ref = ?",
        [device, config.key(), model_ref],
    ).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else None
