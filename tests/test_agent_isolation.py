"""A model's weights come only from its own bytes on the agent: an uploaded ONNX file that points
its external data at another file in the agent's cache (another user's model, by its hash) is
refused with one line, and the agent keeps serving."""

from __future__ import annotations

import onnx
from agent_helpers import running_agent
from onnx import helper, numpy_helper
import numpy as np

from edgelat.agents.cache import sha256_bytes
from edgelat.agents.remote import GrpcClient
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig

FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=10, max_seconds=0.2)


def _model_reading(weights_file: str, n: int) -> bytes:
    """y = x * w, with w (n floats) stored as external data in ``weights_file`` next to the model."""
    w = numpy_helper.from_array(np.ones(n, dtype=np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", weights_file), ("offset", "0"), ("length", str(4 * n))):
        w.external_data.add(key=k, value=v)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_external_data_pointing_into_the_cache_is_refused(tmp_path):
    with running_agent(tmp_path) as agent, GrpcClient(agent.address, timeout_s=30) as client:
        secret = np.arange(64, dtype=np.float32).tobytes()  # someone else's upload
        secret_sha = client.put_model(secret)
        assert (agent.cache_dir / secret_sha).read_bytes() == secret
        sneaky = _model_reading(secret_sha, 16)
        sha = client.put_model(sneaky)
        assert sha == sha256_bytes(sneaky)
        result = client.benchmark(BenchmarkItem(sha, "onnx", "sneaky"), RuntimeConfig(), FAST)
        assert not result.ok and result.latency is None
        assert "refers to external data files, which a device never reads" in result.error
        assert "\n" not in result.error
        # the agent is fine and runs a self-contained model next
        ok = client.benchmark(BenchmarkItem(client.put_model(_self_contained()), "onnx", "ok"), RuntimeConfig(), FAST)
        assert ok.ok and ok.latency.median > 0


def _self_contained() -> bytes:
    w = numpy_helper.from_array(np.ones(16, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [16])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
