"""A read-only copy of some devices' rows as an SQLite file of its own: what a hub sends a reader.

A hub keeps the tables; ``lut show``, ``predict`` and the other read commands run
unchanged against a copy of the rows of the device they ask about (the registry row and
every row keyed by that device: kernel, model and arch rows, history, drift checks,
predictors, calibrations, fusion rules, build progress). :func:`write_snapshot` builds that
copy at the latest schema, in one read transaction of the source, and records in it the
source's version :func:`marker` of those rows, so a client can ask "changed since?" and skip
the copy when not.

The marker is computed from, per table, the device's row count, its largest rowid, its
newest timestamp and the total of its figures, plus its registry row: an added, replaced or
re-measured row changes it, at the cost of an indexed aggregate per table (not a read of
every row).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable

from edgelat.lut import schema as _schema

#: the table, in a snapshot file, that holds its marker and the devices it covers
INFO_TABLE = "snapshot_info"
#: the marker of a copy of nothing (a hub whose tables do not exist yet)
EMPTY_MARKER = "empty"
#: columns whose newest value shows a row written again in place
_TIMESTAMPS = ("measured_at", "fitted_at", "updated_at", "recorded_at")
#: columns whose total shows a figure changed in place (an import replacing latencies)
_FIGURES = ("median_ms", "latency_ms", "level", "n_rows", "spent_s", "n_samples")


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    return conn


def _tables(conn: sqlite3.Connection, schema: str) -> list[tuple[str, list[str]]]:
    """(table, columns) of every table of ``schema`` keyed by a ``device`` column, the registry apart."""
    names = [r[0] for r in conn.execute(
        f"select name from {schema}.sqlite_master where type = 'table' order by name").fetchall()]
    out = []
    for name in names:
        cols = [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info([{name}])").fetchall()]
        if name != "devices" and "device" in cols:
            out.append((name, cols))
    return out


def registry_names(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    """The names in a database's registry (empty when it has none)."""
    try:
        return [r[0] for r in conn.execute(f"select name from {schema}.devices order by name").fetchall()]
    except sqlite3.OperationalError:
        return []


def _marker(conn: sqlite3.Connection, schema: str, devices: Iterable[str]) -> str:
    h = hashlib.sha256()
    h.update(str(conn.execute(f"PRAGMA {schema}.user_version").fetchone()[0]).encode())
    tables = _tables(conn, schema)
    has_registry = "devices" in {r[0] for r in conn.execute(
        f"select name from {schema}.sqlite_master where type = 'table'").fetchall()}
    for device in sorted(set(devices)):
        h.update(b"\0device\0" + device.encode())
        if has_registry:
            row = conn.execute(f"select * from {schema}.devices where name = ?", [device]).fetchone()
            h.update(json.dumps(row, default=str).encode())
        for table, cols in tables:
            aggs = ["count(*)", "max(rowid)"]
            aggs += [f"max([{c}])" for c in _TIMESTAMPS if c in cols]
            aggs += [f"total([{c}])" for c in _FIGURES if c in cols]
            got = conn.execute(f"select {', '.join(aggs)} from {schema}.[{table}] where device = ?",
                               [device]).fetchone()
            h.update(f"\0{table}\0{json.dumps(got, default=str)}".encode())
    return h.hexdigest()


def has_rows(conn: sqlite3.Connection, device: str, schema: str = "main") -> bool:
    """Whether ``device`` has a registry row or any row in a table keyed by device."""
    if device in registry_names(conn, schema):
        return True
    return any(conn.execute(f"select 1 from {schema}.[{t}] where device = ? limit 1", [device]).fetchone()
               for t, _ in _tables(conn, schema))


def open_source(path: str | Path, timeout_s: float = 10.0) -> sqlite3.Connection:
    """A plain connection to the tables a snapshot is taken of (they must exist)."""
    return _connect(Path(path), timeout_s)


def marker(conn: sqlite3.Connection, devices: Iterable[str]) -> str:
    """The version of ``devices``' rows in the database of ``conn``: changes when they change."""
    return _marker(conn, "main", devices)


def write_snapshot(source: str | Path | None, devices: Iterable[str], dest: str | Path, timeout_s: float = 10.0) -> str:
    """Copy the registry rows of ``devices`` and every row keyed by them from the database at
    ``source`` into a new database at ``dest`` (latest schema, rollback journal: one
    self-contained file); returns the marker of what was copied (also stored in ``dest``).
    With ``source`` None the copy is empty (:data:`EMPTY_MARKER`)."""
    devices = sorted(set(devices)) if source is not None else []
    dest = Path(dest)
    conn = _connect(dest, timeout_s)
    try:
        _schema.migrate(conn)
        conn.execute(f"CREATE TABLE [{INFO_TABLE}] (key TEXT PRIMARY KEY, value TEXT)")
        if source is None:
            conn.execute(f"INSERT INTO [{INFO_TABLE}] (key, value) VALUES ('marker', ?), ('devices', '[]')",
                         [EMPTY_MARKER])
            return EMPTY_MARKER
        conn.execute("ATTACH DATABASE ? AS src", [str(source)])
        conn.execute("BEGIN")
        try:
            mark = _marker(conn, "src", devices)
            dest_tables = dict(_tables(conn, "main"))
            dest_tables["devices"] = [r[1] for r in conn.execute("PRAGMA main.table_info([devices])").fetchall()]
            src_tables = dict(_tables(conn, "src"))
            if registry_names(conn, "src") or "devices" in src_tables:
                src_tables["devices"] = [r[1] for r in conn.execute("PRAGMA src.table_info([devices])").fetchall()]
            marks = ",".join("?" * len(devices))
            for table, cols in src_tables.items():
                if table not in dest_tables or not devices:
                    continue
                shared = ", ".join(f"[{c}]" for c in cols if c in dest_tables[table])
                key = "name" if table == "devices" else "device"
                conn.execute(f"INSERT INTO main.[{table}] ({shared}) SELECT {shared} FROM src.[{table}] "
                             f"WHERE [{key}] IN ({marks})", devices)
            conn.execute(f"INSERT INTO main.[{INFO_TABLE}] (key, value) VALUES ('marker', ?), ('devices', ?)",
                         [mark, json.dumps(devices)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    return mark


def snapshot_marker(path: str | Path) -> str | None:
    """The marker a snapshot file holds, or None when the file is missing or not a snapshot."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(str(path), timeout=5.0)
        try:
            row = conn.execute(f"select value from [{INFO_TABLE}] where key = 'marker'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None
