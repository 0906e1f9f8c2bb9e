"""The on-device Python runner, run as the bridge runs it: a separate Python process
in a directory holding only ``runner.py`` and ``measure.py``, timing real models with
this machine's onnxruntime and LiteRT."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

import edgelat.agents
from edgelat.agents.parsers import parse_runner_output
from edgelat.agents.parsers import runner_output
from edgelat.errors import CorruptModel, DeviceError, RuntimeUnavailable

AGENTS = Path(edgelat.agents.__file__).resolve().parent
RUNNER = AGENTS / "scripts" / "runner.py"
MEASURE = AGENTS / "measure.py"
FAST = ["--warmup", "1", "--min-runs", "3", "--max-runs", "20", "--target-rel-ci", "0.02",
        "--max-seconds", "0.5"]


@pytest.fixture()
def device_dir(tmp_path: Path) -> Path:
    """What the bridge pushes: the two files, side by side, and nothing of edgelat."""
    d = tmp_path / "data-local-tmp-edgelat"
    d.mkdir()
    shutil.copy(RUNNER, d / "runner.py")
    shutil.copy(MEASURE, d / "measure.py")
    return d


def run_runner(device_dir: Path, *args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, str(device_dir / "runner.py"), *args],
        cwd=cwd or device_dir.parent, capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout.splitlines()


def run_merged(device_dir: Path, *args: str) -> str:
    """stdout and stderr in one stream, as ``adb shell`` without -T delivers them."""
    proc = subprocess.run([sys.executable, str(device_dir / "runner.py"), *args], cwd=device_dir.parent,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return proc.stdout.replace("\n", "\r\n")  # a pty turns LF into CRLF


def result_of(lines: list[str]) -> dict:
    found = [line for line in lines if line.startswith("EDGELAT_RESULT ")]
    assert len(found) == 1, lines
    return json.loads(found[0][len("EDGELAT_RESULT "):])


def error_of(rc: int, lines: list[str]) -> str:
    assert rc == 2
    found = [line for line in lines if line.startswith("EDGELAT_ERROR ")]
    assert len(found) == 1 and not any(line.startswith("EDGELAT_RESULT") for line in lines), lines
    return found[0][len("EDGELAT_ERROR "):]


def tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], rng.standard_normal((64, 64)).astype(np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],  # symbolic batch
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 64])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_tflite(path: Path) -> Path:
    from edgelat.profiler.ops import KernelSpec
    from edgelat.profiler.tflite_builder import build_tflite

    path.write_bytes(build_tflite(KernelSpec("conv2d", 16, 16, 8, 16, kernel=3, act="relu")))
    return path


def check_result(res: dict, runtime: str, version_: str) -> None:
    assert res["runtime"]["name"] == runtime and res["runtime"]["version"] == version_
    assert res["session_ms"] > 0 and res["first_run_ms"] > 0
    lat = res["latency"]
    samples = res["samples_ms"]
    assert res["samples"] == lat["n"] == len(samples)
    assert 3 <= lat["n"] <= 20
    assert all(s > 0 for s in samples)
    # the summary is computed from the very samples reported
    assert lat["median"] == pytest.approx(float(np.median(samples)), rel=1e-5)
    assert lat["mean"] == pytest.approx(float(np.mean(samples)), rel=1e-5)
    assert lat["p10"] <= lat["median"] <= lat["p90"]
    assert lat["stopped_by"] in ("target", "max_runs", "max_seconds") and lat["warmup"] == 1
    assert res["steady_wall_s"] >= sum(samples) / 1e3 * 0.99


def test_onnx_model_with_onnxruntime(device_dir: Path, tmp_path: Path) -> None:
    import onnxruntime

    model = tiny_onnx(tmp_path / "tiny.onnx")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "onnx", "--runtime",
                           "onnxruntime", "--threads", "1", *FAST)
    assert rc == 0, lines
    res = result_of(lines)
    check_result(res, "onnxruntime", onnxruntime.__version__)
    assert res["runtime"]["provider"] == "cpu" and res["runtime"]["threads"] == 1
    assert lines.index("EDGELAT_STEADY start") < lines.index(next(x for x in lines if x.startswith("EDGELAT_RESULT")))


def test_tflite_model_with_litert(device_dir: Path, tmp_path: Path) -> None:
    model = tiny_tflite(tmp_path / "tiny.tflite")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "tflite", "--runtime", "litert",
                           "--threads", "2", *FAST)
    assert rc == 0, lines
    check_result(result_of(lines), "litert", version("ai-edge-litert"))


def test_runs_from_any_working_directory(device_dir: Path, tmp_path: Path) -> None:
    """adb shell starts in /; measure.py is found beside runner.py, not in the cwd."""
    model = tiny_onnx(tmp_path / "tiny.onnx")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "onnx", "--runtime",
                           "onnxruntime", *FAST, cwd=Path("/"))
    assert rc == 0 and result_of(lines)["samples"] >= 3


def test_max_runs_caps_the_loop(device_dir: Path, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "onnx", "--runtime", "onnxruntime",
                           "--warmup", "0", "--min-runs", "5", "--max-runs", "5", "--target-rel-ci", "0",
                           "--max-seconds", "5")
    assert rc == 0
    res = result_of(lines)
    assert res["samples"] == 5 and res["latency"]["stopped_by"] == "max_runs"


@pytest.mark.parametrize("fmt, runtime", [("onnx", "onnxruntime"), ("tflite", "litert")])
def test_corrupt_model_is_one_error_line(device_dir: Path, tmp_path: Path, fmt: str, runtime: str) -> None:
    bad = tmp_path / f"corrupt.{fmt}"
    bad.write_bytes(b"\x08\x07this is not a model" * 10)
    rc, lines = run_runner(device_dir, "--model", str(bad), "--format", fmt, "--runtime", runtime, *FAST)
    msg = error_of(rc, lines)
    assert f"cannot load corrupt.{fmt}" in msg and "\n" not in msg


@pytest.mark.parametrize("args, words", [
    (["--format", "onnx", "--runtime", "onnxruntime"], "--model"),
    (["--model", "m.onnx", "--format", "tflite", "--runtime", "onnxruntime"], "runs onnx models"),
    (["--model", "m.onnx", "--format", "onnx", "--runtime", "tensorflow"], "bad arguments"),
    (["--model", "m.onnx", "--format", "onnx", "--runtime", "onnxruntime", "--threads", "-1"], "--threads"),
    (["--model", "/nonexistent/m.onnx", "--format", "onnx", "--runtime", "onnxruntime"], "model file not found"),
])
def test_bad_arguments_are_one_error_line(device_dir: Path, args: list[str], words: str) -> None:
    rc, lines = run_runner(device_dir, *args)
    assert words in error_of(rc, lines)


def test_unknown_provider(device_dir: Path, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "onnx", "--runtime", "onnxruntime",
                           "--provider", "qnn", *FAST)
    assert "provider 'qnn' not available" in error_of(rc, lines)


def test_missing_measure_module(device_dir: Path, tmp_path: Path) -> None:
    (device_dir / "measure.py").unlink()
    model = tiny_onnx(tmp_path / "tiny.onnx")
    rc, lines = run_runner(device_dir, "--model", str(model), "--format", "onnx", "--runtime", "onnxruntime",
                           *FAST)
    assert "measure.py must sit next to runner.py" in error_of(rc, lines)


def test_describe_lists_runtimes(device_dir: Path) -> None:
    import onnxruntime

    rc, lines = run_runner(device_dir, "--describe")
    assert rc == 0
    res = result_of(lines)
    assert res["runtimes"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in res["runtimes"]["onnxruntime"]["providers"]
    assert res["runtimes"]["litert"]["version"] == version("ai-edge-litert")
    assert res["numpy"] == np.__version__ and res["python"].count(".") == 2


def test_runner_is_self_contained() -> None:
    """No edgelat import: edgelat is not installed on the device."""
    tree = ast.parse(RUNNER.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names <= {"__future__", "argparse", "importlib", "json", "os", "platform", "sys", "time", "numpy"}
    assert not (AGENTS / "scripts" / "__init__.py").exists()  # package data, not a package


# --- the bridge's side: parse_runner_output on what the runner really printed ---------------------


def test_parse_runner_output_success(device_dir: Path, tmp_path: Path) -> None:
    model = tiny_tflite(tmp_path / "tiny.tflite")
    out = run_merged(device_dir, "--model", str(model), "--format", "tflite", "--runtime", "litert", *FAST)
    res = parse_runner_output(out)
    assert res["runtime"]["name"] == "litert" and res["samples"] == len(res["samples_ms"]) >= 3


def test_parse_runner_output_corrupt_model(device_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 20)
    out = run_merged(device_dir, "--model", str(bad), "--format", "onnx", "--runtime", "onnxruntime", *FAST)
    with pytest.raises(CorruptModel, match="onnxruntime cannot load bad.onnx"):
        parse_runner_output(out)


def test_parse_runner_output_runtime_unavailable(device_dir: Path, tmp_path: Path) -> None:
    model = tiny_tflite(tmp_path / "tiny.tflite")
    out = run_merged(device_dir, "--model", str(model), "--format", "tflite", "--runtime", "tflite-runtime", *FAST)
    if "EDGELAT_RESULT" in out:
        pytest.skip("tflite_runtime is installed here")
    with pytest.raises(RuntimeUnavailable, match="tflite-runtime is not installed"):
        parse_runner_output(out)


def test_parse_runner_output_crash_and_garble() -> None:
    with pytest.raises(DeviceError, match="no result"):
        parse_runner_output("Segmentation fault\n")
    with pytest.raises(DeviceError, match="garbled"):
        parse_runner_output('EDGELAT_RESULT {"session_ms": 1.2, "lat\n')
    with pytest.raises(DeviceError, match="python runner failed: bad arguments"):
        parse_runner_output("EDGELAT_ERROR bad arguments: --model required\n")


def test_markers_match_the_runner() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgelat_runner_copy", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (mod.RESULT_PREFIX, mod.ERROR_PREFIX, mod.STEADY_MARK) == (
        runner_output.RESULT_PREFIX, runner_output.ERROR_PREFIX, runner_output.STEADY_MARK)
