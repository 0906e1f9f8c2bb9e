"""PostgreSQL's hot statements on plain psycopg connections from a small pool.

Submitting, leasing, finishing, progress, heartbeats and the table log each run one statement
without a transaction around it (:mod:`edgelat.hub.pg_statements`). Through SQLAlchemy's
execution machinery (pool checkout, isolation options set and reset, events, result wrapping) such
a statement costs the hub a few times the driver's own work. Here the same statements are compiled
once to psycopg's SQL text and run on autocommit connections of a ``psycopg_pool`` pool, prepared
on the server at first use. Everything else keeps the engine. The SQLite twin is
:mod:`edgelat.hub.raw_sqlite`.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from edgelat.hub.db import RETRY_SQLSTATES
from edgelat.hub.raw_sqlite import Result

#: (SQL text with ``%(name)s`` marks, the values the statement itself binds, by name)
Compiled = tuple[str, dict[str, Any]]


def compile_statements(statements: Iterable[ClauseElement], dialect: Dialect) -> dict[int, Compiled]:
    """Each statement, by ``id``, compiled for psycopg. A statement whose parameters need the
    dialect's conversion cannot run here: refused when the hub opens, never at a job."""
    out: dict[int, Compiled] = {}
    for stmt in statements:
        compiled = stmt.compile(dialect=dialect)
        if compiled._bind_processors:  # noqa: SLF001 - looked at once, here
            raise RuntimeError(f"hub statement {str(compiled)[:60]!r} needs bind processing: "
                               "it cannot run on a plain psycopg connection")
        given = {compiled.bind_names[b] for b in compiled.binds.values() if b.required}
        fixed = {k: v for k, v in compiled.construct_params(_check=False).items() if k not in given}
        out[id(stmt)] = (str(compiled), fixed)
    return out


class Connection:
    """Statements on one pooled connection: ``execute(stmt, params)`` as SQLAlchemy's, for the
    statements compiled at open only (any other one is a programming error)."""

    def __init__(self, raw: Any, compiled: dict[int, Compiled]) -> None:
        self.raw = raw
        self._compiled = compiled

    def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> Result:
        try:
            sql, fixed = self._compiled[id(stmt)]
        except KeyError:
            raise RuntimeError(f"statement not compiled for the hub's plain connections: {str(stmt)[:80]!r}") from None
        cur = self.raw.execute(sql, {**fixed, **params} if params else fixed, prepare=True)
        rows = cur.fetchall() if cur.description is not None else []
        return Result(cur.rowcount, rows)


def is_transient(exc: BaseException, integrity_ok: bool) -> bool:
    """A lost race worth retrying (as :func:`edgelat.hub.db.is_transient` says for the engine's
    errors): deadlock, serialisation failure, lock not available, a pooled connection the server
    dropped (the pool replaces it), or (``integrity_ok``) a unique violation."""
    from psycopg_pool import PoolTimeout

    state = getattr(exc, "sqlstate", None)
    if state in RETRY_SQLSTATES or (integrity_ok and state == "23505"):
        return True
    return broken(exc) and not isinstance(exc, PoolTimeout)


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is psycopg's (or its pool's, a subclass): the database said no, or went away."""
    import psycopg

    return isinstance(exc, psycopg.Error)


def broken(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection it came from is gone (closed under a statement, its
    server process terminated): another pooled connection may still work."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in ("57P01", "57P02"))


def pool(connect_args: dict[str, Any], size: int, name: str) -> Any:
    """An open pool of autocommit connections whose rows are named tuples (as SQLAlchemy's)."""
    from psycopg.rows import namedtuple_row
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        "", min_size=1, max_size=size, name=name, open=True, timeout=60.0,
        kwargs={**connect_args, "autocommit": True, "row_factory": namedtuple_row})
