"""The hub's persisted job queue, on SQLite and on a real PostgreSQL (same tests, both engines)."""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Callable

import pytest
from sqlalchemy import create_engine, text, update

from edgelat.errors import BadInput, EdgelatError, UnknownDevice
from edgelat.hub.errors import AuthError, Forbidden, HubDatabaseError, JobNotFound, JobStateError
from edgelat.hub.queue import QUARANTINE_AFTER, HubStore, Principal
from edgelat.hub.schema import jobs as t_jobs

pytest_plugins = ["hub_db"]  # the hub_url / make_store / store fixtures, both engines


class Clock:
    """A clock the test moves by hand (lease expiry without sleeping)."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def bring_online(store: HubStore, agent: str, devices: list[str], user: str | None = None) -> None:
    user = user or f"agent-{agent}"
    secret = store.create_token(user, "agent", devices)
    store.agent_online(agent, user, {d: {"kind": "board"} for d in devices},
                       principal=store.authenticate(secret))


ADMIN = Principal("root", "admin")
ALICE = Principal("alice", "user")
BOB = Principal("bob", "user")


# ---------------------------------------------------------------- tokens and roles

def test_tokens_are_stored_hashed_and_authenticate(store: HubStore, hub_url: str) -> None:
    secret = store.create_token("alice", "user", ["pixel7"], expires_s=3600)
    alice = store.authenticate(secret)
    assert alice == Principal("alice", "user", ("pixel7",))
    assert alice.may_use("pixel7") and not alice.may_use("rpi5")  # the device list binds a user too
    assert alice.may_manage("alice") and not alice.may_manage("bob") and ADMIN.may_manage("bob")
    assert store.authenticate(secret + "\n").user == "alice"  # token files end with a newline
    engine = create_engine(hub_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = [tuple(str(v) for v in r) for r in conn.execute(text("SELECT * FROM hub_tokens")).all()]
    engine.dispose()
    assert rows and not any(secret in v or secret[4:] in v for r in rows for v in r)
    assert any(hashlib.sha256(secret.encode()).hexdigest() in r for r in rows)


def test_unknown_expired_and_revoked_tokens_are_refused(make_store: Callable[..., HubStore]) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    with pytest.raises(AuthError, match="unknown token"):
        store.authenticate("elh_not-a-token")
    with pytest.raises(AuthError, match="no token"):
        store.authenticate("")
    short = store.create_token("alice", "user", expires_s=60)
    assert store.authenticate(short).role == "user"
    clock.advance(61)
    with pytest.raises(AuthError, match="alice expired"):
        store.authenticate(short)
    a, b = store.create_token("bob", "user"), store.create_token("bob", "admin")
    assert store.revoke_token("bob") == 2
    assert store.revoke_token("bob") == 0
    for secret in (a, b):
        with pytest.raises(AuthError, match="revoked"):
            store.authenticate(secret)
    with pytest.raises(BadInput, match="role"):
        store.create_token("eve", "superuser")
    with pytest.raises(BadInput, match="lifetime"):
        store.create_token("eve", "user", expires_s=-1)


def test_agent_serves_only_the_devices_its_token_names(store: HubStore) -> None:
    secret = store.create_token("rack1", "agent", ["dev1"])
    agent = store.authenticate(secret)
    with pytest.raises(Forbidden, match="does not name device dev2"):
        store.agent_online("a1", "rack1", {"dev1": {}, "dev2": {}}, principal=agent)
    assert store.devices() == []  # nothing half-registered
    with pytest.raises(Forbidden, match="does not name device dev2"):
        store.agent_online("a1", "rack1", {"dev2": {}})  # looked up from the user's tokens
    with pytest.raises(AuthError, match="no live agent token"):
        store.agent_online("a2", "nobody", {"dev1": {}})
    user = store.authenticate(store.create_token("alice", "user"))
    with pytest.raises(Forbidden, match="needs an agent token"):
        store.agent_online("a3", "alice", {"dev1": {}}, principal=user)
    store.agent_online("a1", "rack1", {"dev1": {"kind": "phone"}}, principal=agent)
    [dev] = store.devices()
    assert (dev["name"], dev["state"], dev["facts"], dev["agent_id"], dev["hub_id"]) == \
        ("dev1", "online", {"kind": "phone"}, "a1", "hub-a")
    assert store.device("dev1") == dev and store.device("dev2") is None  # one device, as devices() shows it
    assert isinstance(Forbidden("x"), EdgelatError)


# ---------------------------------------------------------------- the job life cycle

def test_submit_lease_progress_finish(store: HubStore) -> None:
    bring_online(store, "a1", ["dev1"])
    job_id = store.submit("alice", "profile-ops", "dev1", {"runtime": "onnxruntime", "threads": 1},
                          {"preset": "mobilenet"})
    job = store.get(job_id)
    assert (job["state"], job["user"], job["device"], job["kind"], job["attempts"]) == \
        ("queued", "alice", "dev1", "profile-ops", 0)
    assert job["config"] == {"runtime": "onnxruntime", "threads": 1} and job["started_at"] is None

    lease = store.lease(ttl_s=30)
    assert lease is not None and lease.job["id"] == job_id and lease.agent_id == "a1"
    assert lease.job["state"] == "running" and lease.device == "dev1"
    assert [d["state"] for d in store.devices()] == ["busy"]
    assert store.lease() is None  # one job per device: nothing else to hand out

    assert store.progress(lease.lease_id, 3, 10, "conv2d 3/10") is True
    got = store.get(job_id)
    assert (got["done"], got["total"], got["message"]) == (3, 10, "conv2d 3/10")
    assert store.finish(lease.lease_id, "done", result={"rows": 10}) is True
    got = store.get(job_id)
    assert got["state"] == "done" and got["result"] == {"rows": 10} and got["finished_at"]
    assert got["agent_id"] == "a1" and got["hub_id"] == "hub-a"
    assert [d["state"] for d in store.devices()] == ["online"]
    # A finished lease is gone: further reports are refused, not applied.
    assert store.finish(lease.lease_id, "failed", error="late") is False
    assert store.progress(lease.lease_id, 4, 10) is False
    assert store.get(job_id)["state"] == "done"

    failing = store.submit("alice", "profile-ops", "dev1", {}, {})
    lease = store.lease(["dev1"])
    assert lease.job["id"] == failing
    assert store.finish(lease.lease_id, "failed", error="runtime crashed") is True
    assert store.get(failing)["error"] == "runtime crashed"


def test_job_for_an_offline_device_waits_in_the_queue(store: HubStore) -> None:
    job_id = store.submit("alice", "profile-ops", "pixel7", {}, {})
    assert store.lease() is None and store.lease(["pixel7"]) is None
    assert store.get(job_id)["state"] == "queued"
    bring_online(store, "adb1", ["pixel7"])
    assert store.lease(["pixel7"]).job["id"] == job_id


def test_only_devices_online_through_this_hub_are_leased(make_store: Callable[..., HubStore]) -> None:
    hub_a, hub_b = make_store("hub-a"), make_store("hub-b")
    bring_online(hub_b, "b1", ["dev-b"])
    job_id = hub_a.submit("alice", "k", "dev-b", {}, {})
    assert hub_a.lease() is None and hub_a.lease(["dev-b"]) is None
    lease = hub_b.lease()
    assert lease.job["id"] == job_id and lease.job["hub_id"] == "hub-b"


def test_one_job_per_device_also_enforced_by_the_database(store: HubStore, hub_url: str) -> None:
    bring_online(store, "a1", ["dev1"])
    first, second = (store.submit("alice", "k", "dev1", {}, {}) for _ in range(2))
    lease = store.lease()
    assert lease.job["id"] == first and store.lease() is None and store.lease(["dev1"]) is None
    engine = create_engine(hub_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
            conn.execute(update(t_jobs).where(t_jobs.c.id == second).values(state="running"))
    finally:
        engine.dispose()
    store.finish(lease.lease_id, "done")
    assert store.lease().job["id"] == second


@pytest.mark.parametrize("asked", ["any", "few", "many"], ids=["any-device", "agent-devices", "many-devices"])
def test_priority_then_fair_share_then_submit_time(make_store: Callable[..., HubStore], asked: str) -> None:
    store = make_store(clock=Clock())
    devs = ["d1", "d2", "d3", "d4", "d5"]
    bring_online(store, "a1", devs)
    # None: any device; a few names: the per-device path; many names: the queue-order path, filtered.
    ask = {"any": None, "few": devs, "many": devs + [f"other{i}" for i in range(100)]}[asked]
    alice = [store.submit("alice", "k", d, {}, {}) for d in devs for _ in range(2)]
    bob = [store.submit("bob", "k", d, {}, {}) for d in devs[:4]]
    urgent = store.submit("carol", "k", "d5", {}, {}, priority=5)
    order = [store.lease(ask).job for _ in range(5)]
    assert store.lease(ask) is None  # every device busy
    assert order[0]["id"] == urgent  # priority first, although submitted last
    # Then fair share: alice and bob alternate though all of alice's jobs came first; each
    # user's jobs go in submit order, skipping those whose device is busy by then.
    assert [j["user"] for j in order[1:]] == ["alice", "bob", "alice", "bob"]
    assert [j["id"] for j in order[1:] if j["user"] == "alice"] == [alice[0], alice[4]]
    assert [j["id"] for j in order[1:] if j["user"] == "bob"] == [bob[1], bob[3]]


def test_fair_share_remembers_who_leased_recently(make_store: Callable[..., HubStore]) -> None:
    store = make_store(clock=Clock())
    bring_online(store, "a1", ["d1"])
    for _ in range(6):
        store.submit("alice", "k", "d1", {}, {})
    for _ in range(3):  # alice alone: she gets three jobs in a row
        lease = store.lease()
        assert lease.job["user"] == "alice"
        store.finish(lease.lease_id, "done")
    bob = store.submit("bob", "k", "d1", {}, {})
    # Nobody runs anything now; bob leased nothing recently, so his later job goes first.
    assert store.lease(["d1"]).job["id"] == bob


# ---------------------------------------------------------------- leases lost and found

def test_heartbeat_renews_and_expiry_requeues(make_store: Callable[..., HubStore]) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    bring_online(store, "a1", ["dev1"])
    job_id = store.submit("alice", "k", "dev1", {}, {})
    lease = store.lease(ttl_s=10)
    store.progress(lease.lease_id, 4, 10)
    clock.advance(8)
    assert store.heartbeat("a1") == 1
    clock.advance(8)  # 16 s after the lease, 8 after the heartbeat
    assert store.expire() == []
    assert store.get(job_id)["state"] == "running"
    clock.advance(3)
    assert store.expire() == [job_id]  # the heartbeat stopped
    job = store.get(job_id)
    assert (job["state"], job["attempts"], job["done"], job["total"]) == ("queued", 1, 4, 10)
    assert "lease expired" in job["error"]
    assert store.progress(lease.lease_id, 5, 10) is False  # the old holder must stop
    assert store.finish(lease.lease_id, "done") is False
    store.heartbeat("a1")
    again = store.lease()
    assert again.job["id"] == job_id and again.lease_id != lease.lease_id
    assert again.job["started_at"] == lease.job["started_at"]  # resumes where it stopped
    store.finish(again.lease_id, "done")
    assert store.get(job_id)["state"] == "done"


def test_heartbeat_renews_only_this_hubs_leases(make_store: Callable[..., HubStore]) -> None:
    """A hub dies holding a lease; its agent reconnects to another hub, whose heartbeats must
    not keep the dead hub's lease alive: it expires, and the job runs again via the live hub."""
    clock = Clock()
    dead, live = make_store("hub-a", clock=clock), make_store("hub-b", clock=clock)
    bring_online(dead, "a1", ["dev1"])
    job_id = dead.submit("alice", "k", "dev1", {}, {})
    lost = dead.lease(ttl_s=10)
    assert lost is not None and lost.job["hub_id"] == "hub-a"
    # hub-a is gone; the agent dials hub-b and heartbeats there for longer than the lease lives.
    bring_online(live, "a1", ["dev1"])
    for _ in range(4):
        clock.advance(4)
        assert live.heartbeat("a1") == 0  # nothing of hub-b's to renew
    assert [d["state"] for d in live.devices()] == ["busy"]  # still seen (not offline), still busy
    assert live.expire() == [job_id]
    assert (live.get(job_id)["state"], live.get(job_id)["attempts"]) == ("queued", 1)
    again = live.lease(ttl_s=10)
    assert again is not None and again.job["id"] == job_id and again.job["hub_id"] == "hub-b"
    clock.advance(8)
    assert live.heartbeat("a1") == 1  # hub-b's own lease is renewed
    assert dead.heartbeat("a1") == 0  # a stale stream on hub-a renews nothing, marks nothing seen
    clock.advance(8)
    assert live.expire() == []
    assert dead.finish(lost.lease_id, "done") is False
    assert live.finish(again.lease_id, "done") is True
    assert live.get(job_id)["state"] == "done"


