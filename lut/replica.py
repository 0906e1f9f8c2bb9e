"""The tables as one replica of a set shared by several hubs: what changed here, applying what changed elsewhere.

Hubs on one PostgreSQL keep their own SQLite tables and exchange row changes through an
append-only log in the hub database (:mod:`edgelat.hub.shared_tables`). This module is the
SQLite side, turned on by :func:`enable` (only a sharing hub does; other databases never get it):

- triggers on every table record which rows changed (``_replica_keys``: a row's key, a
  change counter ``ver`` and the counter last published ``pub_ver``, and ``log_id``, the log
  entry this replica's row is known to match);
- :func:`changed_rows` reads the rows to publish, :func:`mark_published` records their log ids;
- :func:`apply` stores entries of other replicas, idempotently, by key, with the watermark
  in the same transaction. An entry is skipped when this replica changed the row since
  (unpublished, or published later in the log): the later change wins everywhere, and a row
  applied here is marked as published, so it never echoes back.

Tables with a declared primary key are keyed by it (``json_array`` of its columns). Append-only
tables keyed by SQLite's rowid (``measurement_history``, ``sentinel_checks``) are keyed in the
log by (replica that first stored the row, its rowid there), mapped to local rowids in
``_replica_rowids``, so the same row is never stored twice under two ids.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

import sqlite_utils

from edgelat.lut import faults as _faults

PREFIX = "_replica_"
_STATE = "_replica_state"
_KEYS = "_replica_keys"
_ROWIDS = "_replica_rowids"


@dataclass(frozen=True)
class Change:
    """One row to publish: its table, its key in the log, its content (None: deleted), and what
    :func:`mark_published` needs to mark it."""

    table: str
    key: str
    row: dict[str, Any] | None
    local_key: str
    ver: int


@dataclass(frozen=True)
class Entry:
    """One entry of the shared log: ``row`` None is a delete."""

    id: int
    origin: str
    table: str
    key: str
    row: dict[str, Any] | None


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    pk: tuple[str, ...]  # empty: keyed by rowid
    rowid: str  # the rowid column (its alias, or "rowid") for rowid-keyed tables


_KNOWN: "weakref.WeakKeyDictionary[sqlite3.Connection, tuple[int, dict[str, _Table]]]" = weakref.WeakKeyDictionary()


def _tables(conn: sqlite3.Connection) -> dict[str, _Table]:
    """The tables to share and their keys (looked up again only when the schema changed)."""
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    known = _KNOWN.get(conn)
    if known is not None and known[0] == version:
        return known[1]
    out = _read_tables(conn)
    try:
        _KNOWN[conn] = (version, out)
    except TypeError:  # a connection class that takes no weak reference: look it up each time
        pass
    return out


def _read_tables(conn: sqlite3.Connection) -> dict[str, _Table]:
    out: dict[str, _Table] = {}
    names = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table' order by name")]
    for name in names:
        if name.startswith(("sqlite_", PREFIX)):
            continue
        info = conn.execute(f"PRAGMA table_info([{name}])").fetchall()
        cols = tuple(r[1] for r in info)
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        if len(pk) == 1 and (next(r[2] for r in info if r[1] == pk[0]) or "").upper() == "INTEGER":
            out[name] = _Table(name, cols, (), pk[0])  # INTEGER PRIMARY KEY: the rowid itself
        elif not pk:
            out[name] = _Table(name, cols, (), "rowid")
        else:
            out[name] = _Table(name, cols, pk, "")
    return out


def _key_sql(t: _Table, which: str) -> str:
    cols = t.pk or (t.rowid,)
    return "json_array(" + ", ".join(f"{which}.[{c}]" for c in cols) + ")"


def _mark(t: _Table, which: str, where: str = "") -> str:
    cond = f" WHERE {where}" if where else " WHERE true"
    return (f"INSERT INTO {_KEYS} (tbl, key, ver, pub_ver, log_id) SELECT '{t.name}', {_key_sql(t, which)}, 1, 0, 0"
            f"{cond} ON CONFLICT (tbl, key) DO UPDATE SET ver = ver + 1;")


def enable(db: sqlite_utils.Database, log: str) -> str:
    """Record changes to every table from now on (idempotent); returns this replica's id.

    ``log`` names the shared log (the hub database's id): joining another log starts over
    (watermark 0) and publishes every row again. Rows stored before the first call are
    published too (they are marked changed)."""
    conn = db.conn
    with _faults.translated(), conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_STATE} (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_KEYS} (tbl TEXT, key TEXT, ver INTEGER, pub_ver INTEGER, "
                     "log_id INTEGER, PRIMARY KEY (tbl, key))")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_KEYS}_dirty ON {_KEYS} (tbl) WHERE ver > pub_ver")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_ROWIDS} (tbl TEXT, origin TEXT, origin_id INTEGER, "
                     "local_id INTEGER, PRIMARY KEY (tbl, origin, origin_id))")
        conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {_ROWIDS}_local ON {_ROWIDS} (tbl, local_id)")
        state = dict(conn.execute(f"select key, value from {_STATE}").fetchall())
        if "replica" not in state:
            state["replica"] = uuid.uuid4().hex
            conn.execute(f"INSERT INTO {_STATE} VALUES ('replica', ?)", [state["replica"]])
        if state.get("log") != log:
            conn.execute(f"INSERT OR REPLACE INTO {_STATE} VALUES ('log', ?), ('watermark', '0')", [log])
            conn.execute(f"UPDATE {_KEYS} SET pub_ver = 0, log_id = 0")
        for t in _tables(conn).values():
            trig = f"{PREFIX}{t.name}"
            changed_key = f"{_key_sql(t, 'OLD')} IS NOT {_key_sql(t, 'NEW')}"
            if conn.execute("select 1 from sqlite_master where type = 'trigger' and name = ?",
                            [trig + "_ins"]).fetchone() is None:
                conn.execute(f"INSERT INTO {_KEYS} (tbl, key, ver, pub_ver, log_id) SELECT '{t.name}', "
                             f"{_key_sql(t, f'[{t.name}]')}, 1, 0, 0 FROM [{t.name}] WHERE true "
                             "ON CONFLICT (tbl, key) DO UPDATE SET ver = ver + 1")
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS [{trig}_ins] AFTER INSERT ON [{t.name}] BEGIN "
                         f"{_mark(t, 'NEW')} END")
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS [{trig}_del] AFTER DELETE ON [{t.name}] BEGIN "
                         f"{_mark(t, 'OLD')} END")
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS [{trig}_upd] AFTER UPDATE ON [{t.name}] BEGIN "
                         f"{_mark(t, 'NEW')} {_mark(t, 'OLD', changed_key)} END")
    return state["replica"]


def replica_id(db: sqlite_utils.Database) -> str | None:
    """This database's replica id (None until :func:`enable`)."""
    try:
        row = db.conn.execute(f"select value from {_STATE} where key = 'replica'").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def watermark(db: sqlite_utils.Database) -> int:
    """The last log entry this replica has taken in."""
    with _faults.translated():
        row = db.conn.execute(f"select value from {_STATE} where key = 'watermark'").fetchone()
    return int(row[0]) if row else 0


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


def dump_row(row: dict[str, Any] | None) -> str | None:
    """A row as JSON text for the log (BLOBs as ``{"b64": ...}``)."""
    return None if row is None else json.dumps({k: _encode(v) for k, v in row.items()})


def load_row(raw: str | None) -> dict[str, Any] | None:
    return None if raw is None else {k: _decode(v) for k, v in json.loads(raw).items()}


def changed_rows(db: sqlite_utils.Database, limit: int = 1000) -> list[Change]:
    """Rows changed here and not yet published, with their content now (at most ``limit``)."""
    conn = db.conn
    me = replica_id(db)
    out: list[Change] = []
    with _faults.translated():
        tables = _tables(conn)
        began = not conn.in_transaction
        if began:
            conn.execute("BEGIN")  # one snapshot for the keys and the rows they name
        try:
            dirty = conn.execute(f"select tbl, key, ver from {_KEYS} where ver > pub_ver limit ?", [limit]).fetchall()
            for tbl, key, ver in dirty:
                t = tables.get(tbl)
                if t is None:  # the table went away: nothing to say about it
                    continue
                cols = t.pk or (t.rowid,)
                values = json.loads(key)
                where = " and ".join(f"[{c}] IS ?" for c in cols)
                select = ", ".join(f"[{c}]" for c in t.columns)
                cur = conn.execute(f"select {select} from [{tbl}] where {where}", values)
                found = cur.fetchone()
                row = None if found is None else dict(zip(t.columns, found))
                if not t.pk:
                    origin = conn.execute(f"select origin, origin_id from {_ROWIDS} where tbl = ? and local_id = ?",
                                          [tbl, values[0]]).fetchone()
                    log_key = json.dumps(list(origin) if origin else [me, values[0]])
                    if row is not None and t.rowid != "rowid":
                        row.pop(t.rowid, None)  # the id is this replica's; others give it their own
                else:
                    log_key = key
                out.append(Change(tbl, log_key, row, key, ver))
        finally:
            if began:
                conn.execute("COMMIT")
    return out


def mark_published(db: sqlite_utils.Database, published: Iterable[tuple[Change, int]]) -> None:
    """Record that each change is now log entry ``id`` (a row changed again meanwhile stays changed)."""
    with _faults.translated(), db.conn:
        db.conn.executemany(f"UPDATE {_KEYS} SET pub_ver = max(pub_ver, ?), log_id = max(log_id, ?) "
                            "WHERE tbl = ? AND key = ?",
                            [(c.ver, log_id, c.table, c.local_key) for c, log_id in published])


def _local_rowid(conn: sqlite3.Connection, me: str, tbl: str, origin: str, origin_id: int) -> int | None:
    if origin == me:
        return origin_id
    row = conn.execute(f"select local_id from {_ROWIDS} where tbl = ? and origin = ? and origin_id = ?",
                       [tbl, origin, origin_id]).fetchone()
    return None if row is None else row[0]


def apply(db: sqlite_utils.Database, entries: list[Entry]) -> int:
    """Take in log entries (in log order) from other replicas; returns how many rows changed here.
    The watermark moves to the last entry in the same transaction."""
    if not entries:
        return 0
    conn = db.conn
    me = replica_id(db)
    changed = 0
    with _faults.translated(), conn:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        tables = _tables(conn)
        for e in entries:
            t = tables.get(e.table)
            if e.origin == me or t is None:
                continue
            if t.pk:
                local_key = conn.execute("select json(?)", [e.key]).fetchone()[0]
                local_id = None
            else:
                origin, origin_id = json.loads(e.key)
                local_id = _local_rowid(conn, me, t.name, origin, int(origin_id))
                local_key = None if local_id is None else json.dumps([local_id], separators=(",", ":"))
            if local_key is not None:
                mine = conn.execute(f"select ver > pub_ver, log_id from {_KEYS} where tbl = ? and key = ?",
                                    [t.name, local_key]).fetchone()
                if mine is not None and (mine[0] or mine[1] >= e.id):
                    continue  # changed here since: this replica's change comes later in the log
            if t.pk:
                _apply_keyed(conn, t, json.loads(e.key), e.row)
            else:
                local_id = _apply_rowid(conn, me, t, origin, int(origin_id), local_id, e.row)
                local_key = None if local_id is None else json.dumps([local_id], separators=(",", ":"))
            if local_key is not None:
                conn.execute(f"INSERT INTO {_KEYS} (tbl, key, ver, pub_ver, log_id) VALUES (?, ?, 0, 0, ?) "
                             "ON CONFLICT (tbl, key) DO UPDATE SET pub_ver = ver, log_id = excluded.log_id",
                             [t.name, local_key, e.id])
            changed += 1
        conn.execute(f"INSERT OR REPLACE INTO {_STATE} VALUES ('watermark', ?)", [str(entries[-1].id)])
    return changed


def _apply_keyed(conn: sqlite3.Connection, t: _Table, key: list, row: dict[str, Any] | None) -> None:
    if row is None:
        conn.execute(f"DELETE FROM [{t.name}] WHERE " + " and ".join(f"[{c}] IS ?" for c in t.pk), key)
        return
    cols = [c for c in t.columns if c in row]
    updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in cols if c not in t.pk)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    conn.execute(f"INSERT INTO [{t.name}] ({', '.join(f'[{c}]' for c in cols)}) "
                 f"VALUES ({', '.join('?' * len(cols))}) ON CONFLICT ({', '.join(f'[{c}]' for c in t.pk)}) {conflict}",
                 [row[c] for c in cols])


