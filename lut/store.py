"""The store: one SQLite database (sqlite-utils, WAL) with the registry and the tables.

Tables (all keyed so that re-measuring the same thing replaces, never duplicates):

- ``devices``: the registry (name primary key), see :mod:`edgelat.devices.registry`.
- ``kernel_measurements``: one row per device + runtime config + kernel key.
- ``model_measurements``: one row per device + runtime config + model ref
  (``sha256:<hex>`` for a file, ``<space>:<arch>`` for a search-space architecture).
- ``arch_measurements``: imported whole-architecture latencies (space, arch, device).
- ``sentinel_reference``: per device + runtime config, the first medians measured of the
  drift sentinel's reference kernels: the device's reference state (level 1.0).
- ``sentinel_checks``: every sentinel check a profiling job made (its level, relative to
  the reference), so the drift a table was measured under stays visible.

Kernel rows carry ``sentinel_level`` (the device's speed when the row was measured, as a
ratio to its reference state: 1.05 = 5% slower) and ``median_norm_ms`` (the median
divided by that level: the figure in the reference state). Both are NULL when no
sentinel level was known (the row's environment says why).

A row is written as soon as its result arrives, in its own transaction, so a
batch that dies halfway keeps everything it measured.

Every table is created by the numbered migrations of :mod:`edgelat.lut.schema`;
storage faults become one-line errors through :mod:`edgelat.lut.faults`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import sqlite_utils

from edgelat import config as _config
from edgelat.values import BenchmarkResult, RuntimeConfig
from edgelat.errors import StoreUnavailable
from edgelat.lut import faults as _faults
from edgelat.lut import schema as _schema


def open_db(path: str | Path | None = None, timeout_s: float | None = None) -> sqlite_utils.Database:
    """Open the database in WAL mode at the latest schema (creating it if there is none).

    ``timeout_s``: how long a write waits for another's lock (default: ``EDGELAT_DB_TIMEOUT``).

    A damaged, empty or unwritable file is refused with one line (a
    :class:`~edgelat.errors.StoreError`) and left as it is; an older schema is
    upgraded by the numbered migrations of :mod:`edgelat.lut.schema`.
    """
    path = Path(path) if path is not None else _config.db_path()
    timeout_s = _config.db_timeout_s() if timeout_s is None else timeout_s
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the folder of {path}: {exc.strerror or exc}") from exc
    _faults.preflight(path)
    _faults.last_path = path
    if not path.exists():
        _create(path, timeout_s)
    with _faults.translated(path, timeout_s):
        conn = sqlite3.connect(str(path), timeout=timeout_s, factory=_faults.Connection)
        _faults.track(path, conn)
        db = sqlite_utils.Database(conn)
        try:
            _configure(db, timeout_s)
            _migrate(db, path)
        except BaseException:
            db.conn.close()
            raise
    return db


def _configure(db: sqlite_utils.Database, timeout_s: float) -> None:
    db.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    if db.journal_mode != "wal":
        db.enable_wal()
    # WAL with synchronous=NORMAL: a commit is durable once written to the log, which a killed
    # process never loses (only a power cut can undo the last commits, never corrupt the file);
    # FULL would fsync every stored row, which is most of a tiny kernel's bookkeeping time
    db.conn.execute("PRAGMA synchronous = NORMAL")


def _migrate(db: sqlite_utils.Database, path: Path | None) -> None:
    try:
        _schema.migrate(db.conn)
    except _schema.NewerSchema as exc:
        raise _faults.newer_schema(path or _faults.last_path or Path("edgelat.db"), exc.found, _schema.LATEST) from None


def _create(path: Path, timeout_s: float) -> None:
    """Build a new database beside ``path`` and move it into place only when complete,
    so an interrupted creation (disk full, killed) never leaves an empty file there."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.new-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _faults.translated(path, timeout_s):
            conn = sqlite3.connect(tmp_name, timeout=timeout_s)
            try:
                db = sqlite_utils.Database(conn)
                _configure(db, timeout_s)
                _migrate(db, path)
            finally:
                conn.close()
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile: theirs is kept
        except FileExistsError:
            pass
        except OSError:
            if not path.exists():
                os.replace(tmp, path)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the database {path}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Bring a database opened elsewhere (e.g. in memory) to the latest schema."""
    with _faults.translated():
        _migrate(db, None)


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


_HISTORY_FIELDS = ("device", "config_key", "runtime_version", "median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms",
                   "n", "rel_ci", "stable", "energy_mj", "energy_note", "environment_json", "agent_version",
                   "measured_at", "sentinel_level", "layers_json")


def _append_history(db: sqlite_utils.Database, kind: str, item_key: str, name: str | None, row: dict[str, Any]) -> None:
    """Keep this measurement in ``measurement_history`` (inside the caller's transaction)."""
    cols = ("kind", "item_key", "name", *_HISTORY_FIELDS)
    db.conn.execute(f"INSERT INTO measurement_history ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [kind, item_key, name, *(row.get(k) for k in _HISTORY_FIELDS)])


def _upsert(db: sqlite_utils.Database, table: str, row: dict[str, Any], pk: tuple[str, ...]) -> None:
    """Insert ``row`` or replace the columns it names in the row with the same ``pk``: what
    sqlite-utils' ``upsert`` does, in one statement and without its per-call look at the
    table's schema (a row is stored per result, so that look was paid per kernel)."""
    cols = list(row)
    updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in cols if c not in pk)
    db.conn.execute(
        f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(f'[{c}]' for c in pk)}) DO UPDATE SET {updates}",
        [row[c] for c in cols],
    )