def test_agent_that_comes_back_in_time_keeps_its_lease(make_store: Callable[..., HubStore]) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    bring_online(store, "a1", ["dev1"])
    store.submit("alice", "k", "dev1", {}, {})
    lease = store.lease(ttl_s=10)
    store.agent_offline("a1")
    assert [d["state"] for d in store.devices()] == ["offline"]
    clock.advance(6)
    bring_online(store, "a1", ["dev1"])
    store.heartbeat("a1")
    clock.advance(6)
    assert store.expire() == []
    assert store.finish(lease.lease_id, "done") is True


def test_quarantine_after_lost_leases_in_a_row(store: HubStore) -> None:
    bring_online(store, "a1", ["dev1"])
    job_id = store.submit("alice", "k", "dev1", {}, {})
    # Two losses, then a success: the streak starts again.
    for _ in range(2):
        store.release(store.lease().lease_id, "device disconnected")
    store.finish(store.lease().lease_id, "done")
    assert store.get(job_id)["attempts"] == 2
    store.submit("alice", "k", "dev1", {}, {})
    for i in range(QUARANTINE_AFTER):
        assert [d["state"] for d in store.devices()] == ["online"]
        lease = store.lease()
        assert store.release(lease.lease_id, f"usb reset {i}") is True
    [dev] = store.devices()
    assert dev["state"] == "quarantined" and dev["last_error"] == "usb reset 2"
    assert store.lease() is None and store.lease(["dev1"]) is None
    assert store.release(lease.lease_id, "again") is False
    store.release_quarantine("dev1")
    assert [d["state"] for d in store.devices()] == ["online"]
    assert store.lease().job["attempts"] == QUARANTINE_AFTER
    with pytest.raises(UnknownDevice):
        store.release_quarantine("nosuch")


