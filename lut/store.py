"""The store: one SQLite database (sqlite-utils, WAL) with the registry and the tables.

Tables (all keyed so that re-measuring the same thing replaces, never duplicates):

- ``devices``: the registry (name primary key), see :mod:`edgelat.devices.registry`.
- ``kernel_measurements``: one row per device + runtime config + kernel key.
- ``model_measurements``: one row per device + runtime config + model ref
  (``sha256:<hex>`` for a file, ``<space>:<arch>`` for a search-space architecture).
- ``arch_measurements``: imported whole-architecture latencies (space, arch, device).

A row is written as soon as its result arrives, in its own transaction, so a
batch that dies halfway keeps everything it measured.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from edgelat import config as _config
from edgelat.agents.types import BenchmarkResult, RuntimeConfig

LATENCY_COLUMNS = {
    "median_ms": float,
    "mean_ms": float,
    "std_ms": float,
    "p10_ms": float,
    "p90_ms": float,
    "n": int,
    "rel_ci": float,
    "stable": int,
    "session_ms": float,
    "first_run_ms": float,
    "energy_mj": float,
    "energy_note": str,
    "peak_memory_bytes": int,
    "environment_json": str,
    "agent_version": str,
    "measured_at": float,
}

CONFIG_COLUMNS = {
    "config_key": str,
    "runtime": str,
    "runtime_version": str,
    "threads": int,
    "provider": str,
    "precision": str,
}


def open_db(path: str | Path | None = None) -> sqlite_utils.Database:
    """Open (creating if needed) the database in WAL mode with every table present."""
    path = Path(path) if path is not None else _config.db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.conn.execute("PRAGMA busy_timeout = 10000")
    if db.journal_mode != "wal":
        db.enable_wal()
    ensure_schema(db)
    return db


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create the tables the first time; later calls are no-ops."""
    if not db["devices"].exists():
        db["devices"].create(
            {
                "name": str,
                "kind": str,
                "transport_json": str,
                "facts_json": str,
                "status": str,
                "first_seen": float,
                "last_seen": float,
            },
            pk="name",
        )
    if not db["kernel_measurements"].exists():
        db["kernel_measurements"].create(
            {"device": str, **CONFIG_COLUMNS, "kernel_key": str, "op": str, "spec_json": str, **LATENCY_COLUMNS},
            pk=("device", "config_key", "kernel_key"),
        )
        db["kernel_measurements"].create_index(["device", "config_key", "op"])
    if not db["model_measurements"].exists():
        db["model_measurements"].create(
            {"device": str, **CONFIG_COLUMNS, "model_ref": str, "model_name": str, **LATENCY_COLUMNS},
            pk=("device", "config_key", "model_ref"),
        )
    if not db["arch_measurements"].exists():
        db["arch_measurements"].create(
            {"space": str, "arch": str, "device": str, "latency_ms": float, "source": str},
            pk=("space", "arch", "device"),
        )
        db["arch_measurements"].create_index(["space", "device"])


def _result_columns(result: BenchmarkResult) -> dict[str, Any]:
    lat = result.latency
    cfg = result.config
    return {
        "config_key": cfg.key(),
        "runtime": cfg.runtime,
        "runtime_version": cfg.version,
        "threads": cfg.threads,
        "provider": cfg.provider,
        "precision": cfg.precision,
        "median_ms": lat.median if lat else None,
        "mean_ms": lat.mean if lat else None,
        "std_ms": lat.std if lat else None,
        "p10_ms": lat.p10 if lat else None,
        "p90_ms": lat.p90 if lat else None,
        "n": lat.n if lat else None,
        # too few samples give an infinite CI: stored as unknown (the row is flagged unstable anyway)
        "rel_ci": lat.rel_ci if lat and math.isfinite(lat.rel_ci) else None,
        "stable": int(lat.stable) if lat else None,
        "session_ms": result.session_ms,
        "first_run_ms": result.first_run_ms,
        "energy_mj": result.energy_mj,
        "energy_note": result.energy_note,
        "peak_memory_bytes": result.peak_memory_bytes,
        "environment_json": json.dumps(result.environment, sort_keys=True, default=str),
        "agent_version": result.agent_version,
        "measured_at": time.time(),
    }


def add_kernel_result(
    db: sqlite_utils.Database, device: str, kernel_key: str, op: str, spec: dict[str, Any], result: BenchmarkResult
) -> None:
    """Store one kernel measurement (replacing an older one for the same key)."""
    if not result.ok or result.latency is None:
        raise ValueError(f"refusing to store a failed measurement for {kernel_key}: {result.error}")
    row = {"device": device, "kernel_key": kernel_key, "op": op, "spec_json": json.dumps(spec, sort_keys=True)}
    row.update(_result_columns(result))
    with db.conn:
        db["kernel_measurements"].upsert(row, pk=("device", "config_key", "kernel_key"))


def add_model_result(
    db: sqlite_utils.Database, device: str, model_ref: str, model_name: str, result: BenchmarkResult
) -> None:
    """Store one whole-model measurement."""
    if not result.ok or result.latency is None:
        raise ValueError(f"refusing to store a failed measurement for {model_ref}: {result.error}")
    row = {"device": device, "model_ref": model_ref, "model_name": model_name}
    row.update(_result_columns(result))
    with db.conn:
        db["model_measurements"].upsert(row, pk=("device", "config_key", "model_ref"))


def measured_kernel_keys(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> set[str]:
    """Kernel keys already in the table for this device + config (for idempotent re-runs)."""
    rows = db.execute(
        "select kernel_key from kernel_measurements where device = ? and config_key = ?",
        [device, config.key()],
    ).fetchall()
    return {r[0] for r in rows}


def kernel_rows(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig | None = None,
    op: str | None = None,
) -> list[dict[str, Any]]:
    """Kernel rows of a device, optionally for one config and one op type."""
    where = ["device = :device"]
    params: dict[str, Any] = {"device": device}
    if config is not None:
        where.append("config_key = :config_key")
        params["config_key"] = config.key()
    if op is not None:
        where.append("op = :op")
        params["op"] = op
    return list(
        db["kernel_measurements"].rows_where(" and ".join(where), params, order_by="op, kernel_key")
    )


def model_rows(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig | None = None
) -> list[dict[str, Any]]:
    """Whole-model rows of a device, optionally for one config."""
    where = ["device = :device"]
    params: dict[str, Any] = {"device": device}
    if config is not None:
        where.append("config_key = :config_key")
        params["config_key"] = config.key()
    return list(db["model_measurements"].rows_where(" and ".join(where), params, order_by="model_ref"))


def configs_of(db: sqlite_utils.Database, device: str) -> list[str]:
    """The runtime config keys that have kernel rows on a device."""
    rows = db.execute(
        "select distinct config_key from kernel_measurements where device = ? order by config_key", [device]
    ).fetchall()
    return [r[0] for r in rows]


def upsert_rows(db: sqlite_utils.Database, table: str, rows: Iterable[dict[str, Any]]) -> None:
    """Insert many rows into ``table`` in one transaction (bulk imports)."""
    with db.conn:
        db[table].upsert_all(rows, pk=db[table].pks)
