"""The hub's persisted job queue: tokens, agents and their devices, jobs and their leases.

One :class:`HubStore` is one hub process's handle on the database. The embedded default is a
SQLite file (WAL) under ``$EDGELAT_HOME``; at lab scale several hubs share one PostgreSQL and
take leases with row locks (``FOR UPDATE SKIP LOCKED``). On SQLite every write is one
``BEGIN IMMEDIATE`` transaction, so two stores on one file never hand a job out twice either.

Jobs are data (a kind, a device, a runtime config and parameters as JSON); nothing a request
carries is ever executed here.

A dispatcher (one per connected agent, or a few per hub) runs::

    marker = store.work_marker()
    lease = store.lease(["pixel7"], ttl_s=30)       # None: nothing to do for these devices now
    if lease is None:
        store.wait_for_work(marker, 5.0, ["pixel7"])  # woken by a submit, a freed device, any hub
    else:
        ...  # hand lease.job to the agent; progress()/heartbeat() renew, finish() or release() end it

and some hub calls ``expire()`` every few seconds, so leases of dead agents or hubs come back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from edgelat.errors import BadInput, EdgelatError, UnknownDevice
from edgelat.hub import pg_statements, raw_pg, raw_sqlite, schema
from edgelat.hub.db import (
    db_error,
    is_transient,
    normalize_url,
    pg_connect_args,
    pg_engine,
    sqlite_engine,
    sqlite_write_lock,
)
from edgelat.hub.errors import AuthError, Forbidden, HubDatabaseError, JobNotFound, JobStateError
from edgelat.hub.schema import devices as t_devices
from edgelat.hub.schema import jobs as t_jobs
from edgelat.hub.statements import (
    PRIORITY_CEILING,
    TOP_USERS_FAIR,
    Statements,
    build,
)
from edgelat.hub.tokens import ROLES, Principal, hash_secret, new_secret
from edgelat.hub.wakeups import WorkSignal

__all__ = [
    "HubStore", "Lease", "Principal", "AuthError", "Forbidden", "JobNotFound", "JobStateError",
    "HubDatabaseError", "QUARANTINE_AFTER", "JOB_STATES", "DEVICE_STATES", "default_url",
]

QUARANTINE_AFTER = 3
"""A device that loses this many leases in a row is quarantined until an admin releases it."""

NOTIFY_CHANNEL = "edgelat_hub_work"
"""PostgreSQL channel on which hubs tell each other that work may be waiting."""

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
DEVICE_STATES = ("online", "busy", "offline", "quarantined")
FINAL_STATES = ("done", "failed", "cancelled")

TOKEN_CACHE_S = 5.0
"""A token looked up in the database is trusted this long by this hub before it is looked up again
(expiry is checked every time; a revocation through this store applies at once, through another
hub or the CLI within this time)."""

SHARE_HALF_LIFE_S = 60.0
"""Fair share forgets a user's past leases with this half-life ("leased recently")."""

#: the columns a submit gives a new job (the rest start NULL)
SUBMIT_COLUMNS = ("id", "user", "kind", "device", "config", "params", "priority", "state", "done", "total",
                  "message", "attempts", "created_at", "updated_at", "version")
_SMALL_FILTER = 64  # lease(devices=...) with at most this many names takes the per-device path
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_T = TypeVar("_T")


def default_url() -> str:
    """The embedded hub database: ``sqlite:///$EDGELAT_HOME/hub.db``."""
    from edgelat.config import home

    return f"sqlite:///{home() / 'hub.db'}"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value != value.strip():
        raise BadInput(f"{what} must be a non-empty name of at most 200 printable characters, got {value!r}")
    return value


def _dump(value: Any, what: str) -> str:
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what} is not plain JSON: {exc}") from None


