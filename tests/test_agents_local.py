"""The local backend end to end: real onnxruntime/LiteRT runs, fake sysfs for sensors."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from edgelat import __version__
from edgelat.agents.client import LocalClient
from edgelat.agents.energy.base import EnergyMeter
from edgelat.agents.local import LocalBackend
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, RuntimeUnavailable
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.tflite_builder import build_tflite
from sysfs_helpers import make_cpus, make_loadavg, make_rapl, make_thermal, set_rapl

FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.5)


def gemm_model(path: Path, rows: int = 64, cols: int = 64) -> Path:
    """y = x @ W with a ``rows x cols`` float weight (rows*cols*4 bytes)."""
    w = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [helper.make_tensor("w", TensorProto.FLOAT, [rows, cols], w.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def fake_machine(root: Path) -> Path:
    make_cpus(root, [1800000, 1800000], governor="performance")
    make_thermal(root, [("cpu-thermal", 51234)])
    make_loadavg(root)
    return root


def test_onnxruntime_benchmark_reports_everything(tmp_path):
    model = gemm_model(tmp_path / "gemm.onnx")
    backend = LocalBackend(root=str(fake_machine(tmp_path / "root")))
    r = backend.benchmark(model, "onnx", RuntimeConfig(threads=1), FAST)
    assert r.ok
    assert r.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert r.config.version == onnxruntime.__version__ and r.config.runtime == "onnxruntime"
    lat = r.latency
    assert 3 <= lat.n <= 20
    assert 0 < lat.p10 <= lat.median <= lat.p90 < 1000
    assert lat.stable == (lat.rel_ci <= FAST.target_rel_ci)
    assert r.extra["stopped_by"] in ("target", "max_runs", "max_seconds")
    assert r.extra["stopped_by"] != "target" or lat.stable
    assert r.extra["warmup_runs"] == 1 and r.extra["provider_used"] == "cpu"
    assert r.session_ms > 0 and r.first_run_ms > 0
    for when in ("before", "after"):
        env = r.environment[when]
        assert env["cpus"]["cpu1"] == {"cur_khz": 1800000, "governor": "performance", "online": True}
        assert env["thermal"]["thermal_zone0"]["temp_c"] == pytest.approx(51.234)
        assert env["loadavg"] == [0.52, 0.58, 0.59]
    assert r.environment["before"]["timestamp"] <= r.environment["after"]["timestamp"]
    assert r.environment["runtimes"]["onnxruntime"] == onnxruntime.__version__
    assert r.agent_version == __version__
    # no sensor in this tree: no number, and the reason
    assert r.energy_mj is None and "no energy sensor" in r.energy_note
    assert isinstance(r.peak_memory_bytes, int) and r.peak_memory_bytes >= 0


def test_peak_memory_sees_the_weights(tmp_path):
    model = gemm_model(tmp_path / "big.onnx", rows=2048, cols=2048)  # 16 MiB of weights
    backend = LocalBackend(root=str(tmp_path))
    for _ in range(2):  # the second time too: memory freed by the first is not silently reused
        r = backend.benchmark(model, "onnx", RuntimeConfig(), FAST)
        assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 16 << 20
        assert "VmHWM" in r.extra["peak_memory_method"]


def test_litert_benchmark(tmp_path):
    import ai_edge_litert

    model = tmp_path / "conv.tflite"
    model.write_bytes(build_tflite(KernelSpec("dwconv2d", 16, 16, 16, kernel=3, act="relu6")))
    r = LocalBackend(root=str(tmp_path)).benchmark(model, "tflite", RuntimeConfig(runtime="litert"), FAST)
    assert r.config.runtime == "litert" and r.config.version == ai_edge_litert.__version__
    assert r.latency.n >= 3 and r.latency.median > 0
    assert r.session_ms > 0 and r.first_run_ms > 0


class FixedMeter(EnergyMeter):
    """A meter whose sensor reports exactly 0.6 J per interval (the arithmetic under test)."""

    name = "fixed"
    scope = "test"

    def __init__(self):
        super().__init__()
        self.starts = 0

    def available(self):
        return True

    def _begin(self):
        self.starts += 1

    def _end(self):
        return 0.6


def test_energy_is_per_measured_run(tmp_path):
    backend = LocalBackend(root=str(tmp_path))
    meter = FixedMeter()
    backend._meters["cpu"] = meter
    r = backend.benchmark(gemm_model(tmp_path / "m.onnx"), "onnx", RuntimeConfig(), FAST)
    assert meter.starts == 1
    assert r.energy_mj == pytest.approx(600.0 / r.latency.n)
    assert r.energy_note == "" and r.extra["energy_meter"] == "fixed"
    assert r.extra["energy_interval_s"] > 0


def test_rapl_energy_end_to_end(tmp_path):
    """A RAPL tree whose counter a thread runs at 10 W: energy flows through in the right units.

    The thread competes for the GIL, so the counter lags real time; the bounds
    are what it can have produced: at least one write (>= 1 ms = 10 mJ apart)
    and at most 10 W over the interval plus scheduling slack.
    """
    root = tmp_path / "root"
    make_rapl(root, [1_000_000])
    done = threading.Event()
    t_start = time.perf_counter()

    def counter():
        while not done.wait(0.001):
            set_rapl(root, 0, 1_000_000 + int((time.perf_counter() - t_start) * 10e6))

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        protocol = MeasurementProtocol(warmup=1, min_runs=50, max_runs=50, target_rel_ci=0.0, max_seconds=5)
        slow = gemm_model(tmp_path / "slow.onnx", rows=512, cols=512)
        r = LocalBackend(root=str(root)).benchmark(slow, "onnx", RuntimeConfig(), protocol)
    finally:
        done.set()
        thread.join()
    assert r.extra["energy_meter"] == "rapl" and r.extra["energy_scope"] == "cpu packages"
    interval = r.extra["energy_interval_s"]
    if interval < 0.01:  # a very fast machine: the loop was shorter than RAPL's resolution
        assert r.energy_mj is None and "too short" in r.energy_note
        return
    if r.energy_mj is None:  # the counter thread never got the GIL inside the loop
        assert "did not advance" in r.energy_note
        return
    loop_joules = r.energy_mj * r.latency.n / 1000.0
    assert 0.010 <= loop_joules <= 10.0 * (interval + 0.05)


def test_too_short_loop_gives_no_energy(tmp_path):
    make_rapl(tmp_path, [1_000_000])
    protocol = MeasurementProtocol(warmup=0, min_runs=1, max_runs=2, max_seconds=1)
    r = LocalBackend(root=str(tmp_path)).benchmark(gemm_model(tmp_path / "m.onnx"), "onnx", RuntimeConfig(), protocol)
    assert r.energy_mj is None
    assert "too short" in r.energy_note


def test_input_errors(tmp_path):
    backend = LocalBackend(root=str(tmp_path))
    model = gemm_model(tmp_path / "m.onnx")
    with pytest.raises(BadInput, match="runs tflite models"):
        backend.benchmark(model, "onnx", RuntimeConfig(runtime="litert"), FAST)
    with pytest.raises(BadInput, match="runs onnx models"):
        backend.benchmark(model, "tflite", RuntimeConfig(runtime="onnxruntime"), FAST)
    with pytest.raises(BadInput, match="unknown model format"):
        backend.benchmark(model, "pb", RuntimeConfig(), FAST)
    with pytest.raises(BadInput, match="not found"):
        backend.benchmark(tmp_path / "nope.onnx", "onnx", RuntimeConfig(), FAST)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    with pytest.raises(CorruptModel, match="corrupt.onnx"):
        backend.benchmark(corrupt, "onnx", RuntimeConfig(), FAST)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(RuntimeUnavailable, match="'cuda'"):
            backend.benchmark(model, "onnx", RuntimeConfig(provider="cuda"), FAST)
    with pytest.raises(RuntimeUnavailable, match="'gpu'|GPU delegate"):
        tfl = tmp_path / "m.tflite"
        tfl.write_bytes(build_tflite(KernelSpec("add", 4, 4, 4)))
        backend.benchmark(tfl, "tflite", RuntimeConfig(runtime="litert", provider="gpu"), FAST)
    with pytest.raises(RuntimeUnavailable, match="ADB bridge"):
        backend.benchmark(tmp_path / "m.tflite", "tflite", RuntimeConfig(runtime="tflite-benchmark"), FAST)


def test_model_that_loads_but_cannot_run(tmp_path):
    """Reshape to an impossible shape: the session builds, the first run fails -> CorruptModel."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(CorruptModel, match="cannot run it"):
        LocalBackend(root=str(tmp_path)).benchmark(tmp_path / "bad.onnx", "onnx", RuntimeConfig(), FAST)


