"""The SQLite queue's hot transactions on plain ``sqlite3`` connections.

Submitting, finishing, progress and heartbeats run a few tiny statements each; through
SQLAlchemy's execution machinery (pool checkout, events, result wrapping) they cost several
times what SQLite takes to run them. Here the same statements (:mod:`edgelat.hub.statements`)
are compiled once to SQL text, and run on one plain connection per thread in a ``BEGIN
IMMEDIATE`` transaction under the store's write lock, exactly as the engine's would be.
PostgreSQL has its own twin, :mod:`edgelat.hub.raw_pg`.
"""

from __future__ import annotations

import collections
import dataclasses
import sqlite3
import threading
from typing import Any, Iterator

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from edgelat.hub.db import SQLITE_BUSY_S

#: (SQL text with ``?`` marks, per mark: the parameter's name, or a one-tuple holding the literal value
#: that the statement itself binds there)
Compiled = tuple[str, tuple[Any, ...]]
#: the only conversion a bound parameter may need (int to float, which SQLite's REAL columns do anyway)
_HARMLESS = {"to_float"}


def compile_statements(statements: Any, extra: dict[str, ClauseElement], dialect: Dialect,
                       insert_keys: dict[str, list[str]]) -> dict[int, Compiled]:
    """Each statement of ``statements`` (a dataclass of them) and ``extra``, by ``id``, compiled for
    SQLite. ``insert_keys``: the columns an INSERT statement (by field name) is given."""
    out: dict[int, Compiled] = {}
    items = [(f.name, getattr(statements, f.name)) for f in dataclasses.fields(statements)]
    for name, stmt in items + list(extra.items()):
        if not isinstance(stmt, ClauseElement):
            continue
        compiled = stmt.compile(dialect=dialect, column_keys=insert_keys.get(name))
        slots: list[Any] = []
        for key in compiled.positiontup or ():
            proc = compiled._bind_processors.get(key)  # noqa: SLF001 - looked at once, here
            if proc is not None and getattr(proc, "__name__", "") not in _HARMLESS:
                raise RuntimeError(f"hub statement {name} needs bind processing: it cannot run on plain sqlite3")
            bind = compiled.binds[key]
            slots.append(key if key.startswith("p_") or key in insert_keys.get(name, ()) else (bind.effective_value,))
        out[id(stmt)] = (str(compiled), tuple(slots))
    return out


class Result:
    """What the store reads off an executed statement (the part of SQLAlchemy's result it uses):
    the rows a SELECT or RETURNING gave (named tuples) and the rows it changed. Shared with
    :mod:`edgelat.hub.raw_pg`."""

    def __init__(self, rowcount: int, rows: list[Any]) -> None:
        self.rowcount = max(rowcount, len(rows))
        self._rows = rows

    @classmethod
    def of(cls, cursor: sqlite3.Cursor) -> "Result":
        rows: list[Any] = []
        if cursor.description is not None:  # a SELECT, or RETURNING: the rows it returned
            row_type = _row_type(tuple(d[0] for d in cursor.description))
            rows = [row_type(*r) for r in cursor.fetchall()]
        return cls(cursor.rowcount, rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise sqlite3.DatabaseError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def all(self) -> list[Any]:
        return list(self._rows)

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


_ROW_TYPES: dict[tuple[str, ...], type] = {}


def _row_type(names: tuple[str, ...]) -> type:
    row_type = _ROW_TYPES.get(names)
    if row_type is None:
        row_type = _ROW_TYPES[names] = collections.namedtuple("Row", names, rename=True)  # type: ignore[misc]
    return row_type


class Connection:
    """One transaction's statements on a plain connection: ``execute(stmt, params)`` as SQLAlchemy's."""

    def __init__(self, raw: sqlite3.Connection, compiled: dict[int, Compiled]) -> None:
        self.raw = raw
        self._compiled = compiled

    def execute(self, stmt: Any, params: dict[str, Any] | list[dict[str, Any]] | None = None) -> Result:
        sql, slots = self._compiled[id(stmt)]
        if isinstance(params, list):
            return Result.of(self.raw.executemany(sql, [_values(slots, p) for p in params]))
        return Result.of(self.raw.execute(sql, _values(slots, params or {})))


def _values(slots: tuple[Any, ...], params: dict[str, Any]) -> list[Any]:
    return [params[s] if s.__class__ is str else s[0] for s in slots]


class Connections:
    """One plain connection per thread to a SQLite file (closed together by :meth:`close`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def get(self) -> sqlite3.Connection:
        raw = getattr(self._local, "raw", None)
        if raw is None:
            raw = sqlite3.connect(self.path, timeout=SQLITE_BUSY_S, isolation_level=None, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
            self._local.raw = raw
            with self._guard:
                self._all.append(raw)
        return raw

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for raw in conns:
            try:
                raw.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