def test_a_job_that_keeps_losing_leases_fails(make_store: Callable[..., HubStore]) -> None:
    store = make_store(max_attempts=2)
    bring_online(store, "a1", ["dev1", "dev2"])
    job_id = store.submit("alice", "k", "dev1", {}, {})
    store.release(store.lease().lease_id, "lost")
    store.release(store.lease().lease_id, "lost again")
    job = store.get(job_id)
    assert job["state"] == "failed" and "gave up after 2" in job["error"]
    assert [d["state"] for d in store.devices()] == ["online", "online"]  # two losses: no quarantine yet
    again = store.retry(job_id, ALICE)
    assert (again["state"], again["attempts"], again["error"]) == ("queued", 0, None)  # a fresh budget


# ---------------------------------------------------------------- cancel, retry, roles

def test_cancel_and_retry_need_the_owner_or_an_admin(store: HubStore) -> None:
    bring_online(store, "a1", ["dev1"])
    queued = store.submit("alice", "k", "dev1", {}, {})
    with pytest.raises(Forbidden, match="bob"):
        store.cancel(queued, BOB)
    with pytest.raises(Forbidden):
        store.cancel(queued, Principal("alice", "agent"))
    assert store.cancel(queued, ALICE)["state"] == "cancelled"
    with pytest.raises(JobStateError, match="cancelled"):
        store.cancel(queued, ALICE)
    with pytest.raises(Forbidden):
        store.retry(queued, BOB)
    assert store.retry(queued, ADMIN)["state"] == "queued"
    with pytest.raises(JobStateError, match="queued"):
        store.retry(queued, ALICE)

    lease = store.lease()
    assert lease.job["id"] == queued
    job = store.cancel(queued, ADMIN)
    assert job["state"] == "cancelled" and job["user"] == "alice"
    assert store.progress(lease.lease_id, 1, 2) is False  # the agent learns it and stops
    assert store.finish(lease.lease_id, "done") is False
    assert [d["state"] for d in store.devices()] == ["online"]
    assert store.retry(queued, ALICE)["id"] == queued
    with pytest.raises(JobNotFound):
        store.cancel("nosuch", ADMIN)


