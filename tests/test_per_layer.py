"""Measured per-layer profiles: onnxruntime's own profiler on ``local`` and through a real agent,
benchmark_model's op profiling on a phone, stored with the model row and in its history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import running_agent
from click.testing import CliRunner
from real_models import materialize

import edgelat
from edgelat.agents.adb.runners import BenchmarkModelRunner
from edgelat.agents.runtimes.onnxruntime_rt import OnnxRuntime, node_times
from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.cli import main

QUICK = ["--max-seconds", "0.3", "--min-runs", "10", "--warmup", "1"]
OUTPUTS = Path(__file__).resolve().parent / "data" / "benchmark-outputs" / "benchmark_model"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr
    return result


def test_onnxruntime_profiler_gives_every_layer_of_a_real_model(tmp_path):
    path = materialize("mobilenet_v3_small", tmp_path, single_file=True)
    rows = OnnxRuntime().layer_times(path, RuntimeConfig(), runs=5, max_seconds=2.0)
    assert len(rows) > 50
    assert all(r["median_ms"] > 0 and r["runs"] == 5 for r in rows)
    assert {"Conv", "Gemm"} <= {r["op"] for r in rows}


def test_trace_parsing_takes_each_nodes_median_after_the_skipped_runs(tmp_path):
    events = []
    for run_i, durs in enumerate([(900, 90), (100, 10), (300, 30), (200, 20)]):
        for node, dur in zip(("conv", "relu"), durs):
            events.append({"cat": "Node", "name": f"{node}_fence_before", "dur": 0})
            events.append({"cat": "Node", "name": f"{node}_kernel_time", "dur": dur,
                           "args": {"op_name": node.capitalize()}})
        events.append({"cat": "Session", "name": "model_run", "dur": 5000})
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps(events))
    rows = node_times(trace, skip_runs=1)
    assert rows == [{"layer": "conv", "op": "Conv", "median_ms": 0.2, "runs": 3},
                    {"layer": "relu", "op": "Relu", "median_ms": 0.02, "runs": 3}]


def test_profile_model_per_layer_is_stored_shown_and_kept_in_history(tmp_path):
    path = materialize("squeezenet1_1", tmp_path)
    out = json.loads(run("profile", "model", path, "--device", "local", "--per-layer", "--json", *QUICK).stdout)
    layers = out["layers"]
    assert len(layers) > 20 and sum(r["share"] for r in layers) == pytest.approx(1.0)
    assert "profiled runs" in out["layers_note"]
    row = json.loads(run("lut", "show", "--device", "local", "--models", "--json").stdout)[0]
    assert [r["layer"] for r in row["layers"]] == [r["layer"] for r in layers]
    hist = json.loads(run("lut", "history", "--device", "local", "--model", path, "--json").stdout)
    assert hist[0]["layers"] is not None and len(hist[0]["layers"]) == len(layers)
    text = run("profile", "model", path, "--device", "local", "--per-layer", "--layers", "5", *QUICK)
    shown = [ln for ln in text.stdout.splitlines() if "%" in ln]
    assert len(shown) == 5 and f"{len(layers) - 5} more layers" in text.stdout
    plain = json.loads(run("profile", "model", path, "--device", "local", "--json", *QUICK).stdout)
    assert plain["layers"] is None  # only when asked for


def test_per_layer_through_a_real_agent_and_the_api(tmp_path):
    path = materialize("mnasnet0_5", tmp_path)
    with running_agent(tmp_path / "agent") as agent:
        run("devices", "register", "board", "--agent", agent.address)
        out = json.loads(run("profile", "model", path, "--device", "board", "--per-layer", "--json", *QUICK).stdout)
    assert len(out["layers"]) > 20 and all(r["median_ms"] > 0 for r in out["layers"])
    r = edgelat.device("local").profile_model(path, per_layer=True, max_seconds=0.3)
    frame = r.layers_frame()
    assert len(frame) == len(r.layers) > 20 and list(frame["median_ms"]) == sorted(frame["median_ms"], reverse=True)


def test_benchmark_model_op_profiling_becomes_the_same_layer_rows():
    runner = BenchmarkModelRunner()
    argv = runner.argv("/data/local/tmp/m.tflite", RuntimeConfig(runtime="tflite-benchmark"),
                       MeasurementProtocol(per_layer=True))
    assert "--enable_op_profiling=true" in argv
    assert "--enable_op_profiling=true" not in runner.argv("/data/local/tmp/m.tflite",
                                                           RuntimeConfig(runtime="tflite-benchmark"),
                                                           MeasurementProtocol())
    text = (OUTPUTS / "08_imx-benchmarks_mobilenet-CPU_opprof.txt").read_text()
    out = runner.parse(text, RuntimeConfig(runtime="tflite-benchmark"))
    layers = out.extra["layers"]
    assert layers and all(set(r) == {"layer", "op", "median_ms", "runs"} for r in layers)
    assert [r["median_ms"] for r in layers] == [r["avg_ms"] for r in out.extra["ops"] if r["avg_ms"] is not None]
    assert "average" in out.extra["layers_note"]
