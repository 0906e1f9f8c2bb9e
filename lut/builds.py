"""The predictor build's state per device + runtime config (table ``predictor_builds``).

It holds the profiling time spent over all runs of a build, the adaptive rounds
done and the last summary, so an interrupted ``predictor build`` continues
where it stopped. The table comes from the store's migrations (:mod:`edgelat.lut.schema`).
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from edgelat.agents.types import RuntimeConfig

TABLE = "predictor_builds"


def build_state(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any]:
    """The stored state of a device + config's build (a fresh one if it never ran)."""
    from edgelat.lut.store import ensure_schema

    ensure_schema(db)
    rows = list(db[TABLE].rows_where("device = ? and config_key = ?", [device, config.key()]))
    if rows:
        return dict(rows[0])
    return {"device": device, "config_key": config.key(), "spent_s": 0.0, "rounds": 0, "seed": 0, "updated_at": None,
            "summary_json": "{}"}


def save_build_state(db: sqlite_utils.Database, state: dict[str, Any]) -> None:
    """Store ``state`` (as :func:`build_state` returns it), stamped with the time."""
    state["updated_at"] = time.time()
    with db.conn:
        db[TABLE].upsert(state, pk=("device", "config_key"))
