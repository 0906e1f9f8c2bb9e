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
