"""Hubs on one database share one set of latency tables (on both queue engines): what a job on
hub A measured is in hub B's tables, a job on hub B skips it, a hub started later catches up,
and a row published twice or changed on two hubs is stored once, the same everywhere."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final

from edgelat.hub.client import HubClient
from edgelat.hub.queue import HubStore
from edgelat.hub import shared_tables, table_log
from edgelat.hub.shared_tables import SharedTables
from edgelat.lut import replica, store
from edgelat.profiler.presets import get_preset
from edgelat.values import RuntimeConfig

pytest_plugins = ["hub_db"]  # hub_url: SQLite and PostgreSQL

SPECS = [s.key for s in get_preset("smoke")[:3]]


def _params() -> dict:
    return {"specs": SPECS, "protocol": FAST_DICT, "rounds": 0}


def _rows(path: Path) -> dict[str, list]:
    """What the measurement tables of one hub hold (ids and times of taking in left out)."""
    db = store.open_db(path)
    try:
        kernels = sorted((r["kernel_key"], r["config_key"], r["median_ms"], r["measured_at"])
                         for r in store.kernel_rows(db, "dev1"))
        history = sorted((h["item_key"], h["median_ms"], h["measured_at"]) for h in store.history_rows(db, "dev1"))
        checks = sorted(tuple(r[1:]) for r in db.execute("select * from sentinel_checks").fetchall())
        registry = [r[0] for r in db.execute("select name from devices order by name").fetchall()]
    finally:
        db.close()
    return {"kernels": kernels, "history": history, "checks": checks, "devices": registry}


def _two_hubs(stack: contextlib.ExitStack, tmp_path, hub_url: str, tables: dict | None = None) -> dict:
    """Hubs "a" and "b" on one queue database, sharing tables (each its own file)."""
    return {name: stack.enter_context(running_hub(tmp_path, db_url=hub_url, hub_id=f"hub-{name}",
                                                  tables_path=(tables or {}).get(name, tmp_path / f"tables-{name}.db"),
                                                  share_tables=True))
            for name in ("a", "b")}


def test_a_job_on_hub_a_fills_hub_b_tables_and_hub_b_measures_nothing_again(tmp_path, hub_url, monkeypatch):
    monkeypatch.setattr(shared_tables, "SYNC_EVERY_S", 3600.0)  # only what jobs and reads do
    tables = {name: tmp_path / f"tables-{name}.db" for name in ("a", "b", "c")}
    with contextlib.ExitStack() as stack:
        hubs = _two_hubs(stack, tmp_path, hub_url, tables)
        tok = tokens(hubs["a"])
        client = stack.enter_context(HubClient(hubs["a"].address, tok["user"]))
        with running_link(hubs["a"], tok["agent"], agent_id="pc-1"):
            first = wait_final(client, client.submit("profile-ops", "dev1", {}, _params())[0]["id"])
        assert first["state"] == "done" and first["result"]["measured"] == len(SPECS)
        assert first["hub_id"] == "hub-a"
        a_rows = _rows(tables["a"])
        assert len(a_rows["kernels"]) == len(SPECS) and a_rows["checks"]
        assert _rows(tables["b"])["kernels"] == []  # nothing taken in yet

        # the agent moves to hub B: the same job there takes in hub A's rows first and skips them all
        with running_link(hubs["b"], tok["agent"], agent_id="pc-1"):
            again = wait_final(client, client.submit("profile-ops", "dev1", {}, _params())[0]["id"])
        assert again["state"] == "done" and again["hub_id"] == "hub-b"
        assert again["result"]["measured"] == 0 and again["result"]["skipped"] == len(SPECS)
        for hub in hubs.values():
            hub.tables.push()
            hub.tables.pull()
        b_rows = _rows(tables["b"])
        assert b_rows["kernels"] == a_rows["kernels"] and b_rows["history"] == a_rows["history"]
        assert _rows(tables["a"]) == b_rows
        hubs["b"].servicer.tables.fresh_db()  # a read on hub B: its tables as they are everywhere

        # a hub started later catches up with everything, each row once
        with running_hub(tmp_path, db_url=hub_url, hub_id="hub-c", tables_path=tables["c"],
                         share_tables=True) as late:
            late.tables.pull()
            assert _rows(tables["c"]) == b_rows


def test_rows_published_twice_or_changed_on_two_hubs_end_the_same_everywhere(tmp_path, hub_url):
    hub_db = HubStore(hub_url, hub_id="h").open()
    replicas = [SharedTables(hub_db, tmp_path / f"{name}.db", shared=True).start() for name in ("a", "b")]
    try:
        a, b = replicas
        cfg = RuntimeConfig()
        store.add_sentinel_reference(a.db(), "dev1", cfg, {"k1": 1.0, "k2": 2.0})
        store.add_sentinel_check(a.db(), "dev1", cfg, 1.0, {"k1": 1.0})
        assert a.push() == 3
        # published again (a hub killed before it noted the first publish): still one row each
        with a.db().conn:
            a.db().execute("update _replica_keys set pub_ver = 0, log_id = 0")
        assert a.push() == 3
        b.pull()
        assert b.db().execute("select count(*) from sentinel_reference").fetchone()[0] == 2
        assert b.db().execute("select count(*) from sentinel_checks").fetchone()[0] == 1

        # the same row changed on both hubs: the later publish wins on both
        for replica_, median in ((a, 5.0), (b, 7.0)):
            with replica_.db().conn:
                replica_.db().execute("update sentinel_reference set median_ms = ? where kernel_key = 'k1'", [median])
        a.push()
        b.push()
        a.pull()
        b.pull()
        medians = [r.db().execute("select median_ms from sentinel_reference where kernel_key = 'k1'").fetchone()[0]
                   for r in replicas]
        assert medians == [7.0, 7.0]

        # a check stored by A, changed on B, comes back to A as the same row; a delete travels
        with b.db().conn:
            b.db().execute("update sentinel_checks set note = 'seen on b'")
            b.db().execute("delete from sentinel_reference where kernel_key = 'k2'")
        b.push()
        a.pull()
        assert a.db().execute("select id, note from sentinel_checks").fetchall() == [(1, "seen on b")]
        assert [r[0] for r in a.db().execute("select kernel_key from sentinel_reference")] == ["k1"]
        assert a.push() == 0 and b.pull() == 0  # nothing echoes back
        assert replica.watermark(a.db()) == replica.watermark(b.db()) > 0
        # a hub reads its own entries back without their rows (it skips them), the others' whole
        seen = table_log.after(hub_db, 0, 100, me=a.replica)
        assert {e.origin for e in seen} == {a.replica, b.replica}
        assert all((e.row is None) == (e.origin == a.replica) for e in seen if e.table == "sentinel_checks")
    finally:
        for r in replicas:
            r.stop()
        hub_db.close()


def test_one_hub_on_sqlite_shares_nothing(tmp_path):
    with running_hub(tmp_path) as hub:
        assert not hub.tables.shared
        assert replica.replica_id(hub.tables.db()) is None  # no triggers, no change records


def test_threads_asking_at_once_share_exchanges_that_saw_what_they_wrote():
    import threading

    from edgelat.hub.shared_tables import _Coalesced

    written: list[int] = []
    runs: list[int] = []
    guard = threading.Lock()

    def exchange() -> int:
        seen = len(written)  # what this run publishes: everything written before it began
        runs.append(seen)
        return seen

    shared = _Coalesced(exchange)
    answers: dict[int, tuple[int, int]] = {}

    def job(i: int) -> None:
        with guard:
            written.append(i)
            mine = len(written)
        answers[i] = (mine, shared())

    threads = [threading.Thread(target=job, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen >= mine for mine, seen in answers.values())  # each one's write was in its run
    assert len(runs) <= len(threads)


def test_a_read_through_hub_b_shows_the_rows_a_job_on_hub_a_measured(tmp_path, hub_url, monkeypatch):
    """ReadTables takes in the other hubs' rows before it copies (no background exchange here)."""
    import json

    from hub_helpers import hub_env, invoke

    monkeypatch.setattr(shared_tables, "SYNC_EVERY_S", 3600.0)
    with contextlib.ExitStack() as stack:
        hubs = _two_hubs(stack, tmp_path, hub_url)
        tok = tokens(hubs["a"])
        client = stack.enter_context(HubClient(hubs["a"].address, tok["user"]))
        with running_link(hubs["a"], tok["agent"], agent_id="pc-1"):
            job = wait_final(client, client.submit("profile-ops", "dev1", {}, _params())[0]["id"])
        assert job["state"] == "done" and job["result"]["measured"] == len(SPECS)
        env = {**hub_env(hubs["b"], tok["user"], tmp_path), "EDGELAT_HOME": str(tmp_path / "reader")}
        result = invoke("lut", "show", "--device", "dev1", "--json", env=env)
        assert result.exit_code == 0, result.output
        assert sorted(r["kernel_key"] for r in json.loads(result.stdout)) == sorted(SPECS)


