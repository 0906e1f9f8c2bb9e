"""The database schema, as a list of numbered migrations.

The schema version of a database is its ``PRAGMA user_version``: the number of
migrations applied to it. :func:`migrate` applies the missing ones, in order,
in one transaction together with the new version number, so a database is
always at one version or the next, never in between (a failed migration rolls
back and leaves the file as it was).

Migration 1 is the schema as it stood before versioning (every table created
if missing, with its columns frozen here). A database written by that code has
``user_version`` 0 and its tables already present: migration 1 then only adds
the tables it lacks, and the later migrations upgrade it.

To change the schema, append one function to :data:`MIGRATIONS` and never edit
an applied one. Adding a column is one line::

    def _m4_kernel_flops(conn):
        add_column(conn, "kernel_measurements", "flops", "INTEGER")

Columns are frozen here on purpose (not taken from the dicts in
:mod:`edgelat.lut.store`): a fresh database is built by running every
migration, exactly as an old one is upgraded.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

# The columns of the measurement tables as they were before versioning.
_CONFIG = "config_key TEXT, runtime TEXT, runtime_version TEXT, threads INTEGER, provider TEXT, precision TEXT"
_LATENCY = (
    "median_ms REAL, mean_ms REAL, std_ms REAL, p10_ms REAL, p90_ms REAL, n INTEGER, rel_ci REAL, "
    "stable INTEGER, session_ms REAL, first_run_ms REAL, energy_mj REAL, energy_note TEXT, "
    "peak_memory_bytes INTEGER, environment_json TEXT, agent_version TEXT, measured_at REAL"
)

#: The tables of migration 1 (the unversioned schema), by name.
BASE_TABLES: dict[str, str] = {
    "devices": "name TEXT PRIMARY KEY, kind TEXT, transport_json TEXT, facts_json TEXT, status TEXT, "
    "first_seen REAL, last_seen REAL",
    "kernel_measurements": f"device TEXT, {_CONFIG}, kernel_key TEXT, op TEXT, spec_json TEXT, {_LATENCY}, "
    "PRIMARY KEY (device, config_key, kernel_key)",
    "model_measurements": f"device TEXT, {_CONFIG}, model_ref TEXT, model_name TEXT, {_LATENCY}, "
    "PRIMARY KEY (device, config_key, model_ref)",
    "arch_measurements": "space TEXT, arch TEXT, device TEXT, latency_ms REAL, source TEXT, "
    "PRIMARY KEY (space, arch, device)",
    "kernel_predictors": "device TEXT, config_key TEXT, n_rows INTEGER, fitted_at REAL, sklearn_version TEXT, "
    "meta_json TEXT, blob BLOB, PRIMARY KEY (device, config_key)",
    "predictor_models": "device TEXT, config_key TEXT, model_ref TEXT, name TEXT, role TEXT, fmt TEXT, "
    "kernels_json TEXT, n_kernels INTEGER, recorded_at REAL, PRIMARY KEY (device, config_key, model_ref)",
    "kernel_calibrations": "device TEXT, config_key TEXT, form TEXT, coef_json TEXT, meta_json TEXT, "
    "fitted_at REAL, PRIMARY KEY (device, config_key)",
    "fusion_rules": "device TEXT, config_key TEXT, op TEXT, act TEXT, verdict TEXT, fused_ms REAL, "
    "first_ms REAL, second_ms REAL, overhead_ms REAL, saved_ms REAL, second_cost_ms REAL, "
    "measured_at REAL, PRIMARY KEY (device, config_key, op, act)",
    "arch_predictors": "space TEXT, device TEXT, config_key TEXT, kind TEXT, model_json TEXT, n_samples INTEGER, "
    "n_features INTEGER, fit_seconds REAL, metrics_json TEXT, validation TEXT, sources_json TEXT, "
    "fitted_at REAL, PRIMARY KEY (space, device, config_key)",
    "predictor_builds": "device TEXT, config_key TEXT, spent_s REAL, rounds INTEGER, seed INTEGER, "
    "updated_at REAL, summary_json TEXT, PRIMARY KEY (device, config_key)",
}
_BASE_INDEXES = {
    "idx_kernel_measurements_device_config_key_op": "kernel_measurements (device, config_key, op)",
    "idx_arch_measurements_space_device": "arch_measurements (space, device)",
}


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table`` (empty when it does not exist)."""
    return [r[1] for r in conn.execute(f"PRAGMA table_info([{table}])").fetchall()]


def add_column(conn: sqlite3.Connection, table: str, name: str, sql_type: str) -> None:
    """``ALTER TABLE ... ADD COLUMN``, skipped when the column is already there."""
    if name not in columns(conn, table):
        conn.execute(f"ALTER TABLE [{table}] ADD COLUMN [{name}] {sql_type}")


def _m1_base(conn: sqlite3.Connection) -> None:
    """Every table of the unversioned schema (only those missing are created)."""
    for table, cols in BASE_TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS [{table}] ({cols})")
    for index, on in _BASE_INDEXES.items():
        conn.execute(f"CREATE INDEX IF NOT EXISTS [{index}] ON {on}")


