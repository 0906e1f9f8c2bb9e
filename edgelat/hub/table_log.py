"""The shared table log in the hub database: append changed rows, read entries after a watermark, compact.

Entries are appended under one lock (PostgreSQL: a transaction-level advisory lock; SQLite:
its write lock), so they commit in id order and a reader that saw entry N never later finds
an entry below N appear: the watermark of :mod:`edgelat.lut.replica` never skips one.

:func:`compact` keeps the log from growing with every change: up to the compaction point
(all but the last entries) it drops each entry that a later entry of the same row supersedes,
so that part of the log is a snapshot, one entry per row (deletes included). A replica behind
the point reads the snapshot and then the tail, which is kept whole; one at watermark 0 (a hub
joining late) reads each row once. What a replica ends with is unchanged: every entry dropped
had a later one for its row that the replica still reads, and :func:`edgelat.lut.replica.apply`
keeps the latest change of a row (so nothing is lost, stored twice, or echoed back). Ids never
change, so watermarks stay valid.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import bindparam, case, func, select, text
from sqlalchemy.engine import Connection

from edgelat.hub.schema import meta, table_log
from edgelat.lut.replica import Change, Entry, dump_row, load_row

_APPEND_LOCK = 70110012  # the advisory lock appending holds (PostgreSQL)
_COMPACT_LOCK = 70110013  # the advisory lock compacting holds (PostgreSQL): one hub at a time
_POINT = "tables_log_compacted"  # hub_meta: the compaction point (entries up to it are compacted)
#: entries at the end of the log that compaction leaves whole
KEEP_TAIL = 10_000
#: entries compacted per transaction
COMPACT_STEP = 5_000
_INSERT = table_log.insert().returning(table_log.c.id, sort_by_parameter_order=True)
# a replica's own entries come back without their row: it wrote them, and skips them
_AFTER = (select(table_log.c.id, table_log.c.origin, table_log.c.tbl, table_log.c.key,
                 case((table_log.c.origin == bindparam("p_me"), None), else_=table_log.c.row).label("row"))
          .where(table_log.c.id > bindparam("p_after")).order_by(table_log.c.id).limit(bindparam("p_limit")))
_NAME = select(meta.c.value).where(meta.c.key == "tables_log")
# PostgreSQL: the append lock and every row in one statement, run without a transaction around it (its
# lock is held until it commits). The lock is taken before any row is made: each row joins its result,
# and the sort below the insert reads every row first.
# The rows travel as one JSON array of [table, key, row] (json.dumps is C; a TEXT[] parameter is
# escaped element by element in Python).
_PG_APPEND = text(
    "WITH lock AS (SELECT pg_advisory_xact_lock(:p_key) AS held)"
    " INSERT INTO hub_table_log (origin, tbl, key, row, at)"
    " SELECT CAST(:p_origin AS TEXT), u.e->>0, u.e->>1, u.e->>2, CAST(:p_at AS DOUBLE PRECISION)"
    " FROM json_array_elements(CAST(:p_entries AS JSON)) WITH ORDINALITY AS u(e, n) CROSS JOIN lock"
    " ORDER BY u.n RETURNING id")
#: what the store runs on its plain connections (PostgreSQL; see HubStore.quick)
PG_HOT = (_PG_APPEND, _AFTER)


def log_name(store: Any) -> str:
    """The id of this database's table log (a replica that joined another log starts over)."""
    return store.transaction(lambda c: c.execute(_NAME).scalar_one(), write=False)


def append(store: Any, origin: str, changes: list[Change]) -> list[int]:
    """Append ``changes`` (written by replica ``origin``); returns their log ids, in order."""
    if not changes:
        return []
    now = time.time()
    rows = [{"origin": origin, "tbl": c.table, "key": c.key, "row": dump_row(c.row), "at": now} for c in changes]

    if store.is_postgresql:
        entries = json.dumps([[r["tbl"], r["key"], r["row"]] for r in rows])
        params = {"p_key": _APPEND_LOCK, "p_origin": origin, "p_entries": entries, "p_at": now}
        # ids come from one sequence, in the order the rows go in (the statement's sort): in input order
        return sorted(r.id for r in store.quick(lambda c: c.execute(_PG_APPEND, params).all()))
    return store.transaction(lambda c: [r.id for r in c.execute(_INSERT, rows)])


