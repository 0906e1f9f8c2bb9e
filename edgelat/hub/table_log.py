"""The shared table log in the hub database: append changed rows, read entries after a watermark.

Entries are appended under one lock (PostgreSQL: a transaction-level advisory lock; SQLite:
its write lock), so they commit in id order and a reader that saw entry N never later finds
an entry below N appear: the watermark of :mod:`edgelat.lut.replica` never skips one.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import Connection

from edgelat.hub.schema import meta, table_log
from edgelat.lut.replica import Change, Entry, dump_row, load_row

_APPEND_LOCK = 70110012  # the advisory lock appending holds (PostgreSQL)
_INSERT = table_log.insert().returning(table_log.c.id, sort_by_parameter_order=True)
_AFTER = (select(table_log.c.id, table_log.c.origin, table_log.c.tbl, table_log.c.key, table_log.c.row)
          .where(table_log.c.id > bindparam("p_after")).order_by(table_log.c.id).limit(bindparam("p_limit")))
_NAME = select(meta.c.value).where(meta.c.key == "tables_log")


def log_name(store: Any) -> str:
    """The id of this database's table log (a replica that joined another log starts over)."""
    return store.transaction(lambda c: c.execute(_NAME).scalar_one(), write=False)


def append(store: Any, origin: str, changes: list[Change]) -> list[int]:
    """Append ``changes`` (written by replica ``origin``); returns their log ids, in order."""
    if not changes:
        return []
    now = time.time()
    rows = [{"origin": origin, "tbl": c.table, "key": c.key, "row": dump_row(c.row), "at": now} for c in changes]

    def run(conn: Connection) -> list[int]:
        if store.is_postgresql:
            conn.execute(text("SELECT pg_advisory_xact_lock(:p_key)"), {"p_key": _APPEND_LOCK})
        return [r.id for r in conn.execute(_INSERT, rows)]

    return store.transaction(run)


def after(store: Any, watermark: int, limit: int) -> list[Entry]:
    """Entries after ``watermark``, in log order, at most ``limit``."""
    rows = store.transaction(lambda c: c.execute(_AFTER, {"p_after": watermark, "p_limit": limit}).all(),
                             write=False)
    return [Entry(r.id, r.origin, r.tbl, r.key, load_row(r.row)) for r in rows]
