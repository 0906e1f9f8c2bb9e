"""A model the agent's cache evicted after the hub's stream sent it: the hub sends it again and the
item runs within the same job (a real hub on loopback, a real agent with a small cache cap)."""

from __future__ import annotations

from hub_helpers import FAST_DICT, RunningLink, running_hub, tokens, wait_final

from edgelat.agents.cache import sha256_bytes
from edgelat.agents.hub_link import HubLink
from edgelat.agents.local import LocalBackend
from edgelat.hub.client import HubClient
from edgelat.lut import store
from edgelat.profiler import runner
from edgelat.profiler.presets import get_preset
from edgelat.profiler.sentinel import sentinel_models


def _kernel(prefix: str):
    return next(i for i in runner.kernel_items(get_preset("smoke"), "onnx") if i.key.startswith(prefix))


def _job(client: HubClient, key: str, threads: int) -> dict:
    job, _ = client.submit("profile-ops", "dev1", {"runtime": "onnxruntime", "threads": threads},
                           {"specs": [key], "protocol": FAST_DICT, "rounds": 0})
    return wait_final(client, job["id"])


def test_a_model_evicted_by_the_agent_is_sent_again_within_the_job(tmp_path):
    big = _kernel("mbconv:h16,w16,cin16,cout24")  # the model the agent will evict
    other = _kernel("fc:")  # the model that pushes it out
    big_data, other_data = big.model(), other.model()
    assert len(other_data) > 1000
    # room for the sentinel's models and the big kernel's, not for the other one's as well
    cap = sum(len(d) for d in sentinel_models("onnx")) + len(big_data) + 1000
    cache = tmp_path / "agent-cache"
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        link = RunningLink(HubLink(hub.address, tok["agent"], {"dev1": LocalBackend()}, agent_id="small-cache",
                                   cache_dir=cache, cache_max_bytes=cap, heartbeat_s=0.5, backoff_max_s=1.0))
        link.thread.start()
        try:
            assert link.link.connected.wait(20), link.error
            with HubClient(hub.address, tok["user"]) as client:
                first = _job(client, big.key, 1)
                assert first["state"] == "done" and first["result"]["measured"] == 1, first
                # another runtime config: its job opens with a sentinel check of its own, which uses the
                # sentinel's models again, so the big one is the least recently used when the other comes
                second = _job(client, other.key, 2)
                assert second["state"] == "done" and second["result"]["measured"] == 1, second
                # the agent let the big model go; the hub's stream still counts it as sent
                assert not (cache / "dev1" / sha256_bytes(big_data)).exists()
                assert link.link.sessions == 1
                # the same model under the second job's config: not in that table, so measured
                third = _job(client, big.key, 2)
        finally:
            link.stop()
    assert third["state"] == "done", third
    assert third["result"]["failed"] == [] and third["result"]["measured"] == 1, third["result"]
    assert third["attempts"] == 0 and third["error"] is None  # on its first lease, no retry
    assert link.link.sessions == 1
    db = store.open_db()
    try:
        from edgelat.values import RuntimeConfig

        rows = store.kernel_rows(db, "dev1", RuntimeConfig(runtime="onnxruntime", threads=2))
        assert sorted(r["kernel_key"] for r in rows) == sorted([big.key, other.key])
    finally:
        db.close()
