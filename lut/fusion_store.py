"""Fusion verdicts per device + runtime config (table ``fusion_rules``): which operator
pairs the runtime runs as one kernel, as measured by :mod:`edgelat.predictors.fusion`.
The table comes from the store's migrations (:mod:`edgelat.lut.schema`)."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from edgelat.agents.types import RuntimeConfig

TABLE = "fusion_rules"


def fusion_verdicts(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> list[dict[str, Any]]:
    """The stored verdict rows of a device + config, by op and activation (empty: never measured)."""
    from edgelat.lut.store import ensure_schema

    ensure_schema(db)
    return list(db[TABLE].rows_where("device = ? and config_key = ?", [device, config.key()], order_by="op, act"))


def save_fusion_verdict(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store one pair's verdict row (replacing the one before for the same pair)."""
    with db.conn:
        db[TABLE].upsert(row, pk=("device", "config_key", "op", "act"))
