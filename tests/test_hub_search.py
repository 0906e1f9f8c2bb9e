"""Search validation with a client the caller already holds (what the hub passes: its tunnel to an
agent that dialled in), for a device the local registry has never heard of."""

from __future__ import annotations

import numpy as np

from edgelat.agents.client import LocalClient
from edgelat.agents.local import LocalBackend
from edgelat.lut import store
from edgelat.profiler.spaces import get_space
from edgelat.search.result import Candidate
from edgelat.search.validate import measure_candidates
from edgelat.values import MeasurementProtocol, RuntimeConfig


def test_measure_candidates_uses_the_client_it_is_given(tmp_path) -> None:
    space = get_space("nasbench201")
    genotypes = space.sample(np.random.default_rng(0), 2)
    candidates = [Candidate(arch=space.to_string(g), genotype=g, predicted_latency_ms=1.0, score=0.0, flops=0.0,
                            params=0.0, memory_bytes=0.0) for g in genotypes]
    config = RuntimeConfig(runtime="onnxruntime", threads=1)
    protocol = MeasurementProtocol(warmup=1, min_runs=3, max_runs=10, max_seconds=0.2)
    db = store.open_db(tmp_path / "hub-tables.db")
    client = LocalClient(LocalBackend())
    try:
        seen = []
        measure_candidates(db, "tunnelled-board", space, candidates, config, protocol, max_latency_ms=5.0,
                           client=client, progress=lambda i, n, c: seen.append((i, n)))
        assert seen == [(1, 2), (2, 2)]
        assert all(c.measured_latency_ms and c.measured_latency_ms > 0 for c in candidates)
        rows = store.model_rows(db, "tunnelled-board", config)
        assert sorted(r["model_ref"] for r in rows) == sorted(f"nasbench201:{c.arch}" for c in candidates)
    finally:
        client.close()
        db.close()


def test_search_with_validate_runs_on_the_hub(tmp_path) -> None:
    """`edgelat search --validate` through a real hub: the search prices latency with the hub's table
    of the device (profiled there first), the winner is measured on the agent that dialled in."""
    import json

    from click.testing import CliRunner
    from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final

    from edgelat.cli import main
    from edgelat.hub.client import HubClient

    def invoke(*args: object, env: dict[str, str]):
        return CliRunner().invoke(main, [str(a) for a in args], env=env)

    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        path = tmp_path / "alice.tok"
        path.write_text(tok["user"])
        path.chmod(0o600)
        env = {"EDGELAT_HUB": hub.address, "EDGELAT_TOKEN_FILE": str(path)}
        search = ("search", "--space", "nasbench201", "--device", "dev1", "--max-latency", "50", "--population", "8",
                  "--generations", "3", "--top", "2")
        with running_link(hub, tok["agent"]), HubClient(hub.address, tok["user"]) as client:
            result = invoke(*search, "--json", env=env)  # no table for dev1 on the hub yet: one line
            assert result.exit_code != 0 and "no latency table or predictor for nasbench201" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            job, _ = client.submit("profile-ops", "dev1", {}, {"space": "nasbench201", "protocol": FAST_DICT,
                                                                "rounds": 0})
            assert wait_final(client, job["id"], 300)["state"] == "done"

            result = invoke(*search, "--validate", "1", "--validate-seconds", "0.2", "--json", env=env)
            assert result.exit_code == 0, result.output
            report = json.loads(result.stdout)
            assert report["device"] == "dev1" and report["latency_source"]["kind"]
            winner = report["results"][0]
            assert winner["measured_latency_ms"] > 0  # measured on the agent, through the tunnel
            db = store.open_db()  # the hub's tables (its $EDGELAT_HOME): the measurement is stored there
            try:
                refs = [r["model_ref"] for r in store.model_rows(db, "dev1")]
            finally:
                db.close()
            assert f"nasbench201:{winner['arch']}" in refs

            result = invoke(*search, "--detach", env=env)
            assert result.exit_code == 0, result.output
            assert wait_final(client, result.stdout.strip(), 120)["state"] == "done"
            result = invoke(*search, "--accuracy", tmp_path / "acc.csv", env=env)
            assert result.exit_code != 0 and "not supported through a hub" in result.stderr