def test_list_get_and_wait_change(store: HubStore) -> None:
    bring_online(store, "a1", ["dev1", "dev2"])
    a = store.submit("alice", "k", "dev1", {}, {})
    b = store.submit("bob", "k", "dev2", {}, {})
    assert [j["id"] for j in store.list_jobs()] == [b, a]
    assert [j["id"] for j in store.list_jobs(user="alice")] == [a]
    assert [j["id"] for j in store.list_jobs(device="dev2")] == [b]
    assert store.list_jobs(state="running") == []
    with pytest.raises(JobNotFound, match="nosuch"):
        store.get("nosuch")
    with pytest.raises(BadInput):
        store.list_jobs(state="exploded")

    first = store.wait_change(a, None, 5)
    assert store.wait_change(a, first["change"], 0.05)["change"] == first["change"]
    lease = store.lease(["dev1"])
    moved = threading.Event()

    def report() -> None:
        moved.wait(5)
        store.progress(lease.lease_id, 1, 3, "one")

    t = threading.Thread(target=report)
    t.start()
    seen = store.wait_change(a, store.get(a)["change"], 0.0)
    moved.set()
    changed = store.wait_change(a, seen["change"], 30)
    t.join()
    assert (changed["done"], changed["message"]) == (1, "one")


def test_dispatchers_wait_for_work_instead_of_polling(make_store: Callable[..., HubStore],
                                                      hub_url: str) -> None:
    hub_a = make_store("hub-a")
    bring_online(hub_a, "a1", ["dev1", "dev2"])
    marker = hub_a.work_marker()
    assert hub_a.lease() is None
    # Woken by a submit on this hub, or (PostgreSQL, LISTEN/NOTIFY) on another hub; a missed
    # wake-up would return the old marker after the long timeout and fail the test.
    submitter = hub_a if hub_url.startswith("sqlite") else make_store("hub-b")
    hub_a.wait_for_work(marker, 0)  # the first wait (PostgreSQL) starts listening, and returns once it does
    woke: dict[str, int] = {}

    def wait(key: str, devices: list[str] | None) -> None:
        woke[key] = hub_a.wait_for_work(marker, 60, devices)

    waiters = [threading.Thread(target=wait, args=("any", None)),
               threading.Thread(target=wait, args=("dev1", ["dev1"]))]
    for t in waiters:
        t.start()
    submitter.submit("alice", "k", "dev1", {}, {})
    for t in waiters:
        t.join(120)
    assert woke["any"] != marker and woke["dev1"] != marker
    # Something that happened before the wait began is not missed either.
    assert hub_a.wait_for_work(marker, 60, ["dev1"]) != marker
    assert hub_a.lease(["dev1"]) is not None