def _apply_rowid(conn: sqlite3.Connection, me: str, t: _Table, origin: str, origin_id: int, local_id: int | None,
                 row: dict[str, Any] | None) -> int | None:
    """Store (or delete) a rowid-keyed row; returns its local rowid (None once deleted)."""
    if row is None:
        if local_id is not None:
            conn.execute(f"DELETE FROM [{t.name}] WHERE [{t.rowid}] = ?", [local_id])
            conn.execute(f"DELETE FROM {_ROWIDS} WHERE tbl = ? AND local_id = ?", [t.name, local_id])
        return local_id
    cols = [c for c in t.columns if c in row and c != t.rowid]
    if local_id is not None:
        cur = conn.execute(f"UPDATE [{t.name}] SET {', '.join(f'[{c}] = ?' for c in cols)} WHERE [{t.rowid}] = ?",
                           [row[c] for c in cols] + [local_id])
        if cur.rowcount:
            return local_id
        conn.execute(f"DELETE FROM {_ROWIDS} WHERE tbl = ? AND local_id = ?", [t.name, local_id])
    cur = conn.execute(f"INSERT INTO [{t.name}] ({', '.join(f'[{c}]' for c in cols)}) "
                       f"VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
    local_id = cur.lastrowid
    if origin != me:
        conn.execute(f"INSERT OR REPLACE INTO {_ROWIDS} VALUES (?, ?, ?, ?)", [t.name, origin, origin_id, local_id])
    return local_id
