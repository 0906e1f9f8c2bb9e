"""In-process runtimes on real onnxruntime and LiteRT with tiny models built in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgelat.agents.runtimes import available_runtimes, get_runtime, runtime_providers
from edgelat.agents.runtimes import litert_rt, onnxruntime_rt
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, RuntimeUnavailable
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.tflite_builder import build_tflite


def onnx_model(path: Path, channels: int = 8, size: int = 16) -> Path:
    """Conv on a float input with a symbolic batch dim, plus a Gather on an int64 index input."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, size, size])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [channels, channels, 3, 3],
                           rng.standard_normal(channels * channels * 9).astype(np.float32).tolist())
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 5], np.arange(20, dtype=np.float32).tolist())
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, size, size])
    g_out = helper.make_tensor_value_info("g", TensorProto.FLOAT, [3, 5])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"]),
         helper.make_node("Gather", ["table", "idx"], ["g"], axis=0)],
        "tiny", [x, idx], [y, g_out], [w, table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tflite_model(path: Path) -> Path:
    path.write_bytes(build_tflite(KernelSpec("conv2d", 16, 16, 8, 16, kernel=3, act="relu")))
    return path


CPU = RuntimeConfig(runtime="onnxruntime", threads=1, provider="cpu")
LITE = RuntimeConfig(runtime="litert", threads=1, provider="cpu")


def test_registry_names_and_versions():
    import ai_edge_litert
    import onnxruntime

    versions = available_runtimes()
    assert versions["onnxruntime"] == onnxruntime.__version__
    assert versions["litert"] == ai_edge_litert.__version__
    assert "tflite-runtime" not in versions  # not installed here
    assert get_runtime("onnxruntime").name == "onnxruntime"
    assert get_runtime("litert").model_format == "tflite"
    providers = runtime_providers()
    assert "cpu" in providers["onnxruntime"]
    assert "AzureExecutionProvider" not in providers["onnxruntime"]  # not a compute device
    assert providers["litert"] == ["cpu", "xnnpack"]  # no GPU delegate on this machine
    for name in ("tflite-benchmark", "ort-perf-test"):
        with pytest.raises(RuntimeUnavailable, match="ADB bridge"):
            get_runtime(name)
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorflow'"):
        get_runtime("tensorflow")


def test_onnxruntime_session_feeds_random_inputs_and_runs(tmp_path):
    rt = get_runtime("onnxruntime")
    with rt.load(onnx_model(tmp_path / "m.onnx"), CPU) as session:
        assert session.session_ms > 0
        assert session.provider == "cpu"
        x, idx = session.inputs["x"], session.inputs["idx"]
        assert x.shape == (1, 8, 16, 16) and x.dtype == np.float32  # symbolic batch fed as 1
        assert -1.0 <= x.min() and x.max() < 1.0 and x.std() > 0.1
        assert idx.shape == (3,) and idx.dtype == np.int64 and set(np.unique(idx)) <= {0, 1}
        session.run()
        session.run()
        opts = session._sess.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_onnxruntime_threads_are_applied(tmp_path):
    rt = get_runtime("onnxruntime")
    session = rt.load(onnx_model(tmp_path / "m.onnx"), RuntimeConfig(threads=2))
    assert session._sess.get_session_options().intra_op_num_threads == 2
    session.close()
    with pytest.raises(BadInput, match="threads"):
        rt.load(tmp_path / "m.onnx", RuntimeConfig(threads=-1))


def test_onnxruntime_corrupt_model_is_one_line(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model" * 50)
    with pytest.raises(CorruptModel) as info:
        get_runtime("onnxruntime").load(bad, CPU)
    msg = str(info.value)
    assert "broken.onnx" in msg and "\n" not in msg and len(msg) < 260
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_model(tmp_path / "ok.onnx").read_bytes()[:100])
    with pytest.raises(CorruptModel):
        get_runtime("onnxruntime").load(truncated, CPU)
    with pytest.raises(BadInput, match="not found"):
        get_runtime("onnxruntime").load(tmp_path / "missing.onnx", CPU)


def test_onnxruntime_missing_provider(tmp_path):
    model = onnx_model(tmp_path / "m.onnx")
    here = get_runtime("onnxruntime").providers()
    for provider in ("cuda", "tensorrt", "openvino", "NoSuchExecutionProvider"):
        if provider in here:
            continue
        with pytest.raises(RuntimeUnavailable, match="not available here"):
            get_runtime("onnxruntime").load(model, RuntimeConfig(provider=provider))


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_onnxruntime_silent_cpu_fallback_is_refused(tmp_path, monkeypatch):
    """If a GPU provider is listed but cannot start, onnxruntime quietly runs on CPU; we refuse."""
    import onnxruntime

    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: real + ["CUDAExecutionProvider"])
    with pytest.raises(RuntimeUnavailable, match="fell back to CPUExecutionProvider"):
        get_runtime("onnxruntime").load(onnx_model(tmp_path / "m.onnx"), RuntimeConfig(provider="cuda"))