def test_bad_input_is_one_clear_line(store: HubStore) -> None:
    cases = [
        lambda: store.submit("alice", "k", "dev1", "not a dict", {}),  # type: ignore[arg-type]
        lambda: store.submit("alice", "k", "dev1", {}, {"x": {1, 2}}),
        lambda: store.submit("alice", "k", "dev1", {}, {}, priority="high"),  # type: ignore[arg-type]
        lambda: store.submit("", "k", "dev1", {}, {}),
        lambda: store.submit("alice", "k", "bad\nname", {}, {}),
        lambda: store.lease(ttl_s=0),
        lambda: store.finish("x", "exploded"),
        lambda: store.progress("x", -1, 2),
    ]
    for case in cases:
        with pytest.raises(BadInput) as info:
            case()
        assert "\n" not in str(info.value)
    assert store.list_jobs() == []  # nothing was written


# ---------------------------------------------------------------- two hubs, persistence

def test_two_hubs_never_lease_one_job_twice(make_store: Callable[..., HubStore]) -> None:
    hubs = {"hub-a": make_store("hub-a"), "hub-b": make_store("hub-b")}
    owned = {"hub-a": [f"a{i}" for i in range(6)], "hub-b": [f"b{i}" for i in range(6)]}
    for hub_id, hub in hubs.items():
        bring_online(hub, f"agent-{hub_id}", owned[hub_id])
    every = owned["hub-a"] + owned["hub-b"]
    submitted = [hubs["hub-a"].submit(f"user{i % 4}", "k", every[i % len(every)], {}, {}, priority=i % 3)
                 for i in range(180)]
    leased: list[tuple[str, str, str]] = []
    running: collections.Counter[str] = collections.Counter()
    errors: list[BaseException] = []
    guard = threading.Lock()

    def work(hub_id: str, by_device: bool) -> None:
        hub = hubs[hub_id]
        try:
            idle = 0
            while idle < 20:
                lease = hub.lease(owned[hub_id] if by_device else None, ttl_s=60)
                if lease is None:
                    idle += 1
                    threading.Event().wait(0.01)
                    continue
                idle = 0
                with guard:
                    leased.append((lease.job["id"], hub_id, lease.device))
                    running[lease.device] += 1
                    assert running[lease.device] == 1, f"{lease.device} runs two jobs"
                    running[lease.device] -= 1
                assert hub.finish(lease.lease_id, "done") is True
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(hub_id, i % 2 == 0))
               for hub_id in hubs for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors[0]
    ids = [job_id for job_id, _, _ in leased]
    assert len(ids) == len(set(ids)) == len(submitted)  # every job once, none twice
    assert all(device in owned[hub_id] for _, hub_id, device in leased)
    states = {j["state"] for j in hubs["hub-b"].list_jobs(limit=1000)}
    assert states == {"done"}