def history_rows(db: sqlite_utils.Database, device: str, item_key: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Every stored measurement of a device (optionally of one kernel key or model ref), newest first."""
    where, params = ("device = ? and item_key = ?", [device, item_key]) if item_key else ("device = ?", [device])
    return list(db["measurement_history"].rows_where(where, params, order_by="measured_at desc, id desc",
                                                      limit=limit))


def add_kernel_result(
    db: sqlite_utils.Database, device: str, kernel_key: str, op: str, spec: dict[str, Any], result: BenchmarkResult,
    sentinel_level: float | None = None,
) -> None:
    """Store one kernel measurement (replacing an older one for the same key).

    ``sentinel_level`` is the device's level when it was measured (see the module
    docstring); with it the row also gets ``median_norm_ms`` = median / level.
    """
    if not result.ok or result.latency is None:
        raise ValueError(f"refusing to store a failed measurement for {kernel_key}: {result.error}")
    if sentinel_level is not None and not (math.isfinite(sentinel_level) and sentinel_level > 0):
        raise ValueError(f"sentinel level must be a positive number, got {sentinel_level!r}")
    row = {"device": device, "kernel_key": kernel_key, "op": op, "spec_json": json.dumps(spec, sort_keys=True)}
    row.update(_result_columns(result))
    row["sentinel_level"] = sentinel_level
    row["median_norm_ms"] = result.latency.median / sentinel_level if sentinel_level is not None else None
    with db.conn:
        _upsert(db, "kernel_measurements", row, ("device", "config_key", "kernel_key"))
        _append_history(db, "kernel", kernel_key, None, row)


def set_sentinel_level(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, kernel_keys: Iterable[str], level: float
) -> None:
    """Give rows already stored a better-known level (e.g. once the check after them is in)."""
    keys = list(kernel_keys)
    if not keys:
        return
    marks = ",".join("?" * len(keys))
    with db.conn:
        db.execute(
            f"update kernel_measurements set sentinel_level = ?, median_norm_ms = median_ms / ? "
            f"where device = ? and config_key = ? and kernel_key in ({marks})",
            [level, level, device, config.key(), *keys],
        )
        db.execute(  # the same measurements in the history
            f"update measurement_history set sentinel_level = ? where kind = 'kernel' and device = ? and "
            f"config_key = ? and item_key in ({marks}) and measured_at = (select k.measured_at from "
            f"kernel_measurements k where k.device = measurement_history.device and k.config_key = "
            f"measurement_history.config_key and k.kernel_key = measurement_history.item_key)",
            [level, device, config.key(), *keys],
        )


def sentinel_reference(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, float]:
    """The reference medians (kernel key -> ms) of a device + config; empty before its first check."""
    rows = db.execute(
        "select kernel_key, median_ms from sentinel_reference where device = ? and config_key = ?",
        [device, config.key()],
    ).fetchall()
    return {k: m for k, m in rows}


def add_sentinel_reference(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, medians: dict[str, float]
) -> None:
    """Record reference medians for kernels that have none yet (the first ones stored stay)."""
    now = time.time()
    with db.conn:
        for key, median in medians.items():
            db.execute(
                "insert or ignore into sentinel_reference (device, config_key, kernel_key, median_ms, measured_at) "
                "values (?, ?, ?, ?, ?)",
                [device, config.key(), key, median, now],
            )


def add_sentinel_check(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, level: float | None,
    medians: dict[str, float], note: str = "",
) -> None:
    """Record one sentinel check (level None when it could not be measured; ``note`` says why)."""
    with db.conn:  # one plain statement: sqlite-utils' insert looks at the table's schema first, each time
        db.conn.execute(
            "INSERT INTO sentinel_checks (device, config_key, measured_at, level, medians_json, note) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [device, config.key(), time.time(), level, json.dumps(medians, sort_keys=True), note],
        )


def add_model_result(
    db: sqlite_utils.Database, device: str, model_ref: str, model_name: str, result: BenchmarkResult
) -> None:
    """Store one whole-model measurement."""
    if not result.ok or result.latency is None:
        raise ValueError(f"refusing to store a failed measurement for {model_ref}: {result.error}")
    row = {"device": device, "model_ref": model_ref, "model_name": model_name}
    row.update(_result_columns(result))
    layers = (result.extra or {}).get("layers")
    row["layers_json"] = json.dumps(layers) if layers else None
    with db.conn:
        _upsert(db, "model_measurements", row, ("device", "config_key", "model_ref"))
        _append_history(db, "model", model_ref, model_name, row)


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


def kernel_medians(db: sqlite_utils.Database, device: str, config: RuntimeConfig, keys: Iterable[str]) -> dict[str, float]:
    """Measured medians (ms) of the given kernel keys on a device + config; keys without a row
    or without a median are left out."""
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
    """The measured median (ms) of a whole model on a device + config, or None when it has none."""
    row = db.execute(
        "select median_ms from model_measurements where device = ? and config_key = ? and model_ref = ?",
        [device, config.key(), model_ref],
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def models_measured_at(db: sqlite_utils.Database, device: str, config: RuntimeConfig, model_refs: Sequence[str]) -> float | None:
    """When the newest of these whole models' rows was measured (epoch seconds), or None."""
    marks = ",".join("?" * len(model_refs))
    row = db.execute(f"select max(measured_at) from model_measurements where device = ? and config_key = ? "
                     f"and model_ref in ({marks})", [device, config.key(), *model_refs]).fetchone()
    return None if row is None or row[0] is None else float(row[0])


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


