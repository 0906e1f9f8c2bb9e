"""Whole-architecture latencies of search spaces, and the arch-level predictors fitted on them.

Tables: ``arch_measurements`` (imported latencies: space, arch, device) and
``arch_predictors`` (one fitted predictor per space + device + config key, its
state as JSON). An architecture profiled here is a whole-model row
(``model_measurements``) whose model ref is ``<space>:<arch>``; the functions
below read both kinds.
"""

from __future__ import annotations

from typing import Any, Iterable

import sqlite_utils

from edgelat.lut.store import ensure_schema

#: config key of the rows of devices known only from imported measurements: the imported
#: numbers carry no runtime config, so one predictor serves any config
IMPORTED_CONFIG = "imported"
PREDICTORS = "arch_predictors"


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
    ``<space>:<arch>``, for ``config_key``; none when it is None or
    :data:`IMPORTED_CONFIG`); the latter win where both exist, since they belong
    to the runtime config asked for.
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


def imported_devices(db: sqlite_utils.Database, space_name: str, exclude: str | None = None) -> list[str]:
    """The devices with imported rows in the space (but ``exclude``), in name order."""
    if exclude is None:
        sql, params = "select distinct device from arch_measurements where space = ? order by device", [space_name]
    else:
        sql = "select distinct device from arch_measurements where space = ? and device != ? order by device"
        params = [space_name, exclude]
    return [r[0] for r in db.execute(sql, params).fetchall()]


def imported_archs(db: sqlite_utils.Database, space_name: str, device: str) -> dict[str, float | None]:
    """The imported rows of a device in the space: arch string -> latency ms (as stored)."""
    return dict(db.execute(
        "select arch, latency_ms from arch_measurements where space = ? and device = ?", [space_name, device]
    ).fetchall())


def profiled_groups(db: sqlite_utils.Database, space_name: str, exclude: str) -> list[tuple[str, str, int]]:
    """(device, config key, rows) of every device + config but ``exclude`` that profiled
    architectures of the space, in device and config order."""
    prefix = f"{space_name}:"
    return [tuple(r) for r in db.execute(
        "select device, config_key, count(*) from model_measurements where device != ? "
        "and substr(model_ref, 1, ?) = ? group by device, config_key order by device, config_key",
        [exclude, len(prefix), prefix],
    ).fetchall()]


def import_rows(db: sqlite_utils.Database, rows: Iterable[tuple[str, str, str, float, str]]) -> None:
    """Store imported (space, arch, device, latency ms, source) rows in one transaction; a row
    already there (same space, arch, device) is replaced."""
    with db.conn:
        db.conn.executemany(
            "insert into arch_measurements (space, arch, device, latency_ms, source) values (?, ?, ?, ?, ?) "
            "on conflict(space, arch, device) do update set latency_ms = excluded.latency_ms, source = excluded.source",
            rows,
        )


def latency_row_counts(db: sqlite_utils.Database, device: str, space_name: str) -> tuple[int, int, int]:
    """How many rows could price the space on ``device``: (kernel rows, imported rows of
    the space, whole-model rows whose ref starts with ``<space>:``)."""
    kernels = db.execute("select count(*) from kernel_measurements where device = ?", [device]).fetchone()[0]
    archs = db.execute(
        "select count(*) from arch_measurements where device = ? and space = ?", [device, space_name]
    ).fetchone()[0]
    models = db.execute(
        "select count(*) from model_measurements where device = ? and model_ref like ?", [device, f"{space_name}:%"]
    ).fetchone()[0]
    return int(kernels), int(archs), int(models)


# ---------------------------------------------------------------- arch-level predictors
def save_predictor_row(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    """Store (replace) the predictor row of (space, device, config key)."""
    ensure_schema(db)
    with db.conn:
        db[PREDICTORS].upsert(row, pk=("space", "device", "config_key"))


def predictor_row(db: sqlite_utils.Database, space_name: str, device: str, config_key: str) -> dict[str, Any] | None:
    """The stored predictor row of (space, device, config key), or None."""
    if not db[PREDICTORS].exists():
        return None
    rows = list(db[PREDICTORS].rows_where(
        "space = ? and device = ? and config_key = ?", [space_name, device, config_key], limit=1
    ))
    return dict(rows[0]) if rows else None


def predictor_rows(db: sqlite_utils.Database, device: str | None = None) -> list[dict[str, Any]]:
    """Every stored arch predictor row (optionally of one device), newest first."""
    where, params = ("device = ?", [device]) if device else (None, [])
    return [dict(r) for r in db[PREDICTORS].rows_where(where, params, order_by="fitted_at desc")]
