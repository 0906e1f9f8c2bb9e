"""The hub on both queue engines (SQLite and a real PostgreSQL): a job runs end to end, and two
hubs sharing one queue each run only the jobs of the devices connected to them, none twice."""

from __future__ import annotations

import contextlib

from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final

from edgelat.hub.client import HubClient
from edgelat.lut import store
from edgelat.profiler.presets import get_preset

pytest_plugins = ["hub_db"]  # hub_url: SQLite and PostgreSQL

SPECS = [s.key for s in get_preset("smoke")[:3]]


def _params() -> dict:
    return {"specs": SPECS, "protocol": FAST_DICT, "rounds": 0}


def test_profile_ops_end_to_end(tmp_path, hub_url):
    with running_hub(tmp_path, db_url=hub_url) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            job, _ = client.submit("profile-ops", "dev1", {}, _params())
            final = wait_final(client, job["id"])
    assert final["state"] == "done" and final["result"]["measured"] == len(SPECS)
    assert final["hub_id"] == hub.hub_id


def test_two_hubs_one_queue_each_runs_its_own_devices(tmp_path, hub_url):
    with contextlib.ExitStack() as stack:
        hub_a = stack.enter_context(running_hub(tmp_path, db_url=hub_url, hub_id="hub-a"))
        hub_b = stack.enter_context(running_hub(tmp_path, db_url=hub_url, hub_id="hub-b"))
        tok = tokens(hub_a, agent_devices=["dev1", "dev2"])
        stack.enter_context(running_link(hub_a, tok["agent"], device="dev1", agent_id="pc-a"))
        stack.enter_context(running_link(hub_b, tok["agent"], device="dev2", agent_id="pc-b"))
        client = stack.enter_context(HubClient(hub_a.address, tok["user"]))  # every job submitted to hub A
        jobs = [client.submit("profile-ops", device, {"threads": threads}, _params())[0]
                for device in ("dev1", "dev2") for threads in (1, 2)]
        finals = [wait_final(client, j["id"]) for j in jobs]
    assert [f["state"] for f in finals] == ["done"] * 4
    assert [f["hub_id"] for f in finals] == ["hub-a", "hub-a", "hub-b", "hub-b"]
    db = store.open_db()
    try:
        for device in ("dev1", "dev2"):
            history = [h for h in store.history_rows(db, device) if h["item_key"] in SPECS]
            assert len(history) == 2 * len(SPECS)  # both thread counts, each kernel once: no job ran twice
    finally:
        db.close()
