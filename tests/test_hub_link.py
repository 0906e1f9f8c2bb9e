"""The tunnel itself: the hub's DeviceClient over an agent's outbound stream behaves as the
gRPC client does (chunked uploads, per-item errors, AgentUnreachable when the stream dies), and
a hub restarted on the same database finishes the job its predecessor held."""

from __future__ import annotations

import pytest
from agent_helpers import free_port
from hub_helpers import FAST, FAST_DICT, running_hub, running_link, tokens, wait_final, wait_for

from edgelat.agents.cache import sha256_bytes
from edgelat.agents.server import CHUNK_BYTES
from edgelat.values import BenchmarkItem, RuntimeConfig
from edgelat.devices.registry import Registry
from edgelat.errors import AgentUnreachable
from edgelat.hub.client import HubClient
from edgelat.lut import store
from edgelat.profiler.builders import build_model
from edgelat.profiler.presets import get_preset
from edgelat.profiler.sentinel import SENTINEL_SPECS


def test_tunnel_uploads_in_chunks_and_reports_per_item_errors(tmp_path):
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]) as agent:
            client = hub.fleet.client("dev1")
            facts = client.describe()
            assert facts["arch"]
            servicer = agent.link.servicers["dev1"]
            # the sentinel's models, for each format the device's runtimes read, were put before the welcome
            formats = {RuntimeConfig(runtime=r).model_format for r in facts["runtimes"]}
            readied = servicer.models_received
            assert formats and readied == len(SENTINEL_SPECS) * len(formats)
            # and the device is in the registry of the hub's tables, reached through the hub
            try:
                assert Registry(hub.tables.db()).get("dev1").transport == {"type": "hub"}
            finally:
                hub.tables.close_thread_db()
            junk = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # three chunks, not a model
            sha = client.put_model(junk)
            assert sha == sha256_bytes(junk) and client.has_model(sha)
            assert servicer.models_received == readied + 1
            assert client.put_model(junk) == sha and servicer.models_received == readied + 1  # sent once
            good = client.put_model(build_model(get_preset("smoke")[0], "onnx"))
            results = list(client.benchmark_batch([BenchmarkItem(sha, "onnx", "junk"), BenchmarkItem(good, "onnx", "ok")],
                                                  RuntimeConfig(), FAST))
            assert [r.tag for r in results] == ["junk", "ok"]
            assert results[0].error.startswith("CorruptModel") and results[1].ok
            # A request for a device the agent does not serve is refused by the agent, one line.
            other = hub.fleet.client("dev1")
            other.device = "dev2"
            with pytest.raises(Exception, match="dev2"):
                other.describe()
            # The stream dies mid-batch: the caller gets AgentUnreachable, as from a vanished gRPC agent.
            batch = client.benchmark_batch([BenchmarkItem(good, "onnx", f"t{i}") for i in range(50)],
                                           RuntimeConfig(), FAST)
            next(batch)
            agent.link.cut()
            with pytest.raises(AgentUnreachable, match="dev1"):
                list(batch)
            assert client.lost
            # The link dials again by itself.
            wait_for(lambda: agent.link.sessions >= 2 and hub.fleet.connection("dev1") is not None, 30, "reconnect")
            assert hub.fleet.client("dev1").has_model(good)


def test_a_hub_restarted_on_the_same_database_finishes_the_job(tmp_path, monkeypatch):
    """The hub stops mid-job leaving its lease behind (as after a crash) and starts again at the
    same address: the agent dials back in, the lease expires, the job finishes, and the user's
    ``profile ops`` that was following it waits for the hub and prints the end as usual."""
    import json
    import threading

    from click.testing import CliRunner

    from edgelat.cli import main
    from edgelat.hub.server import Hub

    specs = [s.key for s in get_preset("smoke")]
    (tmp_path / "ops.json").write_text(json.dumps(specs))
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    options = dict(listen=f"127.0.0.1:{port}", db_url=db_url, heartbeat_s=0.5, lease_ttl_s=2.0, expire_every_s=0.5)
    first = Hub(**options).start()
    tok = tokens(first)
    (tmp_path / "alice.tok").write_text(tok["user"])
    env = {"EDGELAT_HUB": first.address, "EDGELAT_TOKEN_FILE": str(tmp_path / "alice.tok")}
    outcome: list = []
    follower = threading.Thread(target=lambda: outcome.append(CliRunner().invoke(
        main, ["profile", "ops", "--device", "dev1", "--ops", str(tmp_path / "ops.json"), "--rounds", "0",
               "--warmup", "1", "--min-runs", "3", "--max-runs", "10", "--max-seconds", "0.2", "--json"], env=env)))
    with running_link(first, tok["agent"]) as agent:
        follower.start()
        with HubClient(first.address, tok["user"]) as client:
            job = wait_for(lambda: client.list_jobs(), 60, "the job submitted")[0]
            wait_for(lambda: client.get(job["id"])["done"] >= 2, 120, "two rows")
        first.stop()  # its lease is left behind, as after a crash
        second = Hub(**options).start()
        try:
            wait_for(lambda: agent.link.sessions >= 2, 60, "the agent back on the new hub")
            with HubClient(second.address, tok["user"]) as client:
                final = wait_final(client, job["id"])
            follower.join(120)
        finally:
            second.stop()
    assert final["state"] == "done", final
    result = outcome[0]
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["measured"] + json.loads(result.stdout)["skipped"] == len(specs)
    db = store.open_db()
    try:
        assert len(store.kernel_rows(db, "dev1")) == len(specs)
        assert len([h for h in store.history_rows(db, "dev1") if h["item_key"] in specs]) == len(specs)
    finally:
        db.close()