def _load(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def _check_ttl(ttl_s: Any) -> None:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= 86400:
        raise BadInput(f"a lease's time to live must be between 0 and 86400 seconds, got {ttl_s!r}")


@dataclass(frozen=True)
class Lease:
    """A job handed to an agent: run it, report progress, finish it, before ``expires_at``."""

    lease_id: str
    job: dict
    agent_id: str
    device: str
    expires_at: str
    ttl_s: float


class _Retry(Exception):
    """Internal: the lease transaction lost a race; roll back and try again."""


class HubStore:
    """One hub's handle on the queue database (SQLite file or PostgreSQL)."""

    def __init__(
        self,
        url: str,
        *,
        hub_id: str | None = None,
        clock: Callable[[], float] = time.time,
        offline_after_s: float = 90.0,
        max_attempts: int = 10,
        pool_size: int = 8,
        token_cache_s: float = TOKEN_CACHE_S,
    ) -> None:
        self.url = url
        self.token_cache_s = token_cache_s
        # secret hash -> (monotonic time looked up, the token's row): every call carries a token
        self._tokens: dict[str, tuple[float, Any]] = {}
        self.hub_id = hub_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.offline_after_s = offline_after_s
        self.max_attempts = max_attempts
        self._clock = clock
        self._pool_size = pool_size
        self._engine: Engine | None = None
        self._q: Statements | None = None
        self._pg = False
        self._shown = url
        # Fair share's "leased recently": per user, a lease count decaying with SHARE_HALF_LIFE_S,
        # kept by this hub in memory (no row that every lease would have to lock).
        self._shares: dict[str, tuple[float, float]] = {}
        self._shares_lock = threading.Lock()
        self._ts_lock = threading.Lock()
        self._last_ts = 0.0
        self._signal = WorkSignal()
        self._listener: threading.Thread | None = None
        self._listen_stop = threading.Event()
        self._listening = threading.Event()
        self._write_lock: threading.Lock | None = None
        self._found_work = False
        # SQLite: the hot transactions' statements compiled once, run on plain connections (raw_sqlite)
        self._raw: raw_sqlite.Connections | None = None
        self._raw_sql: dict[int, raw_sqlite.Compiled] = {}
        # PostgreSQL: the one-statement steps compiled once, run on a pool of plain connections (raw_pg)
        self._pg_pool: Any = None
        self._pg_sql: dict[int, raw_pg.Compiled] = {}

    # ------------------------------------------------------------------ engine
    def open(self) -> "HubStore":
        """Connect, create the schema if missing (idempotent) and check its version."""
        if self._engine is not None:
            return self
        url = normalize_url(self.url)
        self._pg = url.get_backend_name() == "postgresql"
        self._shown = url.render_as_string(hide_password=True)
        try:
            if self._pg:
                engine = pg_engine(url, self._pool_size, self.hub_id)
            else:
                engine = sqlite_engine(url, self._pool_size)
        except (ArgumentError, ImportError) as exc:
            raise HubDatabaseError(f"hub database {self._shown} cannot be used: {exc}") from None
        self._engine = engine
        if not self._pg:
            self._write_lock = sqlite_write_lock(url)
        try:
            self._q = build(self._pg, bool(engine.dialect.update_returning))
            if not self._pg:
                self._raw_sql = raw_sqlite.compile_statements(
                    self._q, {"top_users_fair": TOP_USERS_FAIR}, engine.dialect,
                    {"insert_job": list(SUBMIT_COLUMNS)})
                self._raw = raw_sqlite.Connections(url.database)
            self._tx(self._create_schema)
            if self._pg:
                from edgelat.hub import table_log

                self._pg_sql = raw_pg.compile_statements(
                    [*pg_statements.HOT, self._q.progress, self._q.notify, *table_log.PG_HOT], engine.dialect)
                connect = dict(engine.dialect.create_connect_args(engine.url)[1], **pg_connect_args(self.hub_id))
                self._pg_pool = raw_pg.pool(connect, 2 * self._pool_size, f"edgelat-hub {self.hub_id}")
        except BaseException:
            engine.dispose()
            self._engine = None
            raise
        return self

    def close(self) -> None:
        """Close every pooled connection; the store can be opened again."""
        if self._listener is not None:
            self._listen_stop.set()
            self._listener.join(5)
            self._listener = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._pg_pool is not None:
            self._pg_pool.close()
            self._pg_pool = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ------------------------------------------------------------------ waking dispatchers
    def work_marker(self) -> int:
        """A marker to pass to :meth:`wait_for_work` (take it before a lease that came back empty)."""
        return self._signal.marker()

    def wait_for_work(self, marker: int, timeout_s: float, devices: list[str] | None = None) -> int:
        """Block until work may have appeared since ``marker`` for ``devices`` (None: any device) --
        a job queued or requeued, a device freed or back online, through this store or (PostgreSQL)
        any hub -- or until ``timeout_s`` passed. Returns the new marker.

        Lets dispatchers wait instead of polling the database (see :mod:`edgelat.hub.wakeups`)."""
        if self._pg and self._listener is None and self._engine is not None:
            self._start_listener()
            self._listening.wait(5)  # from here on, other hubs' notifications reach this store
        return self._signal.wait(marker, timeout_s, devices)

    def _poke(self, devices: list[str] | None = None) -> None:
        self._signal.announce(devices)

    def _notify_hubs(self, conn: Connection, device: str | None) -> None:
        """Tell the other hubs on this PostgreSQL (delivered when the transaction commits)."""
        if self._pg:
            conn.execute(self._q.notify, {"p_payload": f"{self.hub_id}\t{device or ''}"})

    def _start_listener(self) -> None:
        cparams = self._engine.dialect.create_connect_args(self._engine.url)[1]
        self._listen_stop.clear()
        self._listening.clear()

        def listen() -> None:
            import psycopg

            while not self._listen_stop.is_set():
                try:
                    with psycopg.connect(**cparams, autocommit=True) as conn:
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        self._listening.set()
                        while not self._listen_stop.is_set():
                            for note in conn.notifies(timeout=0.2):
                                hub, _, device = note.payload.partition("\t")
                                if hub != self.hub_id:  # our own were announced when they happened
                                    self._poke([device] if device else None)
                except psycopg.Error:
                    self._listen_stop.wait(1.0)  # the waiters fall back on their timeouts meanwhile

        self._listener = threading.Thread(target=listen, name=f"hub-listen-{self.hub_id}", daemon=True)
        self._listener.start()

    def __enter__(self) -> "HubStore":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self, conn: Connection) -> None:
        if self._pg:
            # Two hubs starting at once on an empty database must not both create the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(70110011)"))
        schema.metadata.create_all(conn)
        row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).first()
        if row is None:
            conn.execute(schema.meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
        elif int(row.value) > schema.SCHEMA_VERSION:
            raise HubDatabaseError(
                f"hub database {self._shown} has schema version {row.value}, newer than this edgelat "
                f"({schema.SCHEMA_VERSION}): upgrade edgelat")
        elif int(row.value) < schema.SCHEMA_VERSION:  # create_all added what was missing
            conn.execute(update(schema.meta).where(schema.meta.c.key == "schema_version")
                         .values(value=str(schema.SCHEMA_VERSION)))
        if conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == "tables_log")).first() is None:
            # names this database's table log: a hub's tables that joined another one start over
            conn.execute(schema.meta.insert().values(key="tables_log", value=uuid.uuid4().hex))

    def _tx(self, fn: Callable[[Connection], _T], *, write: bool = True, retry_integrity: bool = False,
            attempts: int = 8) -> _T:
        """Run ``fn`` in one transaction, retrying lost races (deadlocks, serialisation failures)."""
        if self._engine is None:
            raise HubDatabaseError("the hub store is not open: call HubStore.open() first")
        serialize = self._write_lock if write and self._write_lock is not None else contextlib.nullcontext()
        for attempt in range(attempts):
            try:
                with serialize, self._engine.connect() as conn:
                    if not write and self._pg:  # one statement's snapshot is enough: no BEGIN/COMMIT
                        return fn(conn.execution_options(isolation_level="AUTOCOMMIT"))
                    if not write:
                        conn = conn.execution_options(edgelat_write=False)
                    with conn.begin():
                        return fn(conn)
            except _Retry:
                if attempt == attempts - 1:
                    raise
            except EdgelatError:
                raise
            except SQLAlchemyError as exc:
                if attempt < attempts - 1 and is_transient(exc, retry_integrity):
                    time.sleep(0.001 * (attempt + 1))
                    continue
                raise db_error(exc, self._shown) from None
            except (OSError, ValueError) as exc:  # e.g. psycopg connection setup errors
                raise db_error(exc, self._shown) from None
        raise _Retry()

    def _hot_tx(self, fn: Callable[[Any], _T], *, retry_integrity: bool = False, attempts: int = 8) -> _T:
        """:meth:`_tx` for the hot writes (submit, finish, progress, heartbeats), which use only
        the prepared statements: on SQLite a plain connection of this thread runs them
        (:mod:`edgelat.hub.raw_sqlite`), in the same ``BEGIN IMMEDIATE`` under the same write lock."""
        if self._raw is None or self._write_lock is None:
            return self._tx(fn, retry_integrity=retry_integrity, attempts=attempts)
        for attempt in range(attempts):
            try:
                raw = self._raw.get()
                with self._write_lock:
                    raw.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(raw_sqlite.Connection(raw, self._raw_sql))
                        raw.execute("COMMIT")
                    except BaseException:
                        if raw.in_transaction:
                            raw.execute("ROLLBACK")
                        raise
                    return out
            except _Retry:
                if attempt == attempts - 1:
                    raise
            except EdgelatError:
                raise
            except sqlite3.IntegrityError as exc:
                if attempt < attempts - 1 and retry_integrity:
                    time.sleep(0.001 * (attempt + 1))
                    continue
                raise db_error(exc, self._shown) from None
            except (sqlite3.Error, OSError, ValueError) as exc:
                raise db_error(exc, self._shown) from None
        raise _Retry()

    def _quick(self, fn: Callable[[Any], _T], *, retry_integrity: bool = False, attempts: int = 8) -> _T:
        """PostgreSQL: ``fn`` runs statements of :data:`pg_statements.HOT` (and the few others compiled
        at open), each its own transaction, on a pooled plain connection (:mod:`edgelat.hub.raw_pg`);
        lost races and connections the server dropped are retried as :meth:`_tx` retries them."""
        if self._pg_pool is None:
            return self._tx(fn, write=False, retry_integrity=retry_integrity, attempts=attempts)
        for attempt in range(attempts):
            try:
                with self._pg_pool.connection() as raw:
                    return fn(raw_pg.Connection(raw, self._pg_sql))
            except _Retry:
                if attempt == attempts - 1:
                    raise
            except EdgelatError:
                raise
            except Exception as exc:  # psycopg's and the pool's errors
                if raw_pg.broken(exc):
                    self._pg_pool.check()  # drop the other connections the server closed too
                if attempt < attempts - 1 and raw_pg.is_transient(exc, retry_integrity):
                    time.sleep(0.001 * (attempt + 1))
                    continue
                if raw_pg.is_driver_error(exc) or isinstance(exc, (OSError, ValueError)):
                    raise db_error(exc, self._shown) from None
                raise
        raise _Retry()

    def quick(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(connection)``, whose statements each commit on their own, on this store's database
        (PostgreSQL: the pooled plain connections, for the statements compiled at open): for the
        table log's append and reads."""
        return self._quick(fn)

    def transaction(self, fn: Callable[[Connection], _T], *, write: bool = True) -> _T:
        """Run ``fn(connection)`` in one transaction on this store's database (lost races retried,
        errors as one :class:`HubDatabaseError` line): for the hub's other records (the table log)."""
        return self._tx(fn, write=write)

    @property
    def is_postgresql(self) -> bool:
        return self._pg

    def _now(self) -> float:
        return float(self._clock())

    def _stamp(self) -> float:
        """A submit time that strictly increases within this store (keeps FIFO order exact)."""
        with self._ts_lock:
            now = max(self._now(), self._last_ts + 1e-6)
            self._last_ts = now
            return now

    def _lock(self, stmt):
        """``FOR UPDATE`` on PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock."""
        return stmt.with_for_update() if self._pg else stmt

    def _skip_locked(self, stmt, *of):
        if not self._pg:
            return stmt
        return stmt.with_for_update(skip_locked=True, of=list(of) or None)

    def _upsert(self, conn: Connection, table, values: dict, keys: tuple[str, ...], updates: dict) -> None:
        if self._pg:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).values(**values)
        if updates:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=updates)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        conn.execute(stmt)

    # ------------------------------------------------------------------ tokens
    def create_token(self, user: str, role: str, devices: list[str] | None = None,
                     expires_s: float | None = None) -> str:
        """Create a token; returns its secret, which is shown only this once (the database keeps a hash)."""
        _name(user, "the token's user")
        if role not in ROLES:
            raise BadInput(f"role {role!r} is not one of {', '.join(ROLES)}")
        names = None
        if devices is not None:
            if isinstance(devices, str) or not all(isinstance(d, str) for d in devices):
                raise BadInput("devices must be a list of device names")
            names = sorted({_name(d, "a device name") for d in devices})
        if expires_s is not None and (not isinstance(expires_s, (int, float)) or not expires_s > 0
                                      or math.isinf(expires_s)):
            raise BadInput(f"a token's lifetime must be a positive number of seconds, got {expires_s!r}")
        secret = new_secret()
        now = self._now()
        values = dict(
            id=uuid.uuid4().hex, secret_sha256=hash_secret(secret), user=user, role=role,
            devices=None if names is None else json.dumps(names), created_at=now,
            expires_at=None if expires_s is None else now + float(expires_s), revoked_at=None,
        )
        self._tx(lambda c: c.execute(schema.tokens.insert().values(**values)))
        return secret

    def authenticate(self, secret: str) -> Principal:
        """The principal a secret stands for; AuthError when it is unknown, expired or revoked."""
        if not isinstance(secret, str) or not secret.strip():
            raise AuthError("no token given: pass a token file (ask a hub admin for one)")
        digest = hash_secret(secret)
        t = schema.tokens
        cached = self._tokens.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.token_cache_s:
            row = cached[1]
        else:
            row = self._tx(lambda c: c.execute(select(t).where(t.c.secret_sha256 == digest)).first(), write=False)
            if row is not None and self.token_cache_s > 0:
                if len(self._tokens) > 10000:
                    self._tokens.clear()
                self._tokens[digest] = (time.monotonic(), row)
        if row is None:
            raise AuthError("unknown token: ask a hub admin for a token (edgelat hub token create)")
        if row.revoked_at is not None:
            raise AuthError(f"the token of user {row.user} was revoked at {_iso(row.revoked_at)}: ask a hub admin for a new one")
        if row.expires_at is not None and row.expires_at <= self._now():
            raise AuthError(f"the token of user {row.user} expired at {_iso(row.expires_at)}: ask a hub admin for a new one")
        devices = None if row.devices is None else tuple(json.loads(row.devices))
        return Principal(user=row.user, role=row.role, devices=devices)

    def revoke_token(self, user: str) -> int:
        """Revoke every live token of ``user``; returns how many were revoked."""
        t = schema.tokens
        now = self._now()
        revoked = self._tx(lambda c: c.execute(
            update(t).where(t.c.user == user, t.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount)
        self._tokens.clear()
        return revoked

    def _agent_allowance(self, conn: Connection, user: str) -> tuple[str, ...] | None:
        """What the live agent/admin tokens of ``user`` let it serve (None: any device)."""
        t = schema.tokens
        now = self._now()
        rows = conn.execute(select(t.c.role, t.c.devices).where(
            t.c.user == user, t.c.revoked_at.is_(None), t.c.role.in_(("agent", "admin")),
            (t.c.expires_at.is_(None)) | (t.c.expires_at > now))).all()
        if not rows:
            raise AuthError(f"user {user} has no live agent token: ask a hub admin for one (--role agent)")
        allowed: set[str] = set()
        for row in rows:
            if row.role == "admin" or row.devices is None:
                return None
            allowed.update(json.loads(row.devices))
        return tuple(sorted(allowed))

    # ------------------------------------------------------------------ agents and devices
    def agent_online(self, agent_id: str, user: str, devices: dict[str, dict], *,
                     principal: Principal | None = None) -> None:
        """An agent connected to this hub and serves ``devices`` (name -> facts).

        The agent's token must name every device it claims (AuthError otherwise). Devices this
        agent served before but no longer lists go offline.
        """
        _name(agent_id, "the agent id")
        _name(user, "the agent's user")
        if not isinstance(devices, dict):
            raise BadInput("devices must be a mapping of device name to facts")
        facts = {_name(name, "a device name"): _dump(f or {}, f"the facts of device {name}")
                 for name, f in devices.items()}
        if principal is not None and principal.role not in ("agent", "admin"):
            raise Forbidden(f"user {principal.user} has a {principal.role} token; serving devices needs an agent token")

        def run(conn: Connection) -> None:
            allowed = principal.devices if principal is not None else self._agent_allowance(conn, user)
            for name in sorted(facts):
                if allowed is not None and name not in allowed:
                    raise Forbidden(f"the agent token of user {user} does not name device {name}: "
                                    f"it may serve {', '.join(allowed) or 'no device'}")
            now = self._now()
            a = schema.agents
            self._upsert(conn, a, dict(id=agent_id, user=user, hub_id=self.hub_id, online=1,
                                       first_seen=now, last_seen=now),
                         ("id",), dict(user=user, hub_id=self.hub_id, online=1, last_seen=now))
            d = t_devices
            conn.execute(update(d).where(d.c.agent_id == agent_id, d.c.name.not_in(sorted(facts)) if facts else True)
                         .values(online=0))
            for name in sorted(facts):
                self._upsert(conn, d, dict(name=name, agent_id=agent_id, hub_id=self.hub_id, facts=facts[name],
                                           online=1, busy_job=None, fail_streak=0, quarantined=0,
                                           first_seen=now, last_seen=now),
                             ("name",), dict(agent_id=agent_id, hub_id=self.hub_id, facts=facts[name],
                                             online=1, last_seen=now))

        self._tx(run)
        self._signal.set_agent_devices(agent_id, set(facts))
        self._poke(sorted(facts))

    def heartbeat(self, agent_id: str) -> int:
        """The agent, connected to this hub, is alive: mark the devices it serves here seen and
        renew the leases this hub holds via it.

        Leases another hub took through the same agent are left alone: when that hub dies and its
        agents reconnect here, the dead hub's leases must run out (``expire``), not live on through
        the agents' heartbeats. Returns how many leases were renewed."""
        params = {"p_agent": agent_id, "p_hub": self.hub_id, "p_now": self._now()}
        q = self._q

        def run(conn: Connection) -> int:
            conn.execute(q.seen_agent, params)
            conn.execute(q.seen_devices, params)
            return conn.execute(q.renew_leases, params).rowcount

        if self._pg:
            return self._quick(lambda c: c.execute(pg_statements.HEARTBEAT, params).rowcount)
        return self._tx(run)

    def heartbeat_many(self, agent_ids: list[str]) -> None:
        """:meth:`heartbeat` for several agents in one transaction (a hub with many agents
        writes their last-seen times together)."""
        if not agent_ids:
            return
        now = self._now()
        if self._pg:  # one statement: a transaction of three statements per agent held every device's row
            params = {"p_agents": sorted(set(agent_ids)), "p_hub": self.hub_id, "p_now": now}
            self._quick(lambda c: c.execute(pg_statements.HEARTBEAT_MANY, params))
            return
        rows = [{"p_agent": a, "p_hub": self.hub_id, "p_now": now} for a in sorted(set(agent_ids))]
        q = self._q

        def run(conn: Connection) -> None:
            conn.execute(q.seen_agent, rows)
            conn.execute(q.seen_devices, rows)
            conn.execute(q.renew_leases, rows)

        self._hot_tx(run)

    def agent_offline(self, agent_id: str) -> None:
        """The agent disconnected: its devices go offline. Its leases run out on their own
        (``expire``), so an agent that comes back in time keeps its jobs."""
        def run(conn: Connection) -> None:
            a = schema.agents
            conn.execute(update(a).where(a.c.id == agent_id).values(online=0))
            conn.execute(update(t_devices).where(t_devices.c.agent_id == agent_id).values(online=0))

        self._tx(run)
        self._signal.set_agent_devices(agent_id, set())

    def devices(self) -> list[dict]:
        """Every device the hub has seen, with its state (online, busy, offline, quarantined)."""
        rows = self._tx(lambda c: c.execute(select(t_devices).order_by(t_devices.c.name)).all(), write=False)
        now = self._now()
        return [self._device_dict(r, now) for r in rows]

    def device(self, name: str) -> dict | None:
        """One device as :meth:`devices` shows it, or None when it never came online here."""
        d = t_devices
        row = self._tx(lambda c: c.execute(select(d).where(d.c.name == name)).first(), write=False)
        return None if row is None else self._device_dict(row, self._now())

    def _device_dict(self, r, now: float) -> dict:
        if r.quarantined:
            state = "quarantined"
        elif not r.online or now - r.last_seen > self.offline_after_s:
            state = "offline"
        elif r.busy_job is not None:
            state = "busy"
        else:
            state = "online"
        return dict(name=r.name, state=state, last_seen=_iso(r.last_seen), first_seen=_iso(r.first_seen),
                    facts=_load(r.facts) or {}, agent_id=r.agent_id, hub_id=r.hub_id, job=r.busy_job,
                    fail_streak=r.fail_streak, last_error=r.last_error)

    def release_quarantine(self, device: str) -> None:
        """An admin vouches for a quarantined device: it may take jobs again."""
        def run(conn: Connection) -> int:
            n = conn.execute(update(t_devices).where(t_devices.c.name == device)
                             .values(quarantined=0, fail_streak=0)).rowcount
            self._notify_hubs(conn, device)
            return n

        if not self._tx(run):
            raise UnknownDevice(f"no device named {device!r} has come online at this hub")
        self._poke([device])

    # ------------------------------------------------------------------ jobs
    def submit(self, user: str, kind: str, device: str, config: dict, params: dict, priority: int = 0) -> str:
        """Queue a job (data only: nothing in it is executed by the hub); returns its id.

        A job for a device that is offline or unknown stays queued until the device comes online."""
        return self.submit_job(user, kind, device, config, params, priority)[0]["id"]

    def submit_job(self, user: str, kind: str, device: str, config: dict, params: dict,
                   priority: int = 0) -> tuple[dict, dict | None]:
        """:meth:`submit`, returning the queued job as :meth:`get` shows it and its device as
        :meth:`device` does (None: never seen), from the one transaction that queued it."""
        return self.submit_and_lease(user, kind, device, config, params, priority)[:2]

    def submit_and_lease(self, user: str, kind: str, device: str, config: dict, params: dict, priority: int = 0,
                         lease_ttl_s: float | None = None) -> tuple[dict, dict | None, Lease | None]:
        """:meth:`submit_job`; with ``lease_ttl_s``, when the device is free and served through this
        hub, also lease its next job (the one just queued, unless an earlier one waits) as
        ``lease(devices=[device])`` would: in the queueing transaction on SQLite; on PostgreSQL in the
        queueing statement when nothing else waits for the device, else in one more statement (each
        re-checks job and device). The third value is that lease,
        for the caller to run (None: none taken; the job waits for the dispatcher)."""
        _name(user, "the submitting user")
        _name(kind, "the job kind")
        _name(device, "the device")
        config_s = _dump(config, "the job's runtime config")
        params_s = _dump(params, "the job's parameters")
        if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
            raise BadInput(f"priority must be a whole number from -1000 to 1000, got {priority!r}")
        if lease_ttl_s is not None:
            _check_ttl(lease_ttl_s)
        job_id = uuid.uuid4().hex
        now = self._stamp()
        values = dict(id=job_id, user=user, kind=kind, device=device, config=config_s, params=params_s,
                      priority=priority, state="queued", done=0, total=0, message="", attempts=0,
                      created_at=now, updated_at=now, version=0)
        assert tuple(values) == SUBMIT_COLUMNS

        def run(conn: Connection, take: bool) -> tuple[Any, Lease | None]:
            conn.execute(self._q.insert_job, values)
            lease = None
            if take:
                at = self._now()
                base = {"p_hub": self.hub_id, "p_cutoff": at - self.offline_after_s}
                if conn.execute(self._q.other_queued, {"p_device": device, "p_id": job_id}).first() is None:
                    # nothing else waits for the device: this job is its next, if the device is free
                    lease = self._claim(conn, job_id, device, user, at, float(lease_ttl_s), base, free_only=True)
                else:
                    lease = self._lease_few(conn, [device], float(lease_ttl_s), at, base)
            if lease is None:
                self._notify_hubs(conn, device)
            return conn.execute(self._q.device_row, {"p_device": device}).first(), lease

        if self._pg:  # one statement (see _submit_pg)
            dev, lease = self._submit_pg(values, lease_ttl_s)
        else:
            try:
                dev, lease = self._hot_tx(lambda c: run(c, lease_ttl_s is not None))
            except _Retry:  # the device was taken meanwhile, again and again: queued only
                dev, lease = self._hot_tx(lambda c: run(c, False))
        if lease is None:
            self._poke([device])
        if lease is not None and lease.job["id"] == job_id:
            job = lease.job
        else:
            job = self._job_dict(SimpleNamespace(**{**{c.name: None for c in t_jobs.c}, **values}))
        shown = None if dev is None else self._device_dict(dev, self._now())
        if shown is not None and lease is not None and self._pg:  # read before the lease took it
            shown.update(state="busy", job=lease.job["id"])
        return job, shown, lease

    def _submit_pg(self, values: dict, ttl_s: float | None) -> tuple[Any, Lease | None]:
        """PostgreSQL: queue the job and read its device in one statement, which with ``ttl_s`` also
        leases the job when its device is free here and nothing else waits for it. A device free here
        with other jobs waiting then leases the first of them (:meth:`_lease_device_pg`). The other
        hubs are told only when the device is served through another one (this hub's dispatchers
        were told; a device offline now is leased by the hub it comes back to)."""
        now = self._now()
        lease_id = uuid.uuid4().hex
        take = ttl_s is not None
        ttl = float(ttl_s) if take else 0.0
        params = dict(values, p_take=take, p_hub=self.hub_id, p_cutoff=now - self.offline_after_s, p_lease=lease_id,
                      p_ttl=ttl, p_expires=now + ttl, p_now=now)
        got = self._quick(lambda c: c.execute(pg_statements.SUBMIT, params).first())
        dev = None if got.device is None else SimpleNamespace(**got.device)
        job = SimpleNamespace(**got.job)
        lease = None
        if job.state == "running":
            self._count_lease(job.user, now)
            lease = Lease(lease_id=lease_id, job=self._job_dict(job), agent_id=job.lease_agent,
                          device=job.device, expires_at=_iso(now + ttl), ttl_s=ttl)
        elif take and dev is not None and dev.hub_id == self.hub_id and dev.online and dev.busy_job is None \
                and not dev.quarantined:
            lease = self._lease_device_pg(values["device"], ttl)
        if dev is not None and dev.online and dev.hub_id != self.hub_id:
            self._quick(lambda c: self._notify_hubs(c, values["device"]))
        return dev, lease

    def _lease_device_pg(self, device: str, ttl_s: float) -> Lease | None:
        """PostgreSQL: lease one device's next job, as ``lease(devices=[device])`` would, in one
        statement (:data:`pg_statements.LEASE_DEVICE`), which re-checks job and device. None: no job
        waits, or the device or the job was taken meanwhile."""
        now = self._now()
        with self._shares_lock:
            users = list(self._shares)
        recent = json.dumps({u: self._recent(u, now) for u in users})
        lease_id = uuid.uuid4().hex
        params = {"p_device": device, "p_hub": self.hub_id, "p_cutoff": now - self.offline_after_s,
                  "p_recent": recent, "p_lease": lease_id, "p_ttl": ttl_s, "p_expires": now + ttl_s, "p_now": now}
        row = self._quick(lambda c: c.execute(pg_statements.LEASE_DEVICE, params).first(), retry_integrity=True)
        if row is None:
            return None
        self._count_lease(row.user, now)
        return Lease(lease_id=lease_id, job=self._job_dict(row), agent_id=row.lease_agent, device=device,
                     expires_at=_iso(now + ttl_s), ttl_s=ttl_s)

    def work_since(self, marker: int) -> tuple[int, list[str] | None]:
        """The new marker and the devices work may wait for since ``marker`` (None: any device)."""
        return self._signal.since(marker)

    def lease_device(self, device: str, ttl_s: float = 30.0) -> Lease | None:
        """:meth:`lease` for one device (PostgreSQL: one statement)."""
        _check_ttl(ttl_s)
        if self._pg:
            return self._lease_device_pg(device, float(ttl_s))
        return self.lease(devices=[device], ttl_s=ttl_s)

    def lease(self, devices: list[str] | None = None, ttl_s: float = 30.0) -> Lease | None:
        """Take the next job for a free device served through this hub, or None when there is none.

        ``devices``: only these devices (an agent asking for its own). Order: priority (high first),
        then fair share (the user with the fewest running jobs, then the fewest leased recently),
        then submit time. The job becomes running and its device busy, in one transaction."""
        _check_ttl(ttl_s)
        names: list[str] | None = None
        if devices is not None:
            if isinstance(devices, str):
                raise BadInput("devices must be a list of device names")
            names = sorted(set(devices))
            if not names:
                return None
        if not (names is None and (self._found_work or self._pg)):
            # A cheap read first, so agents polling for their devices cost one read, never SQLite's
            # write lock. Skipped while a backlog is worked off, and for PostgreSQL dispatchers
            # asking for any device (the lease transaction itself is cheap there).
            if names is not None and len(names) <= _SMALL_FILTER:
                probe, params = self._q.probe_devices, {"p_names": self._q.pack(names)}
            else:
                probe, params = self._q.probe_any, {}
            if self._tx(lambda c: c.execute(probe, params).first(), write=False) is None:
                return None
        try:
            if self._pg and names is None:  # one statement to pick, one to claim: no transaction around them
                lease = self._quick(lambda c: self._lease_pg(c, float(ttl_s)), retry_integrity=True, attempts=12)
            else:
                lease = self._tx(lambda c: self._lease_tx(c, names, float(ttl_s)), retry_integrity=True,
                                 attempts=12)
        except _Retry:
            lease = None
        if names is None:
            self._found_work = lease is not None
        return lease

    def _recent(self, user: str, now: float) -> float:
        """How many jobs ``user`` leased recently through this hub (decayed count)."""
        share, at = self._shares.get(user, (0.0, now))
        return round(share * 0.5 ** (max(0.0, now - at) / SHARE_HALF_LIFE_S), 6)

    def _count_lease(self, user: str, now: float) -> None:
        with self._shares_lock:
            self._shares[user] = (self._recent(user, now) + 1.0, now)

    def _fair_keys(self, conn: Connection, users: list[str], now: float) -> dict[str, tuple[int, float]]:
        """Per user: (running jobs, leased recently) -- lower goes first."""
        if len(users) == 1:
            return {users[0]: (0, 0.0)}  # nobody to share with
        running = dict(conn.execute(self._q.running_of, {"p_users": self._q.pack(users)}).all())
        return {u: (running.get(u, 0), self._recent(u, now)) for u in users}

    def _lease_tx(self, conn: Connection, names: list[str] | None, ttl_s: float) -> Lease | None:
        now = self._now()
        q = self._q
        base = {"p_hub": self.hub_id, "p_cutoff": now - self.offline_after_s}
        if names is not None and len(names) <= _SMALL_FILTER:
            return self._lease_few(conn, names, ttl_s, now, base)
        below = PRIORITY_CEILING
        while True:
            rows = conn.execute(TOP_USERS_FAIR, {"p_below": below}).all()
            if not rows:
                return None
            priority = rows[0].priority
            users = [r.name for r in rows]
            keys = {r.name: (r.running, self._recent(r.name, now)) for r in rows}
            for key in sorted(set(keys.values())):
                heads = []
                for user in sorted(u for u in users if keys[u] == key):
                    params = dict(base, p_priority=priority, p_user=user)
                    if names is None:
                        row = conn.execute(q.head, params).first()
                    else:
                        row = conn.execute(q.head_in, dict(params, p_names=q.pack(names))).first()
                    if row is not None:
                        heads.append(row)
                if heads:
                    best = min(heads, key=lambda r: r.created_at)
                    return self._claim(conn, best.id, best.device, best.user, now, ttl_s, base)
            below = priority

    def _lease_pg(self, conn: Connection, ttl_s: float) -> Lease | None:
        """:meth:`_lease_tx` for any device on PostgreSQL: per priority, one statement gives every
        user's oldest job on a free device of this hub (and the user's running jobs); the first by
        (running, leased recently, submit time) is claimed, which re-checks job and device."""
        now = self._now()
        base = {"p_hub": self.hub_id, "p_cutoff": now - self.offline_after_s}
        below = PRIORITY_CEILING
        while True:
            rows = conn.execute(pg_statements.PICK, dict(base, p_below=below)).all()
            if not rows:
                return None
            heads = [r for r in rows if r.id is not None]
            if heads:
                best = min(heads, key=lambda r: (r.running, self._recent(r.name, now), r.created_at))
                lease_id = uuid.uuid4().hex
                row = conn.execute(pg_statements.CLAIM, dict(
                    base, p_device=best.device, p_id=best.id, p_lease=lease_id, p_ttl=ttl_s,
                    p_expires=now + ttl_s, p_now=now)).first()
                if row is None:
                    raise _Retry()  # taken meanwhile: pick again
                self._count_lease(best.name, now)
                return Lease(lease_id=lease_id, job=self._job_dict(row), agent_id=row.lease_agent,
                             device=best.device, expires_at=_iso(now + ttl_s), ttl_s=ttl_s)
            below = rows[0].priority

    def _lease_few(self, conn: Connection, names: list[str], ttl_s: float, now: float, base: dict) -> Lease | None:
        """The lease for an agent that serves a few devices: look only at those devices' queues."""
        q = self._q
        free = [r[0] for r in conn.execute(q.free_names, dict(base, p_names=q.pack(names)))]
        if not free:
            return None
        heads: dict[str, tuple[int, float]] = {}
        packed = q.pack(free)
        for user, priority, first in conn.execute(q.heads_few, {"p_names": packed}):
            if user not in heads or (priority, -first) > (heads[user][0], -heads[user][1]):
                heads[user] = (priority, first)
        if not heads:
            return None
        keys = self._fair_keys(conn, list(heads), now)
        for user in sorted(heads, key=lambda u: (-heads[u][0], keys[u], heads[u][1])):
            row = conn.execute(q.pick_few, {"p_names": packed, "p_user": user, "p_priority": heads[user][0]}).first()
            if row is not None:
                return self._claim(conn, row.id, row.device, user, now, ttl_s, base)
        return None

    def _claim(self, conn: Connection, job_id: str, device: str, user: str, now: float, ttl_s: float,
               base: dict, free_only: bool = False) -> Lease | None:
        """Take the device and start the job; ``free_only``: None when the device is not free
        (otherwise that is a lost race: :class:`_Retry`)."""
        q = self._q
        if self._pg:
            lease_id = uuid.uuid4().hex
            row = conn.execute(pg_statements.CLAIM, dict(
                base, p_device=device, p_id=job_id, p_lease=lease_id, p_ttl=ttl_s, p_expires=now + ttl_s,
                p_now=now)).first()
            if row is None:
                if free_only:
                    return None
                raise _Retry()  # another thread of this hub took the device first
            self._count_lease(user, now)
            return Lease(lease_id=lease_id, job=self._job_dict(row), agent_id=row.lease_agent, device=device,
                         expires_at=_iso(now + ttl_s), ttl_s=ttl_s)
        params = dict(base, p_device=device, p_id=job_id)
        if q.returning:
            got = conn.execute(q.claim_device, params).first()
            if got is None:
                if free_only:
                    return None
                raise _Retry()  # another thread of this hub took the device first
            agent_id = got.agent_id
        else:
            if conn.execute(q.claim_device, params).rowcount != 1:
                if free_only:
                    return None
                raise _Retry()
            agent_id = conn.execute(q.device_agent, params).scalar()
        lease_id = uuid.uuid4().hex
        params = dict(p_id=job_id, p_lease=lease_id, p_agent=agent_id, p_ttl=ttl_s, p_expires=now + ttl_s,
                      p_now=now, p_hub=self.hub_id)
        if q.returning:
            row = conn.execute(q.claim_job, params).first()
            if row is None:
                raise _Retry()
        else:
            if conn.execute(q.claim_job, params).rowcount != 1:
                raise _Retry()
            row = conn.execute(q.get_job, params).one()
        self._count_lease(user, now)
        return Lease(lease_id=lease_id, job=self._job_dict(row), agent_id=agent_id, device=device,
                     expires_at=_iso(now + ttl_s), ttl_s=ttl_s)

    def progress(self, lease_id: str, done: int, total: int, message: str = "") -> bool:
        """Record progress (and renew the lease). False: the lease is gone (cancelled or expired), stop."""
        for v, what in ((done, "done"), (total, "total")):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BadInput(f"progress {what} must be a whole number >= 0, got {v!r}")
        params = {"p_lease": lease_id, "p_done": done, "p_total": total,
                  "p_message": str(message or "")[:2000], "p_now": self._now()}
        if self._pg:  # one statement: PostgreSQL runs it without a transaction around it
            return self._quick(lambda c: c.execute(self._q.progress, params).rowcount) == 1
        return self._hot_tx(lambda c: c.execute(self._q.progress, params).rowcount) == 1

    def finish(self, lease_id: str, state: str, error: str | None = None, result: dict | None = None,
               done: int | None = None, total: int | None = None) -> bool:
        """End a leased job as done or failed (``done``/``total``: its last progress, when not yet
        reported); frees its device. False: the lease was already gone."""
        return self.finish_then_lease(lease_id, state, error, result, done, total)[0]

    def finish_then_lease(self, lease_id: str, state: str, error: str | None = None, result: dict | None = None,
                          done: int | None = None, total: int | None = None,
                          next_ttl_s: float | None = None) -> tuple[bool, Lease | None]:
        """:meth:`finish`; with ``next_ttl_s``, also lease the device's next job as
        ``lease(devices=[device])`` would (a device with work waiting goes on without a round through
        the dispatcher): in the same transaction on SQLite, in one statement right after the
        finish on PostgreSQL. Returns (finished, the next lease or None)."""
        if state not in ("done", "failed"):
            raise BadInput(f"a leased job finishes as done or failed, not {state!r}")
        for v, what in ((done, "done"), (total, "total")):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise BadInput(f"progress {what} must be a whole number >= 0, got {v!r}")
        if next_ttl_s is not None:
            _check_ttl(next_ttl_s)
        params = {"p_lease": lease_id, "p_state": state, "p_error": error if state == "failed" else None,
                  "p_result": None if result is None else _dump(result, "the job's result"), "p_now": self._now(),
                  "p_done": done, "p_total": total}
        q = self._q

        def run(conn: Connection, take: bool) -> tuple[str, bool, Lease | None] | None:
            if q.returning:
                row = conn.execute(q.finish_job, params).first()
            else:
                row = conn.execute(q.running_by_lease, params).first()
                if row is not None:
                    conn.execute(q.finish_job, params)
            if row is None:
                return None
            conn.execute(q.free_device_done if state == "done" else q.free_device,
                         {"p_device": row.device, "p_id": row.id})
            waiting = conn.execute(q.probe_devices, {"p_names": q.pack([row.device])}).first() is not None
            lease = None
            if waiting and take:
                now = self._now()
                lease = self._lease_few(conn, [row.device], float(next_ttl_s), now,
                                        {"p_hub": self.hub_id, "p_cutoff": now - self.offline_after_s})
            return row.device, waiting, lease

        if self._pg:  # one statement; a device with work waiting then leases in one more
            row = self._quick(lambda c: c.execute(pg_statements.FINISH, params).first())
            got = None if row is None else (row.device, bool(row.waiting), None)
            if got is not None and got[1] and next_ttl_s is not None:
                got = (got[0], True, self._lease_device_pg(got[0], float(next_ttl_s)))
        else:
            try:
                got = self._hot_tx(lambda c: run(c, next_ttl_s is not None))
            except _Retry:  # the device was taken meanwhile, again and again: finished only
                got = self._hot_tx(lambda c: run(c, False))
        if got is None:
            return False, None
        if got[1] and got[2] is None:
            self._poke([got[0]])  # the device is free and has jobs waiting
        return True, got[2]

    def _requeue(self, conn: Connection, row, error: str, now: float) -> None:
        """A lease was lost through no fault of the job: queue it again and count it against the device."""
        j, d = t_jobs, t_devices
        attempts = row.attempts + 1
        gave_up = attempts >= self.max_attempts
        conn.execute(update(j).where(j.c.id == row.id).values(
            state="failed" if gave_up else "queued", attempts=attempts,
            error=(f"gave up after {attempts} lost leases: {error}" if gave_up else error),
            finished_at=now if gave_up else None, updated_at=now, version=j.c.version + 1,
            lease_id=None, lease_agent=None, lease_expires=None))
        dev = conn.execute(self._lock(select(d.c.fail_streak).where(d.c.name == row.device))).first()
        if dev is not None:
            streak = dev.fail_streak + 1
            conn.execute(update(d).where(d.c.name == row.device).values(
                fail_streak=streak, last_error=error, quarantined=1 if streak >= QUARANTINE_AFTER else 0))
            conn.execute(update(d).where(d.c.name == row.device, d.c.busy_job == row.id).values(busy_job=None))
        self._notify_hubs(conn, row.device)

    def release(self, lease_id: str, error: str) -> bool:
        """The device or its agent was lost mid-job: the job goes back to the queue (attempts + 1) and
        the device's failure streak grows; QUARANTINE_AFTER in a row quarantine it. False: no such lease."""
        error = " ".join(str(error or "lease released").split())[:2000]
        now = self._now()
        j = t_jobs

        def run(conn: Connection) -> str | None:
            row = conn.execute(self._lock(select(j.c.id, j.c.device, j.c.attempts)
                                          .where(j.c.lease_id == lease_id, j.c.state == "running"))).first()
            if row is None:
                return None
            self._requeue(conn, row, error, now)
            return row.device

        device = self._tx(run)
        if device is None:
            return False
        self._poke([device])
        return True

    def expire(self) -> list[str]:
        """Release every lease past its expiry (its agent stopped heartbeating, or its hub died)."""
        now = self._now()
        j = t_jobs

        def run(conn: Connection) -> list[tuple[str, str]]:
            rows = conn.execute(self._skip_locked(
                select(j.c.id, j.c.device, j.c.attempts, j.c.lease_agent)
                .where(j.c.state == "running", j.c.lease_expires < now).order_by(j.c.lease_expires).limit(200))).all()
            for row in rows:
                self._requeue(conn, row, f"lease expired: agent {row.lease_agent} stopped answering", now)
            return [(row.id, row.device) for row in rows]

        out: list[tuple[str, str]] = []
        while True:
            batch = self._tx(run)
            out.extend(batch)
            if len(batch) < 200:
                if out:
                    self._poke(sorted({device for _, device in out}))
                return [job_id for job_id, _ in out]

    def _owned(self, conn: Connection, job_id: str, principal: Principal, verb: str):
        j = t_jobs
        row = conn.execute(self._lock(select(j).where(j.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r} at this hub: list them with `edgelat jobs list`")
        if not principal.may_manage(row.user):
            raise Forbidden(f"user {principal.user} ({principal.role}) may not {verb} job {job_id} of user {row.user}")
        return row

    def cancel(self, job_id: str, principal: Principal) -> dict:
        """Cancel a queued or running job (its owner or an admin); a running job's agent learns it
        when its next progress report returns False."""
        now = self._now()
        j, d = t_jobs, t_devices

        def run(conn: Connection) -> dict:
            row = self._owned(conn, job_id, principal, "cancel")
            if row.state not in ("queued", "running"):
                raise JobStateError(f"job {job_id} is {row.state}; only queued or running jobs can be cancelled")
            conn.execute(update(j).where(j.c.id == job_id).values(
                state="cancelled", message=f"cancelled by {principal.user}", finished_at=now, updated_at=now,
                version=j.c.version + 1, lease_id=None, lease_agent=None, lease_expires=None))
            if row.state == "running":
                conn.execute(update(d).where(d.c.name == row.device, d.c.busy_job == job_id).values(busy_job=None))
                self._notify_hubs(conn, row.device)
            return self._job_dict(conn.execute(select(j).where(j.c.id == job_id)).one())

        job = self._tx(run)
        self._poke([job["device"]])
        return job

    def retry(self, job_id: str, principal: Principal) -> dict:
        """Queue a failed or cancelled job again under the same id (its owner or an admin), with a
        fresh budget of lost leases (``attempts`` counts those since the job was last queued)."""
        now = self._now()
        j = t_jobs

        def run(conn: Connection) -> dict:
            row = self._owned(conn, job_id, principal, "retry")
            if row.state not in ("failed", "cancelled"):
                raise JobStateError(f"job {job_id} is {row.state}; only failed or cancelled jobs can be retried")
            conn.execute(update(j).where(j.c.id == job_id).values(
                state="queued", error=None, result=None, finished_at=None, message=f"retried by {principal.user}",
                attempts=0, updated_at=now, version=j.c.version + 1))
            self._notify_hubs(conn, row.device)
            return self._job_dict(conn.execute(select(j).where(j.c.id == job_id)).one())

        job = self._tx(run)
        self._poke([job["device"]])
        return job

    @staticmethod
    def _job_dict(r) -> dict:
        return dict(
            id=r.id, state=r.state, user=r.user, device=r.device, kind=r.kind, config=_load(r.config),
            params=_load(r.params), done=r.done, total=r.total, message=r.message, error=r.error,
            result=_load(r.result), priority=r.priority, attempts=r.attempts, created_at=_iso(r.created_at),
            started_at=_iso(r.started_at), finished_at=_iso(r.finished_at), updated_at=_iso(r.updated_at),
            agent_id=r.agent_id, hub_id=r.hub_id, change=str(r.version),
        )

    def get(self, job_id: str) -> dict:
        """One job as a dict (id, state, user, device, kind, progress, error, result, times...)."""
        j = t_jobs
        row = self._tx(lambda c: c.execute(select(j).where(j.c.id == job_id)).first(), write=False)
        if row is None:
            raise JobNotFound(f"no job {job_id!r} at this hub: list them with `edgelat jobs list`")
        return self._job_dict(row)

    def list_jobs(self, user: str | None = None, state: str | None = None, device: str | None = None,
                  limit: int = 100) -> list[dict]:
        """Jobs, newest first, optionally only one user's, one state's or one device's."""
        if state is not None and state not in JOB_STATES:
            raise BadInput(f"job state {state!r} is not one of {', '.join(JOB_STATES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100000:
            raise BadInput(f"limit must be a whole number from 1 to 100000, got {limit!r}")
        j = t_jobs
        stmt = select(j).order_by(j.c.created_at.desc()).limit(limit)
        if user is not None:
            stmt = stmt.where(j.c.user == user)
        if state is not None:
            stmt = stmt.where(j.c.state == state)
        if device is not None:
            stmt = stmt.where(j.c.device == device)
        return [self._job_dict(r) for r in self._tx(lambda c: c.execute(stmt).all(), write=False)]

    def wait_change(self, job_id: str, after: str | None, timeout_s: float, *, poll_s: float = 0.1) -> dict:
        """The job once its ``change`` differs from ``after`` (or it is final, or ``timeout_s`` passed).

        Pass the previous answer's ``change`` as ``after`` to follow a job (``jobs watch``)."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while True:
            job = self.get(job_id)
            if after is None or job["change"] != after or job["state"] in FINAL_STATES:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return job
            time.sleep(min(poll_s, left))