def after(store: Any, watermark: int, limit: int, me: str = "") -> list[Entry]:
    """Entries after ``watermark``, in log order, at most ``limit``; those of replica ``me`` without
    their row (it has them: :func:`edgelat.lut.replica.apply` skips them)."""
    rows = store.quick(lambda c: c.execute(_AFTER, {"p_after": watermark, "p_limit": limit, "p_me": me}).all())
    return [Entry(r.id, r.origin, r.tbl, r.key, load_row(r.row)) for r in rows]


def prepare(store: Any) -> None:
    """Create what compaction needs in a database made before it had it (idempotent)."""
    index = next(i for i in table_log.indexes if i.name == "ix_hub_table_log_key")

    def run(conn: Connection) -> None:
        if store.is_postgresql:
            conn.execute(text("SELECT pg_advisory_xact_lock(:p_key)"), {"p_key": _COMPACT_LOCK})
        index.create(conn, checkfirst=True)

    store.transaction(run)


_SUPERSEDED = text(
    "DELETE FROM hub_table_log WHERE id IN (SELECT o.id FROM hub_table_log n JOIN hub_table_log o "
    "ON o.tbl = n.tbl AND o.key = n.key AND o.id < n.id WHERE n.id > :p_from AND n.id <= :p_to)")
_MAX_ID = select(func.max(table_log.c.id))
_COUNT = select(func.count()).select_from(table_log)


def compaction_point(store: Any) -> int:
    """The id up to which the log is compacted (0: never)."""
    raw = store.transaction(lambda c: c.execute(select(meta.c.value).where(meta.c.key == _POINT)).scalar(),
                            write=False)
    return int(raw or 0)


def entries(store: Any) -> int:
    """How many entries the log holds."""
    return int(store.transaction(lambda c: c.execute(_COUNT).scalar_one(), write=False))


def compact(store: Any, keep: int = KEEP_TAIL, step: int = COMPACT_STEP, max_steps: int | None = None) -> int:
    """Compact the log up to all but its last ``keep`` entries; returns how many entries were dropped.

    Each step covers the entries after the compaction point, up to ``step`` of them: it drops every
    earlier entry of the rows they name, and moves the point, in one transaction; ``max_steps``
    stops after that many (a hub compacts a little at a time, so a long log never costs a burst).
    Hubs that call it at once take turns (a PostgreSQL hub finding another at it leaves it to that one)."""
    if keep < 0 or step < 1:
        raise ValueError("compact needs keep >= 0 and step >= 1")
    dropped = 0
    steps = 0
    while max_steps is None or steps < max_steps:
        got = store.transaction(lambda c: _compact_step(c, store.is_postgresql, keep, step))
        if got is None:
            return dropped
        dropped += got
        steps += 1
    return dropped


def _compact_step(conn: Connection, pg: bool, keep: int, step: int) -> int | None:
    """One step of :func:`compact`: entries dropped, or None when there was nothing (more) to do."""
    if pg and not conn.execute(text("SELECT pg_try_advisory_xact_lock(:p_key)"), {"p_key": _COMPACT_LOCK}).scalar():
        return None
    row = conn.execute(select(meta.c.value).where(meta.c.key == _POINT)).first()
    point = int(row.value) if row is not None else 0
    last = conn.execute(_MAX_ID).scalar() or 0
    upto = min(last - keep, point + step)
    if upto <= point:
        return None
    dropped = conn.execute(_SUPERSEDED, {"p_from": point, "p_to": upto}).rowcount
    if row is None:
        conn.execute(meta.insert().values(key=_POINT, value=str(upto)))
    else:
        conn.execute(meta.update().where(meta.c.key == _POINT).values(value=str(upto)))
    return dropped
