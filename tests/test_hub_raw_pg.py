"""The hub's one-statement steps on plain pooled connections (PostgreSQL; SQLite keeps its own path)."""

from __future__ import annotations

import time
from typing import Callable

import pytest
from sqlalchemy import PickleType, bindparam, select, text
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from edgelat.hub import raw_pg
from edgelat.hub.queue import HubStore
from edgelat.hub.tokens import Principal

pytest_plugins = ["hub_db"]  # hub_url, make_store: here PostgreSQL only
on_postgresql = pytest.mark.parametrize("hub_url", ["postgresql"], indirect=True)


def _online(store: HubStore, agent: str, devices: list[str]) -> None:
    store.create_token(agent, "agent", devices)
    store.agent_online(agent, agent, {d: {"kind": "board"} for d in devices})


def test_a_statement_needing_bind_processing_is_refused_when_compiled() -> None:
    needs = select(text("1")).where(bindparam("p_blob", type_=PickleType()) == bindparam("p_other", type_=PickleType()))
    with pytest.raises(RuntimeError, match="bind processing"):
        raw_pg.compile_statements([needs], pg_dialect.dialect())
    plain = text("SELECT :p_a + 1")
    (sql, fixed), = raw_pg.compile_statements([plain], pg_dialect.dialect()).values()
    assert sql == "SELECT %(p_a)s + 1" and fixed == {}


def test_a_statement_not_compiled_at_open_is_a_clear_programming_error() -> None:
    conn = raw_pg.Connection(raw=None, compiled={})
    with pytest.raises(RuntimeError, match="not compiled"):
        conn.execute(text("SELECT 1"))


@on_postgresql
def test_connections_the_server_closed_are_replaced(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    assert store.is_postgresql
    _online(store, "rack", ["dev1"])
    first = store.submit("alice", "profile-ops", "dev1", {}, {})
    # the server ends every connection of this hub (a restart, an admin, a failover would)
    killed = store.transaction(lambda c: c.execute(text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = :n AND pid <> pg_backend_pid()"), {"n": "edgelat-hub hub-a"}).scalar())
    assert killed >= 1
    time.sleep(0.2)
    second = store.submit("alice", "profile-ops", "dev1", {}, {})  # on a fresh connection, not an error
    assert store.heartbeat("rack") == 0
    lease = store.lease(ttl_s=30)
    assert lease is not None and lease.job["id"] == first
    assert store.finish(lease.lease_id, "done")
    assert [j["state"] for j in sorted(store.list_jobs(), key=lambda j: j["created_at"])] == ["done", "queued"]
    assert store.get(second)["state"] == "queued"


@on_postgresql
def test_a_claim_of_a_job_no_longer_queued_leaves_its_device_free(make_store: Callable[..., HubStore]) -> None:
    """Leasing picks a job, then claims it in a second statement: a job cancelled in between must not
    leave its device marked busy with it (the claim takes the device only with the job)."""
    store = make_store()
    assert store.is_postgresql
    _online(store, "rack", ["dev1"])
    job = store.submit("alice", "profile-ops", "dev1", {}, {})
    store.cancel(job, Principal(user="alice", role="user"))
    now = time.time()
    base = {"p_hub": store.hub_id, "p_cutoff": now - store.offline_after_s}
    got = store._quick(lambda c: store._claim(c, job, "dev1", "alice", now, 30.0, base, free_only=True))  # noqa: SLF001
    assert got is None
    assert store.device("dev1")["state"] == "online" and store.device("dev1")["job"] is None


def test_a_hub_that_waits_too_long_for_a_pooled_connection_says_unreachable_in_one_line() -> None:
    from psycopg_pool import PoolTimeout

    from edgelat.hub.db import db_error

    error = db_error(PoolTimeout("couldn't get a connection after 60.00 sec"), "postgresql://hub@db/edgelat")
    assert "postgresql://hub@db/edgelat is unreachable" in str(error) and "\n" not in str(error)
    assert not raw_pg.is_transient(PoolTimeout("couldn't get a connection"), integrity_ok=True)  # not retried
