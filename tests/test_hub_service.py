"""The hub end to end: a real hub on loopback (SQLite queue), agents dialling out with the real
``local`` backend (onnxruntime), users submitting profile-ops jobs whose rows land in the hub's table."""

from __future__ import annotations

import time

import pytest
from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final, wait_for

from edgelat.errors import AuthFailed, BadInput
from edgelat.hub.client import HubClient
from edgelat.lut import store
from edgelat.profiler.presets import get_preset

SPECS = [s.key for s in get_preset("smoke")[:4]]


def _params(specs: list[str], slow: bool = False) -> dict:
    """A profile-ops job; ``slow``: each kernel measured long enough that a job stopped once its
    first rows are in is stopped mid-job (the hub finishes tiny kernels faster than a test polls)."""
    protocol = {**FAST_DICT, "min_runs": 300, "max_runs": 600, "max_seconds": 1.0} if slow else FAST_DICT
    return {"specs": specs, "protocol": protocol, "rounds": 0}


def _rows(device: str = "dev1") -> tuple[int, int]:
    """(kernel rows, kernel measurements in the history) in the hub's table for ``device``."""
    db = store.open_db()
    try:
        rows = store.kernel_rows(db, device)
        history = [h for h in store.history_rows(db, device) if h["item_key"] in set(SPECS + BIG)]
        return len(rows), len(history)
    finally:
        db.close()


BIG = [s.key for s in get_preset("smoke")]


