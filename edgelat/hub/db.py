"""Connecting to the hub's database: URLs, engines for SQLite and PostgreSQL, and error lines.

``postgresql://`` URLs use psycopg 3; a bare path means a SQLite file. A database that cannot be
used becomes one :class:`HubDatabaseError` line (password hidden), never a traceback.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from edgelat.errors import BadInput
from edgelat.hub.errors import HubDatabaseError

SQLITE_BUSY_S = 30.0

# One lock per SQLite file for this process's writers: they queue here, in order, instead of in
# SQLite's busy handler, which sleeps in growing steps and makes waits long and uneven.
_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def normalize_url(raw: str) -> URL:
    """The SQLAlchemy URL for a hub database URL or path (BadInput when it is neither)."""
    given = raw
    if not isinstance(raw, str) or not raw.strip():
        raise BadInput("hub database URL is empty: use sqlite:///PATH or postgresql://USER@HOST/DB")
    raw = raw.strip()
    if "://" not in raw:
        raw = "sqlite:///" + os.path.abspath(os.path.expanduser(raw))
    for prefix in ("postgresql://", "postgres://"):
        if raw.startswith(prefix):
            raw = "postgresql+psycopg://" + raw[len(prefix):]
    try:
        url = make_url(raw)
    except ArgumentError:
        raise BadInput(f"hub database URL {given!r} cannot be parsed: use sqlite:///PATH or "
                       "postgresql://USER@HOST/DB") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise BadInput(f"hub database URL {given!r}: only sqlite:///PATH and postgresql://... are supported")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise BadInput("the hub needs a SQLite file it can share between connections, not an in-memory database")
    return url


def sqlite_engine(url: URL, pool_size: int) -> Engine:
    """SQLite in WAL mode; writes begin with ``BEGIN IMMEDIATE`` (reads: connections with the
    execution option ``edgelat_write=False`` begin a plain deferred transaction)."""
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_timeout=60,
        # every use is one transaction the store commits or rolls back itself: nothing to reset
        pool_reset_on_return=None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DBAPI objects
        # We issue BEGIN ourselves (the sqlite3 module's implicit transactions get in the way).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        write = conn.get_execution_options().get("edgelat_write", True)
        # on the driver's connection directly: the statement machinery costs more than the BEGIN
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def sqlite_write_lock(url: URL) -> threading.Lock:
    """The lock this process's writers to that SQLite file share."""
    key = os.path.realpath(url.database)
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


def pg_connect_args(hub_id: str) -> dict:
    """What every connection of a hub to PostgreSQL is opened with: the hub's id names it
    (pg_stat_activity), and an unreachable server is given up on after 10 s."""
    return {"connect_timeout": 10, "application_name": f"edgelat-hub {hub_id}"[:63]}


def pg_engine(url: URL, pool_size: int, hub_id: str) -> Engine:
    """PostgreSQL through psycopg 3."""
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=60,
                         connect_args=pg_connect_args(hub_id))


def db_error(exc: BaseException, shown: str) -> HubDatabaseError:
    """One line saying what is wrong with the database at ``shown`` (a URL without password)."""
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    detail = detail.split(" [SQL:")[0][:300]
    low = detail.lower()
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        what = "is damaged"
    elif "unable to open" in low:
        what = "cannot be opened"
    elif isinstance(exc, DBAPIError) and exc.connection_invalidated or any(
            w in low for w in ("connection refused", "could not connect", "connection failed",
                               "timeout expired", "no such host", "name or service",
                               "server closed", "terminating connection", "couldn't get a connection")):
        what = "is unreachable"
    elif "locked" in low or "busy" in low:
        what = "stayed locked by another process"
    elif "readonly" in low or "read-only" in low:
        what = "is read-only"
    else:
        what = "failed"
    return HubDatabaseError(f"hub database {shown} {what}: {detail}")


#: PostgreSQL's lost races, worth trying again: deadlock, serialisation failure, lock not available
RETRY_SQLSTATES = ("40P01", "40001", "55P03")


def is_transient(exc: BaseException, integrity_ok: bool) -> bool:
    """A lost race worth retrying: deadlock, serialisation failure, lock not available, a pooled
    connection the server dropped (the pool reconnects), or (``integrity_ok``) a unique violation."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in RETRY_SQLSTATES:
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return integrity_ok and isinstance(exc, IntegrityError)
