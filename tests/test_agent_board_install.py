"""A board installs only the agent (``pip install 'edgelat[onnxruntime]'``): the agent must serve and
benchmark with the host-side stack absent. Here the host-side packages are made unimportable in the
agent process, and a real client profiles a model through it."""

from __future__ import annotations

import subprocess
import sys

from agent_helpers import FAST_ARGS, onnx_conv_model, wait_serving

from edgelat.agents.remote import GrpcClient
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig

HOST_ONLY = ["pandas", "sqlite_utils", "sklearn", "scipy", "matplotlib", "onnx", "rich", "pymoo", "adb_shell",
             "yaml", "pyarrow"]

PRELUDE = f"""
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HOST_ONLY!r}:
            raise ImportError('not installed on this board: ' + name)
        return None
sys.meta_path.insert(0, _Absent())
from edgelat.cli import main
main()
"""


def test_agent_serves_and_benchmarks_without_the_host_stack(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE, "agent", "serve", "--listen", "127.0.0.1:0",
         "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("edgelat agent listening on "), line + proc.stdout.read()
        address = "127.0.0.1:" + line.split()[4].rpartition(":")[2]
        wait_serving(address)
        with GrpcClient(address) as client:
            facts = client.describe()
            assert "onnxruntime" in facts["runtimes"]
            sha = client.put_model(onnx_conv_model())
            result = client.benchmark(BenchmarkItem(sha, "onnx", "conv"), RuntimeConfig(),
                                      MeasurementProtocol(**FAST_ARGS))
        assert result.ok, result.error
        assert result.latency.n >= 3 and result.latency.median > 0
    finally:
        proc.terminate()
        proc.wait(15)
