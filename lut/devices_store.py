"""The ``devices`` table: the registry's rows (see :mod:`edgelat.devices.registry`).

One row per registered name: kind, transport and facts as JSON, status, first and
last seen, and the fingerprint of the identifying facts. The registry decides what
a device is; this module only reads and writes its rows, each change in one
transaction together with what becomes of the device's measurements.
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from edgelat.lut.store import delete_device_rows, move_device_rows

TABLE = "devices"


def device_row(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    """The stored row of ``name``, or None when it is not registered."""
    try:
        return dict(db[TABLE].get(name))
    except sqlite_utils.db.NotFoundError:
        return None


def device_names(db: sqlite_utils.Database) -> list[str]:
    """Every registered name, in name order."""
    return [r["name"] for r in db[TABLE].rows_where(order_by="name")]


def save_device(db: sqlite_utils.Database, row: dict[str, Any], drop_rows: bool = False) -> None:
    """Insert or replace a device's row; with ``drop_rows`` its measurements are deleted
    first, in the same transaction."""
    with db.conn:
        if drop_rows:
            delete_device_rows(db, row["name"])
        db[TABLE].upsert(row, pk="name")


def set_status(db: sqlite_utils.Database, name: str, status: str) -> None:
    """Record that a device was just seen (or lost): its status and last-seen time."""
    with db.conn:
        db[TABLE].update(name, {"status": status, "last_seen": time.time()})


def remove_device(db: sqlite_utils.Database, name: str, archive: dict[str, Any] | None = None) -> int:
    """Delete a device's row and its measurements, or with ``archive`` (the row of the archive
    device) give its measurements to the archive; one transaction. Returns the measurements."""
    with db.conn:
        if archive is None:
            rows = delete_device_rows(db, name)
        else:
            rows = move_device_rows(db, name, archive["name"])
            db[TABLE].insert(archive)
        db[TABLE].delete(name)
    return rows