def test_batch_through_local_client_goes_on_after_a_bad_model(tmp_path):
    with LocalClient(LocalBackend(root=str(tmp_path)), cache_dir=tmp_path / "cache") as client:
        good = client.put_model(gemm_model(tmp_path / "m.onnx").read_bytes())
        bad = client.put_model(b"not an onnx model at all")
        items = [BenchmarkItem(good, "onnx", tag="a"), BenchmarkItem(bad, "onnx", tag="b"),
                 BenchmarkItem(good, "onnx", tag="c")]
        results = list(client.benchmark_batch(items, RuntimeConfig(), FAST))
    assert [r.tag for r in results] == ["a", "b", "c"]
    assert results[0].ok and results[2].ok and results[0].model_sha256 == good
    assert not results[1].ok and "onnxruntime cannot load" in results[1].error


def test_describe_is_host_facts(tmp_path):
    facts = LocalBackend(root=str(fake_machine(tmp_path))).describe()
    assert facts["cores"] == 2 and facts["runtimes"]["onnxruntime"] == onnxruntime.__version__
    assert facts["kind"] in ("host", "gpu-host")


def test_bad_protocol_is_bad_input(tmp_path):
    model = gemm_model(tmp_path / "m.onnx")
    for bad in (MeasurementProtocol(min_runs=0), MeasurementProtocol(min_runs=10, max_runs=5),
                MeasurementProtocol(max_seconds=0), MeasurementProtocol(warmup=-1)):
        with pytest.raises(BadInput, match="bad measurement protocol"):
            LocalBackend(root=str(tmp_path)).benchmark(model, "onnx", RuntimeConfig(), bad)


def test_failure_inside_the_timing_loop_stops_the_meter(tmp_path, monkeypatch):
    """A model whose 4th run fails: CorruptModel, and the Jetson sampling thread is not left running."""
    from edgelat.agents.runtimes.onnxruntime_rt import OrtSession
    from sysfs_helpers import make_ina3221_iio

    make_ina3221_iio(tmp_path, {"VDD_IN": 4000})
    real_run = OrtSession.run
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        real_run(self)

    monkeypatch.setattr(OrtSession, "run", flaky)
    with pytest.raises(CorruptModel, match="failed while timing m.onnx .*illegal memory access"):
        LocalBackend(root=str(tmp_path)).benchmark(gemm_model(tmp_path / "m.onnx"), "onnx", RuntimeConfig(), FAST)
    assert not any(t.name == "edgelat-jetson-power" for t in threading.enumerate())