# ---------------------------------------------------------------- rows of a device
def device_tables(db: sqlite_utils.Database) -> list[str]:
    """Every table that keys rows by a ``device`` column (the registry itself excepted)."""
    out = []
    for (name,) in db.execute("select name from sqlite_master where type = 'table' order by name").fetchall():
        if name != "devices" and "device" in _schema.columns(db.conn, name):
            out.append(name)
    return out


def device_row_counts(db: sqlite_utils.Database, device: str) -> dict[str, int]:
    """How many rows each table holds for ``device`` (tables with none left out)."""
    counts = {}
    for table in device_tables(db):
        (n,) = db.execute(f"select count(*) from [{table}] where device = ?", [device]).fetchone()
        if n:
            counts[table] = int(n)
    return counts


#: the tables whose rows are a device's measurements (the others hold what is derived from them or
#: bookkeeping: predictors, history, drift checks); counts shown to users are of these
MEASUREMENT_TABLES = ("kernel_measurements", "model_measurements", "arch_measurements")


def measurement_count(counts: dict[str, int]) -> int:
    """The measurements among :func:`device_row_counts`."""
    return sum(n for table, n in counts.items() if table in MEASUREMENT_TABLES)


def delete_device_rows(db: sqlite_utils.Database, device: str) -> int:
    """Delete every row of ``device`` in every table (call inside the caller's transaction);
    returns how many measurements went."""
    total = 0
    for table in device_tables(db):
        n = db.execute(f"delete from [{table}] where device = ?", [device]).rowcount
        total += n if table in MEASUREMENT_TABLES else 0
    return total


def move_device_rows(db: sqlite_utils.Database, device: str, to: str) -> int:
    """Give every row of ``device`` to the name ``to`` (call inside the caller's transaction);
    returns how many measurements moved."""
    total = 0
    for table in device_tables(db):
        n = db.execute(f"update [{table}] set device = ? where device = ?", [to, device]).rowcount
        total += n if table in MEASUREMENT_TABLES else 0
    return total
