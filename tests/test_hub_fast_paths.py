"""The hub's shortcuts on its hot path keep their answers: Submit's job comes from the one
transaction that queued it, a token looked up a moment ago is still checked for expiry and
revocation, and a model the agent took once is not offered to it again on that stream."""

from __future__ import annotations

from typing import Callable

import pytest
from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final

from edgelat.hub.errors import AuthError
from edgelat.hub.client import HubClient
from edgelat.hub.queue import HubStore
from edgelat.profiler.presets import get_preset

pytest_plugins = ["hub_db"]  # hub_url: SQLite and PostgreSQL


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_submit_job_answers_what_get_and_device_answer(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    job, device = store.submit_job("alice", "profile-ops", "dev1", {"threads": 2}, {"specs": ["x"]}, priority=3)
    assert device is None  # never seen
    assert job == store.get(job["id"])
    store.create_token("rack", "agent", ["dev1"])
    store.agent_online("rack", "rack", {"dev1": {"kind": "board"}})
    job, device = store.submit_job("alice", "profile-ops", "dev1", {}, {})
    assert job == store.get(job["id"]) and device == store.device("dev1")
    assert job["state"] == "queued" and device["state"] == "online"


def test_a_remembered_token_still_expires_and_is_revoked(make_store: Callable[..., HubStore]) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    other_hub = make_store(hub_id="hub-b", token_cache_s=0)
    short = store.create_token("alice", "user", expires_s=60)
    assert store.authenticate(short).user == "alice"
    assert store.authenticate(short).user == "alice"  # from memory
    clock.t += 61
    with pytest.raises(AuthError, match="expired"):
        store.authenticate(short)
    bob = store.create_token("bob", "user")
    assert store.authenticate(bob).user == "bob" and other_hub.authenticate(bob).user == "bob"
    other_hub.revoke_token("bob")
    with pytest.raises(AuthError, match="revoked"):
        other_hub.authenticate(bob)  # no memory: at once
    store.revoke_token("bob")
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(bob)  # revoked through this store: forgotten at once


def test_models_the_agent_holds_are_not_offered_again(tmp_path) -> None:
    specs = [s.key for s in get_preset("smoke")[:2]]
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            params = {"specs": specs[:1], "protocol": FAST_DICT, "rounds": 0}
            assert wait_final(client, client.submit("profile-ops", "dev1", {}, params)[0]["id"])["state"] == "done"
            held = set(hub.fleet.connection("dev1").models)
            assert held and all(device == "dev1" for device, _ in held)
            params["specs"] = specs[1:]
            final = wait_final(client, client.submit("profile-ops", "dev1", {}, params)[0]["id"])
            assert final["state"] == "done" and final["result"]["measured"] == 1
            assert held < set(hub.fleet.connection("dev1").models)  # the new kernel's model joined them


def _online(store: HubStore, agent: str, devices: list[str]) -> None:
    store.create_token(agent, "agent", devices)
    store.agent_online(agent, agent, {d: {"kind": "board"} for d in devices})


def test_submit_leases_a_free_devices_next_job_in_its_transaction(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    early = store.submit("bob", "profile-ops", "dev1", {}, {})  # queued before any agent serves dev1
    _online(store, "rack", ["dev1", "dev2"])
    job, device, lease = store.submit_and_lease("alice", "profile-ops", "dev1", {}, {}, lease_ttl_s=30)
    assert lease is not None and lease.job["id"] == early  # the job waiting longer goes first
    assert job["state"] == "queued" and store.get(job["id"])["state"] == "queued"
    assert store.device("dev1")["job"] == early
    job, _, none = store.submit_and_lease("alice", "profile-ops", "dev1", {}, {}, lease_ttl_s=30)
    assert none is None  # dev1 is busy: queued for the dispatcher
    job, device, lease = store.submit_and_lease("alice", "profile-ops", "dev2", {}, {}, lease_ttl_s=30)
    assert lease.job["id"] == job["id"] and job == store.get(job["id"])  # its own lease, as stored
    assert job["state"] == "running" and device["state"] == "busy"
    assert store.submit_and_lease("alice", "profile-ops", "dev9", {}, {}, lease_ttl_s=30)[2] is None  # not here
    assert store.lease(ttl_s=30) is None  # nothing free to lease: no job was lost or leased twice
    assert sorted(j["state"] for j in store.list_jobs()) == ["queued"] * 3 + ["running"] * 2


def test_a_finish_leases_the_devices_next_job_by_fair_share(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    _online(store, "rack", ["dev1", "dev2"])
    first = store.submit_and_lease("alice", "profile-ops", "dev1", {}, {}, lease_ttl_s=30)[2]
    other = store.submit_and_lease("alice", "profile-ops", "dev2", {}, {}, lease_ttl_s=30)[2]
    alices = store.submit("alice", "profile-ops", "dev1", {}, {})
    bobs = store.submit("bob", "profile-ops", "dev1", {}, {})  # later, but bob runs nothing
    done, nxt = store.finish_then_lease(first.lease_id, "done", result={"ok": 1}, next_ttl_s=30)
    assert done and nxt.job["id"] == bobs and store.get(first.job["id"])["state"] == "done"
    assert store.finish_then_lease(first.lease_id, "done", next_ttl_s=30) == (False, None)  # gone already
    done, nxt = store.finish_then_lease(nxt.lease_id, "failed", error="broke")  # no next lease asked for
    assert done and nxt is None and store.get(bobs)["state"] == "failed"
    assert store.lease(ttl_s=30).job["id"] == alices  # left for the dispatcher
    assert store.finish_then_lease(other.lease_id, "done", next_ttl_s=30) == (True, None)  # nothing waits


def test_a_finish_leases_the_user_who_leased_less_lately_first(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    _online(store, "rack", ["dev1"])
    first = store.submit_and_lease("alice", "profile-ops", "dev1", {}, {}, lease_ttl_s=30)[2]
    alices = store.submit("alice", "profile-ops", "dev1", {}, {})
    bobs = store.submit("bob", "profile-ops", "dev1", {}, {})  # later; neither runs anything once first ends
    done, nxt = store.finish_then_lease(first.lease_id, "done", next_ttl_s=30)
    assert done and nxt.job["id"] == bobs  # alice leased through this hub a moment ago, bob not
    done, nxt = store.finish_then_lease(nxt.lease_id, "done", next_ttl_s=30)
    assert done and nxt.job["id"] == alices


def test_lease_device_takes_that_devices_next_job_only(make_store: Callable[..., HubStore]) -> None:
    store = make_store()
    _online(store, "rack", ["dev1", "dev2"])
    other = store.submit("alice", "profile-ops", "dev2", {}, {})
    mine = store.submit("alice", "profile-ops", "dev1", {}, {})
    lease = store.lease_device("dev1", ttl_s=30)
    assert lease is not None and lease.job["id"] == mine and store.get(other)["state"] == "queued"
    assert store.lease_device("dev1", ttl_s=30) is None  # busy now


def test_heartbeats_of_many_agents_go_in_one_write(make_store: Callable[..., HubStore]) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    _online(store, "a1", ["dev1"])
    _online(store, "a2", ["dev2"])
    leases = [store.submit_and_lease("alice", "profile-ops", d, {}, {}, lease_ttl_s=10)[2] for d in ("dev1", "dev2")]
    clock.t += 8
    store.heartbeat_many(["a1", "a2"])
    clock.t += 8  # 16 s after the leases, 8 after the heartbeats
    assert store.expire() == []
    assert all(store.device(d)["last_seen"] == store.device("dev1")["last_seen"] for d in ("dev1", "dev2"))
    clock.t += 3
    assert sorted(store.expire()) == sorted(lease.job["id"] for lease in leases)


def test_a_job_that_met_its_tables_locked_goes_on_where_it_stopped(tmp_path) -> None:
    import sqlite3

    from edgelat.hub.runner import Runner

    path = tmp_path / "tables.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE rows (k TEXT PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")  # another job's write, longer than the busy timeout
    holder.execute("INSERT INTO rows VALUES ('a')")
    writer = sqlite3.connect(path, timeout=0.05)
    calls = []

    def run() -> dict:
        calls.append(1)
        try:
            with writer:
                writer.execute("INSERT OR IGNORE INTO rows VALUES ('b')")
        finally:
            if len(calls) == 1:
                holder.execute("COMMIT")  # the other job is done
        return {"rows": writer.execute("SELECT COUNT(*) FROM rows").fetchone()[0]}

    assert Runner._resuming(run, "job1", writer) == {"rows": 2} and len(calls) == 2

    def broken() -> dict:
        raise sqlite3.OperationalError("no such table: nowhere")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        Runner._resuming(broken, "job2", writer)  # not a lock: the job fails as before