def test_tensorrt_chain_lists_fallbacks_after(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    chain = onnxruntime_rt.OnnxRuntime()._provider_list("tensorrt", "fp16")
    assert chain == [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                     "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnxruntime_rt.OnnxRuntime()._provider_list("cuda", "fp32") == ["CUDAExecutionProvider",
                                                                         "CPUExecutionProvider"]
    assert onnxruntime_rt.OnnxRuntime()._provider_list("cpu", "fp32") == ["CPUExecutionProvider"]


def test_litert_session_runs(tmp_path):
    rt = get_runtime("litert")
    for provider in ("cpu", "xnnpack"):
        with rt.load(tflite_model(tmp_path / "m.tflite"), RuntimeConfig(runtime="litert", provider=provider)) as s:
            assert s.session_ms > 0 and s.provider == provider
            (x,) = s.inputs.values()
            assert x.shape == (1, 16, 16, 8) and x.dtype == np.float32 and x.std() > 0.1
            s.run()
            out = s._interp.get_output_details()[0]
            y = s._interp.get_tensor(out["index"])
            assert y.shape == (1, 16, 16, 16) and (y >= 0).all() and y.max() > 0  # fused relu ran


def test_litert_errors(tmp_path):
    rt = get_runtime("litert")
    model = tflite_model(tmp_path / "m.tflite")
    with pytest.raises(RuntimeUnavailable, match="GPU delegate not loadable"):
        rt.load(model, RuntimeConfig(runtime="litert", provider="gpu"))
    with pytest.raises(RuntimeUnavailable, match="not supported"):
        rt.load(model, RuntimeConfig(runtime="litert", provider="hexagon"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\x00garbage" * 20)
    with pytest.raises(CorruptModel) as info:
        rt.load(bad, LITE)
    assert "bad.tflite" in str(info.value) and "\n" not in str(info.value)
    onnx_file = onnx_model(tmp_path / "m.onnx")
    with pytest.raises(CorruptModel):
        rt.load(onnx_file, LITE)


def test_tflite_runtime_absent_is_unavailable(tmp_path):
    rt = litert_rt.LiteRTRuntime("tflite-runtime")
    assert not rt.available() and rt.version() == "" and rt.providers() == []
    with pytest.raises(RuntimeUnavailable, match="pip install tflite-runtime"):
        rt.load(tflite_model(tmp_path / "m.tflite"), RuntimeConfig(runtime="tflite-runtime"))


def test_litert_falls_back_to_the_other_package(tmp_path, monkeypatch):
    """A board with only one of the two wheels: 'litert' uses what is there and says so."""
    monkeypatch.setitem(litert_rt.PACKAGES, "litert", "ai_edge_litert_not_installed")
    monkeypatch.setitem(litert_rt.PACKAGES, "tflite-runtime", "ai_edge_litert")  # stands in for tflite_runtime
    rt = get_runtime("litert")
    assert rt.name == "tflite-runtime"
    with rt.load(tflite_model(tmp_path / "m.tflite"), LITE) as s:
        s.run()


def test_onnx_loads_reuse_one_private_folder_left_empty(tmp_path, monkeypatch):
    import tempfile

    folders = tmp_path / "tmp"
    folders.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folders))
    monkeypatch.setattr(onnxruntime_rt, "_SPARE_FOLDERS", [])
    rt = get_runtime("onnxruntime")
    for i in range(3):
        session = rt.load(onnx_model(tmp_path / f"m{i}.onnx", channels=4 + i), RuntimeConfig(threads=1))
        session.run()
        session.close()
    made = [p for p in folders.iterdir() if p.name.startswith("edgelat-model-")]
    assert len(made) == 1 and list(made[0].iterdir()) == []  # one folder, empty between loads
    assert made[0].stat().st_mode & 0o077 == 0  # private
    (made[0] / "left.onnx").write_bytes(b"x")  # something appeared in it: never used again
    rt.load(onnx_model(tmp_path / "m9.onnx"), RuntimeConfig(threads=1)).close()
    assert not made[0].exists()
    fresh = [p for p in folders.iterdir() if p.name.startswith("edgelat-model-")]
    assert len(fresh) == 1 and fresh[0] != made[0] and list(fresh[0].iterdir()) == []