def test_a_reopened_store_keeps_every_job(make_store: Callable[..., HubStore], hub_url: str) -> None:
    store = make_store()
    bring_online(store, "a1", ["dev1", "dev2"])
    done = store.submit("alice", "k", "dev1", {"runtime": "litert"}, {"n": 1})
    store.finish(store.lease(["dev1"]).lease_id, "done", result={"rows": 1})
    running = store.submit("bob", "k", "dev2", {}, {}, priority=2)
    lease = store.lease(["dev2"])
    queued = store.submit("alice", "k", "dev1", {}, {})
    secret = store.create_token("carol", "user")
    before = {j["id"]: j for j in store.list_jobs()}
    store.close()

    again = HubStore(hub_url, hub_id="hub-a").open()
    try:
        after = {j["id"]: j for j in again.list_jobs()}
        assert after == before
        assert [after[i]["state"] for i in (done, running, queued)] == ["done", "running", "queued"]
        assert again.authenticate(secret).user == "carol"
        assert again.finish(lease.lease_id, "done") is True  # the lease survived the restart
        assert again.get(done)["result"] == {"rows": 1}
    finally:
        again.close()


# ---------------------------------------------------------------- a database that cannot be used

def test_unusable_databases_give_one_line(tmp_path) -> None:
    missing = HubStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'hub.db'}")
    with pytest.raises(HubDatabaseError, match="unreachable|cannot") as info:
        missing.open()
    assert "\n" not in str(info.value)
    garbage = tmp_path / "hub.db"
    garbage.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(HubDatabaseError, match="damaged") as info:
        HubStore(f"sqlite:///{garbage}").open()
    assert "\n" not in str(info.value)
    assert garbage.read_bytes() == b"this is not a database\n" * 200  # left as it was
    with pytest.raises(BadInput, match="only sqlite"):
        HubStore("mysql://x@y/z").open()
    with pytest.raises(HubDatabaseError, match="not open"):
        HubStore(f"sqlite:///{garbage}").get("x")


def test_unreachable_postgresql_gives_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HubDatabaseError, match="unreachable") as info:
        HubStore(f"postgresql://hub:secret@127.0.0.1:{port}/edgelat").open()
    assert "\n" not in str(info.value) and "secret" not in str(info.value)