def _everything(db) -> dict[str, list]:
    """Every shared table of one replica (rowids left out: each replica numbers its own)."""
    out = {}
    for name in ("sentinel_reference", "sentinel_checks", "kernel_measurements", "measurement_history"):
        if name not in db.table_names():
            out[name] = []
            continue
        cols = [c for c in db[name].columns_dict if c != "id"]
        out[name] = sorted(tuple(r) for r in db.execute(f"select {', '.join(cols)} from [{name}]").fetchall())
    return out


def test_a_compacted_log_brings_lagging_and_late_hubs_to_the_same_rows(tmp_path, hub_url):
    """Compaction drops superseded entries up to its point; a hub behind the point, one with a change of
    its own not yet published, and one joining afterwards all end with the same rows, each once, and
    nothing they took in comes back to the log."""
    from sqlalchemy import text

    from edgelat.values import BenchmarkResult, LatencySummary

    def kernel(db, key: str, median: float) -> None:
        latency = LatencySummary(median, median, 0.1, median, median, 5, 0.01, True)
        store.add_kernel_result(db, "dev1", key, "conv2d", {"h": 8}, BenchmarkResult("ab" * 32, cfg, latency))

    hub_db = HubStore(hub_url, hub_id="h").open()
    a = SharedTables(hub_db, tmp_path / "a.db", shared=True).start()
    b = SharedTables(hub_db, tmp_path / "b.db", shared=True).start()
    late = SharedTables(hub_db, tmp_path / "late.db", shared=True)
    try:
        cfg = RuntimeConfig()
        store.add_sentinel_reference(a.db(), "dev1", cfg, {"k1": 1.0, "k2": 2.0, "k3": 3.0})
        store.add_sentinel_check(a.db(), "dev1", cfg, 1.0, {"k1": 1.0})
        kernel(a.db(), "conv-a", 1.0)
        a.push()
        b.pull()  # b's watermark: the middle of what will be compacted
        lagging_at = replica.watermark(b.db())
        for median in (4.0, 5.0, 6.0):  # one row changed again and again
            with a.db().conn:
                a.db().execute("update sentinel_reference set median_ms = ? where kernel_key = 'k1'", [median])
            kernel(a.db(), "conv-a", median)  # a kernel measured again (its history grows, its row changes)
            a.push()
        with a.db().conn:
            a.db().execute("update sentinel_checks set note = 'seen twice'")
            a.db().execute("delete from sentinel_reference where kernel_key = 'k2'")
        a.push()
        with b.db().conn:  # b changes a row itself and has not published it yet
            b.db().execute("update sentinel_reference set median_ms = 9.0 where kernel_key = 'k3'")

        before = table_log.entries(hub_db)
        last = hub_db.transaction(lambda c: c.execute(text("select max(id) from hub_table_log")).scalar())
        first = table_log.compact(hub_db, keep=0, step=3, max_steps=1)  # a little at a time, as a hub does
        assert table_log.compaction_point(hub_db) == 3 < last
        assert first + table_log.compact(hub_db, keep=0, step=3) > 0
        assert table_log.compaction_point(hub_db) == last > lagging_at
        kept = hub_db.transaction(lambda c: c.execute(text("select tbl, key from hub_table_log")).all())
        assert len(kept) == len(set(kept)) < before  # one entry per row (the delete included)
        assert table_log.compact(hub_db, keep=0) == 0  # nothing more

        # entries after the point are the tail, left whole
        kernel(a.db(), "conv-a", 7.0)
        a.push()
        tail = table_log.entries(hub_db)
        assert table_log.compact(hub_db, keep=10) == 0 and table_log.entries(hub_db) == tail

        assert b.pull() > 0  # behind the point: the snapshot, then the tail
        b.push()  # its own change goes out and wins everywhere
        late.start()  # a hub joining now
        late.pull()
        a.pull()
        for r in (a, b, late):
            assert r.push() == 0 and r.pull() == 0  # nothing echoes back
        rows = _everything(a.db())
        assert rows == _everything(b.db()) == _everything(late.db())
        assert [r[2:4] for r in rows["sentinel_reference"]] == [("k1", 6.0), ("k3", 9.0)]
        assert len(rows["sentinel_checks"]) == 1 and rows["sentinel_checks"][0][-1] == "seen twice"
        assert len(rows["measurement_history"]) == 5  # every measurement once
        assert len(rows["kernel_measurements"]) == 1 and 7.0 in rows["kernel_measurements"][0]
    finally:
        for r in (a, b, late):
            r.stop()
        hub_db.close()