def _m2_predictor_format(conn: sqlite3.Connection) -> None:
    """Kernel predictors are stored as data (``format`` names it); rows of the old
    pickle format keep a NULL format and are refused when loaded, never unpickled."""
    add_column(conn, "kernel_predictors", "format", "TEXT")


def _m3_device_identity(conn: sqlite3.Connection) -> None:
    """A device is identified by its facts as well as its name: the fingerprint of its
    identifying facts, taken at registration (NULL for older rows: computed from their facts)."""
    add_column(conn, "devices", "fingerprint", "TEXT")


def _m4_drift_sentinel(conn: sqlite3.Connection) -> None:
    """The drift sentinel: each kernel row's sentinel level and its median normalized by it
    (NULL for rows measured before), the reference medians of each device + config, and
    every sentinel check of a batch."""
    add_column(conn, "kernel_measurements", "sentinel_level", "REAL")
    add_column(conn, "kernel_measurements", "median_norm_ms", "REAL")
    conn.execute("CREATE TABLE IF NOT EXISTS [sentinel_reference] (device TEXT, config_key TEXT, kernel_key TEXT, "
                 "median_ms REAL, measured_at REAL, PRIMARY KEY (device, config_key, kernel_key))")
    conn.execute("CREATE TABLE IF NOT EXISTS [sentinel_checks] (id INTEGER PRIMARY KEY, device TEXT, config_key TEXT, "
                 "measured_at REAL, level REAL, medians_json TEXT, note TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS [idx_sentinel_checks_device_config_key_measured_at] "
                 "ON sentinel_checks (device, config_key, measured_at)")


_HISTORY_COLUMNS = ("device", "config_key", "runtime_version", "median_ms", "mean_ms", "std_ms", "p10_ms",
                    "p90_ms", "n", "rel_ci", "stable", "energy_mj", "energy_note", "environment_json",
                    "agent_version", "measured_at")


def _m5_history(conn: sqlite3.Connection) -> None:
    """Measurements are kept, not replaced: every stored kernel or model measurement is also
    appended to ``measurement_history`` (the main tables keep the latest); rows already in the
    main tables start the history."""
    cols = ", ".join(_HISTORY_COLUMNS)
    conn.execute("CREATE TABLE IF NOT EXISTS [measurement_history] (id INTEGER PRIMARY KEY, kind TEXT, "
                 "device TEXT, config_key TEXT, item_key TEXT, name TEXT, runtime_version TEXT, median_ms REAL, "
                 "mean_ms REAL, std_ms REAL, p10_ms REAL, p90_ms REAL, n INTEGER, rel_ci REAL, stable INTEGER, "
                 "energy_mj REAL, energy_note TEXT, environment_json TEXT, agent_version TEXT, measured_at REAL, "
                 "sentinel_level REAL)")
    conn.execute("CREATE INDEX IF NOT EXISTS [idx_measurement_history_device_item_key] "
                 "ON measurement_history (device, item_key, measured_at)")
    conn.execute(f"INSERT INTO measurement_history (kind, item_key, name, sentinel_level, {cols}) "
                 f"SELECT 'kernel', kernel_key, NULL, sentinel_level, {cols} FROM kernel_measurements")
    conn.execute(f"INSERT INTO measurement_history (kind, item_key, name, sentinel_level, {cols}) "
                 f"SELECT 'model', model_ref, model_name, NULL, {cols} FROM model_measurements")


def _m6_layers(conn: sqlite3.Connection) -> None:
    """Measured per-layer times of a whole model (``profile model --per-layer``), kept with its row
    and in the history: a JSON list of {layer, op, median_ms, runs}."""
    add_column(conn, "model_measurements", "layers_json", "TEXT")
    add_column(conn, "measurement_history", "layers_json", "TEXT")


def _m7_speed_checks(conn: sqlite3.Connection) -> None:
    """The speed check's measurements (:mod:`edgelat.predictors.speed`): each probe model's
    latency now, beside the build's figure it was compared with, so that checks a few minutes
    apart are combined."""
    conn.execute("CREATE TABLE IF NOT EXISTS [speed_checks] (id INTEGER PRIMARY KEY, device TEXT, config_key TEXT, "
                 "model_ref TEXT, then_ms REAL, now_ms REAL, measured_at REAL)")
    conn.execute("CREATE INDEX IF NOT EXISTS [idx_speed_checks_device_config_key_measured_at] "
                 "ON speed_checks (device, config_key, measured_at)")


#: Applied in order; a database at version N has had the first N applied.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m1_base,
    _m2_predictor_format,
    _m3_device_identity,
    _m4_drift_sentinel,
    _m5_history,
    _m6_layers,
    _m7_speed_checks,
]
LATEST = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


class NewerSchema(Exception):
    """The database was written by a newer edgelat (its version is beyond :data:`LATEST`)."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`LATEST`; returns the version it had before.

    The write lock is taken first (``BEGIN IMMEDIATE``) and the version read again
    under it, so two processes opening an old database at once migrate it once.
    """
    before = version(conn)
    if before == LATEST:
        return before
    if before > LATEST:
        raise NewerSchema(before)
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        now = version(conn)
        if now > LATEST:
            raise NewerSchema(now)
        for step in MIGRATIONS[now:]:
            step(conn)
        conn.execute(f"PRAGMA user_version = {LATEST}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return before