def test_tls_hub_agent_and_user(tmp_path):
    """The hub serves TLS; the agent's link and the user's client verify it with the CA."""
    import threading

    from agent_helpers import self_signed_tls

    from edgelat.agents.hub_link import HubLink
    from edgelat.agents.local import LocalBackend

    cert, key, ca = self_signed_tls(tmp_path / "tls")
    with running_hub(tmp_path, tls_cert=cert, tls_key=key) as hub:
        tok = tokens(hub)
        link = HubLink(hub.address, tok["agent"], {"dev1": LocalBackend()}, agent_id="tls-agent",
                       tls_ca=ca.read_bytes(), heartbeat_s=0.5)
        stop = threading.Event()
        thread = threading.Thread(target=link.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert link.connected.wait(30)
            with HubClient(hub.address, tok["user"], tls_ca=ca.read_bytes()) as client:
                wait_for(lambda: [d["state"] for d in client.devices()] == ["online"], 30, "the device online")
            with HubClient(hub.address, tok["user"]) as plaintext:  # no TLS against a TLS hub: one line
                with pytest.raises(Exception, match="did not answer"):
                    plaintext.devices()
        finally:
            stop.set()
            thread.join(10)
            link.close()


def test_a_job_leased_while_its_device_is_readied_waits_for_it(tmp_path, monkeypatch):
    """A job for a device that dialled in is leased at once (the device is online), but nothing
    is measured on it before the hub has readied it: no benchmark on a device while its models
    are still arriving."""
    import threading
    import time

    from edgelat.hub.link import TunnelClient
    from edgelat.hub.runner import Runner

    readied: list[float] = []
    benchmarked: list[float] = []
    release = threading.Event()
    prepare_one, batch = Runner._prepare_one, TunnelClient.benchmark_batch

    def slow_prepare(self, conn, device):
        release.wait(20)  # held until the job has been submitted and leased
        prepare_one(self, conn, device)
        readied.append(time.monotonic())

    def timed_batch(self, *args, **kwargs):
        benchmarked.append(time.monotonic())
        return batch(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "_prepare_one", slow_prepare)
    monkeypatch.setattr(TunnelClient, "benchmark_batch", timed_batch)
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"], wait=False) as agent, HubClient(hub.address, tok["user"]) as client:
            wait_for(lambda: hub.fleet.connection("dev1") is not None, 20, "the agent's hello")
            job, note = client.submit("profile-ops", "dev1", {"runtime": "onnxruntime", "threads": 1},
                                      {"specs": [get_preset("smoke")[0].key], "protocol": FAST_DICT, "rounds": 0})
            assert note == ""  # online: the device's state does not wait for its readying
            wait_for(lambda: client.get(job["id"])["state"] == "running", 20, "the lease")
            assert not agent.link.connected.is_set() and not benchmarked  # not welcomed, nothing measured
            release.set()
            final = wait_final(client, job["id"])
    assert final["state"] == "done", final
    assert readied and benchmarked and min(benchmarked) > readied[0]


def test_an_agent_whose_devices_are_readied_slowly_is_not_dropped_as_silent(tmp_path, monkeypatch):
    """Readying takes longer than the hub's heartbeat timeout (slow uploads to a phone): the agent
    heartbeats from its hello on, so the hub keeps its stream and welcomes it once, not again and again."""
    import time

    from edgelat.hub.runner import Runner

    prepare_one = Runner._prepare_one

    def slow_prepare(self, conn, device):
        time.sleep(2.5)  # quiet on the stream for longer than the 1 s heartbeat timeout below
        prepare_one(self, conn, device)

    monkeypatch.setattr(Runner, "_prepare_one", slow_prepare)
    with running_hub(tmp_path, heartbeat_timeout_s=1.0) as hub:
        tok = tokens(hub)
        with running_link(hub, tok["agent"]) as agent:
            assert agent.link.sessions == 1
            time.sleep(1.5)  # and it stays
            assert agent.link.sessions == 1 and hub.fleet.connection("dev1") is not None