def test_profile_ops_job_runs_on_an_agent_that_dialled_out(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            devices = client.devices()
            assert [(d["name"], d["state"]) for d in devices] == [("dev1", "online")]
            assert devices[0]["facts"].get("arch")
            job, note = client.submit("profile-ops", "dev1", {"runtime": "onnxruntime", "threads": 1},
                                      _params(SPECS))
            assert note == "" and job["state"] in ("queued", "running") and job["user"] == "alice"
            final = wait_final(client, job["id"])
            assert final["state"] == "done", final
            assert final["result"]["measured"] == len(SPECS) and final["result"]["failed"] == []
            assert (final["done"], final["total"]) == (len(SPECS), len(SPECS))
            assert _rows() == (len(SPECS), len(SPECS))
            # The same job again skips every stored kernel: nothing is measured twice.
            again, _ = client.submit("profile-ops", "dev1", {}, _params(SPECS))
            final = wait_final(client, again["id"])
            assert final["state"] == "done" and final["result"]["skipped"] == len(SPECS)
            assert _rows() == (len(SPECS), len(SPECS))


def test_short_jobs_on_one_device_share_the_sentinel_checks_of_one_run(tmp_path):
    """Back-to-back one-kernel jobs on a device: the first opens with a check, the next ones open
    with it and leave their closing check to a later job (none is due), as the chunks of one run
    would; every row keeps the level of the check before it."""
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            finals = []
            for key in SPECS[:3]:
                job, _ = client.submit("profile-ops", "dev1", {"runtime": "onnxruntime", "threads": 1},
                                       _params([key]))
                finals.append(wait_final(client, job["id"]))
    assert [f["state"] for f in finals] == ["done"] * 3, finals
    assert [len(f["result"]["sentinel"]["checks"]) for f in finals] == [1, 1, 1]
    db = store.open_db()
    try:
        checks = db.execute("select level from sentinel_checks where device = 'dev1'").fetchall()
        levels = {r["kernel_key"]: r["sentinel_level"] for r in store.kernel_rows(db, "dev1")}
    finally:
        db.close()
    assert len(checks) == 1  # one check for the three jobs (each used to close with its own)
    assert set(levels) == set(SPECS[:3]) and set(levels.values()) == {checks[0][0]}


def test_a_job_whose_agent_vanished_resumes_on_the_next_agent(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with HubClient(hub.address, tok["user"]) as client:
            with running_link(hub, tok["agent"], agent_id="first") as first:
                job, _ = client.submit("profile-ops", "dev1", {}, _params(BIG, slow=True))
                wait_for(lambda: client.get(job["id"])["done"] >= 2, 120, "two rows")
                first.stop()  # the agent's link dies mid-job
                requeued = wait_for(lambda: (j := client.get(job["id"]))["state"] == "queued" and j, 60, "requeue")
                assert requeued["done"] < len(BIG)
            wait_for(lambda: hub.store.devices()[0]["state"] == "offline", 30, "the device offline")
            kept = _rows()[0]
            assert 2 <= kept < len(BIG)
            with running_link(hub, tok["agent"], agent_id="second"):
                final = wait_final(client, job["id"])
            assert final["state"] == "done", final
            assert final["result"]["skipped"] == kept  # resumed where it stopped
            rows, history = _rows()
            assert rows == len(BIG) and history == len(BIG)  # no kernel measured twice


def test_cancel_stops_a_running_job_and_retry_queues_it_again(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            job, _ = client.submit("profile-ops", "dev1", {}, _params(BIG, slow=True))
            wait_for(lambda: client.get(job["id"])["done"] >= 1, 120, "a row")
            assert client.cancel(job["id"])["state"] == "cancelled"
            wait_for(lambda: "dev1" in [d["name"] for d in hub.store.devices() if d["state"] == "online"], 60,
                     "the device free again")
            stopped = _rows()[0]
            assert stopped < len(BIG)
            assert client.retry(job["id"])["state"] == "queued"
            final = wait_final(client, job["id"])
            assert final["state"] == "done" and _rows() == (len(BIG), len(BIG))


def test_a_job_for_an_offline_device_is_queued_and_says_so(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with HubClient(hub.address, tok["user"]) as client:
            job, note = client.submit("profile-ops", "rpi5", {}, _params(SPECS))
            assert job["state"] == "queued" and "rpi5" in note and "queued" in note
            assert client.list_jobs(state="queued")[0]["id"] == job["id"]
            assert client.cancel(job["id"])["state"] == "cancelled"


def test_refusals_are_one_line_each(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        limited = hub.store.create_token("bob", "user", devices=["rpi5"])
        with HubClient(hub.address, "elh_not-a-token") as stranger:
            with pytest.raises(AuthFailed, match="token"):
                stranger.list_jobs()
        expiring = hub.store.create_token("old", "user", expires_s=0.05)
        time.sleep(0.2)
        with HubClient(hub.address, expiring) as old:
            with pytest.raises(AuthFailed, match="expired"):
                old.list_jobs()
        with HubClient(hub.address, limited) as bob:
            with pytest.raises(AuthFailed, match="dev1"):
                bob.submit("profile-ops", "dev1", {}, _params(SPECS))
            with pytest.raises(AuthFailed, match="admin"):
                bob.create_token("eve", "admin")
        with HubClient(hub.address, tok["agent"]) as agent:
            with pytest.raises(AuthFailed):
                agent.submit("profile-ops", "dev1", {}, _params(SPECS))
        with HubClient(hub.address, tok["user"]) as alice:
            for kind, params, match in (
                ("profile-everything", _params(SPECS), "unknown kind"),
                ("profile-ops", {"preset": "nope"}, "nope"),
                ("profile-ops", {"space": "/etc/passwd.yaml"}, "built-in space"),
                ("profile-ops", {"specs": ["conv2d|garbage"]}, "kernel 0"),
                ("profile-ops", {"preset": "smoke", "protocol": {"min_runs": -1}}, "min_runs"),
                ("profile-model", {"model_b64": "AAAA", "format": "onnx", "sha256": "ab" * 32}, "sha256"),
                ("profile-model", {"model_b64": "%%%", "format": "onnx"}, "base64"),
            ):
                with pytest.raises(BadInput, match=match):
                    alice.submit(kind, "dev1", {}, params)
            with pytest.raises(BadInput, match="runtime"):
                alice.submit("profile-ops", "dev1", {"runtime": "rm -rf /"}, _params(SPECS))
            assert alice.list_jobs() == []  # nothing malformed was stored
        with HubClient(hub.address, tok["admin"]) as admin:
            secret = admin.create_token("carol", "user")
            assert hub.store.authenticate(secret).user == "carol"
        # An agent claiming a device its token does not name is refused for good.
        with running_link(hub, tok["agent"], device="pixel7", wait=False) as link:
            link.thread.join(30)
            assert isinstance(link.error, AuthFailed) and "pixel7" in str(link.error)
        assert "pixel7" not in [d["name"] for d in hub.store.devices()]


def test_a_device_that_loses_three_leases_in_a_row_is_quarantined(tmp_path):
    from edgelat.hub.queue import QUARANTINE_AFTER

    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]) as agent, HubClient(hub.address, tok["user"]) as client:
            job, _ = client.submit("profile-ops", "dev1", {}, _params(BIG))
            for cut in range(QUARANTINE_AFTER):
                wait_for(lambda: client.get(job["id"])["state"] == "running", 60, f"a lease before cut {cut + 1}")
                agent.link.cut()  # the stream breaks mid-job; the link dials again by itself
                wait_for(lambda: client.get(job["id"])["state"] != "running", 60, "the lease released")
            device = wait_for(lambda: [d for d in client.devices() if d["state"] == "quarantined"], 60,
                              "quarantine")[0]
            assert device["name"] == "dev1" and device["fail_streak"] >= QUARANTINE_AFTER
            assert client.get(job["id"])["state"] == "queued"  # kept, waiting for an admin
            from click.testing import CliRunner

            from edgelat.cli import main

            url = f"sqlite:///{tmp_path / 'hub.db'}"
            result = CliRunner().invoke(main, ["hub", "unquarantine", "dev1", "--db", url])
            assert result.exit_code == 0 and "dev1" in result.stdout
            result = CliRunner().invoke(main, ["hub", "unquarantine", "nope", "--db", url])
            assert result.exit_code == 1 and result.stderr.startswith("error: ") and "nope" in result.stderr
            final = wait_final(client, job["id"])
        assert final["state"] == "done" and _rows() == (len(BIG), len(BIG))


def test_agent_heartbeats_mark_its_devices_seen(tmp_path, monkeypatch):
    from edgelat.hub import service

    monkeypatch.setattr(service, "DEVICE_REFRESH_S", 0.0)  # every heartbeat reaches the queue
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]):
            first = hub.store.devices()[0]["last_seen"]
            seen = wait_for(lambda: (d := hub.store.devices()[0])["last_seen"] > first and d, 20, "a heartbeat")
            assert seen["state"] == "online" and seen["hub_id"] == hub.hub_id


def test_a_job_silent_for_longer_than_its_lease_keeps_it(tmp_path):
    """No row arrives for several lease lifetimes (each measurement takes long): the hub's keeper
    renews the lease, so the job is never requeued and finishes on its first lease."""
    from edgelat.agents.hub_link import HubLink
    from edgelat.agents.local import LocalBackend
    from hub_helpers import RunningLink

    class SlowBackend(LocalBackend):
        def benchmark(self, *args, **kwargs):
            time.sleep(1.5)
            return super().benchmark(*args, **kwargs)

    with running_hub(tmp_path, lease_ttl_s=1.0, expire_every_s=0.2) as hub:
        tok = tokens(hub)
        link = RunningLink(HubLink(hub.address, tok["agent"], {"dev1": SlowBackend()}, agent_id="slow",
                                   heartbeat_s=0.5))
        link.thread.start()
        try:
            assert link.link.connected.wait(20)
            with HubClient(hub.address, tok["user"]) as client:
                job, _ = client.submit("profile-ops", "dev1", {}, _params(SPECS[:1]))
                final = wait_final(client, job["id"])
            assert final["state"] == "done", final
            assert final["attempts"] == 0 and final["error"] is None  # never expired, never requeued
        finally:
            link.stop()