def test_a_hub_database_made_before_compaction_gets_its_index_when_a_hub_shares(tmp_path, hub_url):
    from sqlalchemy import inspect, text

    hub_db = HubStore(hub_url, hub_id="h").open()
    try:
        hub_db.transaction(lambda c: c.execute(text("DROP INDEX ix_hub_table_log_key")))
        tables = SharedTables(hub_db, tmp_path / "a.db", shared=True).start()
        tables.stop()
        names = hub_db.transaction(lambda c: [i["name"] for i in inspect(c).get_indexes("hub_table_log")])
        assert "ix_hub_table_log_key" in names
    finally:
        hub_db.close()


def test_a_job_queued_through_one_hub_wakes_the_hub_serving_its_device(tmp_path, hub_url, monkeypatch):
    """PostgreSQL: hub B leases a job queued through hub A at once, told by A's notification (its
    dispatcher would otherwise only look again at its next poll, here never)."""
    import pytest

    from edgelat.hub import runner

    if not hub_url.startswith("postgresql"):
        pytest.skip("hubs on one SQLite file tell each other nothing: they poll")
    monkeypatch.setattr(runner, "POLL_S", 3600.0)
    with contextlib.ExitStack() as stack:
        hubs = _two_hubs(stack, tmp_path, hub_url)
        tok = tokens(hubs["a"])
        stack.enter_context(running_link(hubs["b"], tok["agent"], agent_id="pc-1"))
        client = stack.enter_context(HubClient(hubs["a"].address, tok["user"]))
        job = wait_final(client, client.submit("profile-ops", "dev1", {}, _params())[0]["id"], timeout_s=60)
        assert job["state"] == "done" and job["hub_id"] == "hub-b"
