"""Property-based tests of the benchmark-output parsers (hypothesis).

Arbitrary text, and mutations of real captured outputs (``tests/data/fuzz-seeds``),
must never raise anything but the parser's documented error, and a parsed
latency is either absent or a finite, non-negative number: a garbled output
never becomes a measurement.
"""

from __future__ import annotations

import re
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgelat.agents.adb.runners import BenchmarkModelRunner, OrtPerfTestRunner, PythonRunner
from edgelat.agents.parsers import parse_benchmark_model, parse_ort_perf_test, parse_runner_output
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, EdgelatError

SEEDS = Path(__file__).parent / "data" / "fuzz-seeds"
BM_SEEDS = sorted((SEEDS / "benchmark_model").glob("*.txt"))
ORT_SEEDS = sorted((SEEDS / "onnxruntime_perf_test").glob("*.txt"))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Tokens that break naive number handling: non-finite, negative, huge, unicode digits, separators.
NASTY = ["nan", "inf", "-inf", "1e999", "-1", "-0.5", "9" * 5000, "1" * 30, "\u0661\u0662", "1_000", "0x10",
         "", " ", "\t", "[", "]", ":", "=", "%", "\x00", "\r", "\u2028", "count=", "ms", "us"]


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Path]) -> str:
    """A real output with a few edits: numbers replaced by nasty tokens, lines dropped,
    duplicated, cut or joined, random text inserted."""
    text = _read(draw(st.sampled_from(seeds)))
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["number", "drop", "dup", "cut", "insert", "join", "tabs"]))
        line = lines[i]
        if op == "number":
            nums = list(re.finditer(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", line))
            if nums:
                m = nums[draw(st.integers(0, len(nums) - 1))]
                token = draw(st.sampled_from(NASTY) | st.text(max_size=8))
                lines[i] = line[: m.start()] + token + line[m.end():]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "cut":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        elif op == "insert":
            pos = draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + draw(st.text(max_size=20) | st.sampled_from(NASTY)) + line[pos:]
        elif op == "join" and i + 1 < len(lines):
            lines[i: i + 2] = [line + lines[i + 1]]
        elif op == "tabs":
            lines[i] = line.replace(" ", "\t")
    return "\n".join(lines)


def _ok_latency(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0)


def check_benchmark_model(text: str) -> None:
    try:
        report = parse_benchmark_model(text)
    except BadInput:
        return
    lat = report.latency_ms()
    for key in ("median", "mean", "std", "min", "max", "p5", "p95"):
        assert _ok_latency(lat[key]), (key, lat[key])
    assert lat["n"] is None or (isinstance(lat["n"], int) and lat["n"] >= 0)
    for value in (report.session_ms, report.first_run_ms, report.peak_memory_mb):
        assert _ok_latency(value), value
    for row in report.ops + report.top_ops + report.init_ops + report.delegate_ops:
        assert _ok_latency(row.avg_ms) and _ok_latency(row.first_ms)
    for row in report.ops_by_type:
        assert _ok_latency(row.avg_ms)
    json.dumps(report.to_dict(), allow_nan=False)  # storable as is


def check_ort(text: str) -> None:
    try:
        report = parse_ort_perf_test(text)
    except BadInput:
        return
    lat = report.latency_ms()
    for key in ("median", "mean", "min", "max", "p90", "p95", "p99"):
        assert _ok_latency(lat[key]), (key, lat[key])
    assert lat["n"] is None or (isinstance(lat["n"], int) and lat["n"] >= 0)
    for value in (report.session_ms, report.first_inference_ms, report.total_inference_time_s):
        assert _ok_latency(value), value
    json.dumps(report.to_dict(), allow_nan=False)


def check_runner(runner, text: str, config: RuntimeConfig) -> None:
    """A bridge runner's parse: an EdgelatError, or a finite non-negative median."""
    try:
        out = runner.parse(text, config)
    except EdgelatError:
        return
    assert math.isfinite(out.latency.median) and out.latency.median >= 0
    assert math.isnan(out.latency.mean) or (math.isfinite(out.latency.mean) and out.latency.mean >= 0)
    assert out.latency.n >= 0


# ---- arbitrary text ---------------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=400))
@example("count=1 avg=nan\ncount=3 avg=-5 median=1e999 std=inf")
@example("count=" + "9" * 5000 + " avg=1\ncount=2 avg=3")
@example("Inference timings in us: Init: -1, First inference: 1e999, Warmup (avg): nan, Inference (avg): -3")
@example("============================== Run Order ==============================\n"
         "\t[node type]" + "\t[x]" * 60 + "\t[Name]\n\tCONV" + "\t1" * 60 + "\tname")
def test_benchmark_model_on_arbitrary_text(text: str) -> None:
    check_benchmark_model(text)


@FUZZ
@given(st.text(max_size=400))
@example("Average inference time cost total: -3 ms\nP50 Latency: 1e999 s\nRuns: 5")
@example("Total inference requests: " + "9" * 5000 + "\nAverage time cost: 3 ms")
def test_ort_perf_test_on_arbitrary_text(text: str) -> None:
    check_ort(text)


# ---- the tools' own line shapes with random values ---------------------------------------------
_value = st.sampled_from(NASTY) | st.floats().map(repr) | st.integers(-10**20, 10**20).map(str)
_bm_line = st.one_of(
    st.builds(lambda c, kv: f"count={c} " + " ".join(f"{k}={v}" for k, v in kv),
              _value, st.lists(st.tuples(st.sampled_from(["first", "curr", "min", "max", "avg", "std", "p5",
                                                          "median", "p95"]), _value), max_size=9)),
    st.builds(lambda a, b, c, d: f"Inference timings in us: Init: {a}, First inference: {b}, "
                                 f"Warmup (avg): {c}, Inference (avg): {d}", _value, _value, _value, _value),
    st.builds(lambda a, b: f"Memory footprint delta from the start of the tool (MB): init={a} overall={b}",
              _value, _value),
    st.builds(lambda a: f"Overall peak memory footprint (MB) via periodic monitoring: {a}", _value),
    st.builds(lambda a: f"Initialized session in {a}ms", _value),
)
_ort_line = st.builds(
    lambda label, v, unit: f"{label}{v}{unit}",
    st.sampled_from(["Average inference time cost total: ", "Average time cost: ", "Total time cost: ",
                     "Total inference requests: ", "P50 Latency: ", "P90 Latency is ", "Min Latency: ",
                     "Session creation time cost: ", "First inference time cost: ", "Peak working set size: ",
                     "Runs: ", "Avg CPU usage: ", "Number of inferences per second: "]),
    _value, st.sampled_from(["", " ms", " s", " sec", " bytes", " %"]),
)


@FUZZ
@given(st.lists(_bm_line, min_size=1, max_size=6).map("\n".join))
def test_benchmark_model_line_shapes_with_random_values(text: str) -> None:
    check_benchmark_model(text)
    check_runner(BenchmarkModelRunner(), text, RuntimeConfig(runtime="tflite-benchmark"))


@FUZZ
@given(st.lists(_ort_line, min_size=1, max_size=6).map("\n".join))
def test_ort_perf_test_line_shapes_with_random_values(text: str) -> None:
    check_ort(text)
    check_runner(OrtPerfTestRunner(), text, RuntimeConfig(runtime="ort-perf-test"))


# ---- mutations of real outputs ----------------------------------------------------------------
@FUZZ
@given(mutated(BM_SEEDS))
def test_benchmark_model_on_mutated_real_outputs(text: str) -> None:
    check_benchmark_model(text)
    check_runner(BenchmarkModelRunner(), text, RuntimeConfig(runtime="tflite-benchmark"))


@FUZZ
@given(mutated(ORT_SEEDS))
def test_ort_perf_test_on_mutated_real_outputs(text: str) -> None:
    check_ort(text)
    check_runner(OrtPerfTestRunner(), text, RuntimeConfig(runtime="ort-perf-test"))


def test_the_seeds_parse_unmutated() -> None:
    """The seeds are real outputs the parsers read (so mutations start from parseable text)."""
    assert len(BM_SEEDS) >= 4 and len(ORT_SEEDS) >= 4
    for p in BM_SEEDS:
        assert parse_benchmark_model(_read(p)).latency_ms()["median"] is not None, p.name
    for p in ORT_SEEDS:
        assert parse_ort_perf_test(_read(p)).latency_ms()["median"] is not None, p.name


# ---- the python runner's JSON line ------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_latency = st.fixed_dictionaries({
    "median": st.floats() | st.integers() | st.text(max_size=3) | st.none(),
    "mean": st.floats(), "std": st.floats(), "p10": st.floats(), "p90": st.floats(),
    "n": st.integers() | st.floats(), "rel_ci": st.floats(), "stable": st.booleans() | st.integers(),
})


@st.composite
def runner_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["result", "any-json", "error", "text"]))
    if kind == "result":
        body = {"latency": draw(_latency), "runtime": draw(_json_values), "session_ms": draw(st.floats() | st.none())}
        line = "EDGELAT_RESULT " + json.dumps(body)
    elif kind == "any-json":
        line = "EDGELAT_RESULT " + json.dumps(draw(_json_values))
    elif kind == "error":
        line = "EDGELAT_ERROR " + draw(st.text(max_size=40))
    else:
        line = draw(st.text(max_size=80))
    return draw(st.text(max_size=20)) + "\n" + line + "\n" + draw(st.text(max_size=20))


@FUZZ
@given(runner_lines())
def test_python_runner_output(text: str) -> None:
    try:
        result = parse_runner_output(text)
    except EdgelatError:
        pass
    else:
        assert isinstance(result, dict)
        lat = result.get("latency")
        if lat is not None:
            assert math.isfinite(lat["median"]) and lat["median"] >= 0
    check_runner(PythonRunner(), text, RuntimeConfig(runtime="onnxruntime"))


# ---- regressions the fuzzing found --------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "count=3 first=1 curr=1 min=1 max=1 avg=-4 std=0\ncount=50 first=1 curr=1 min=1 max=1 avg=-4 std=0",
    "count=1 curr=5\ncount=50 avg=1e999 median=nan",
])
def test_benchmark_model_negative_or_nonfinite_values_are_not_latencies(text: str) -> None:
    check_benchmark_model(text)
    report = parse_benchmark_model(text)
    assert report.latency_ms()["median"] is None


def test_benchmark_model_count_with_thousands_of_digits_is_bad_input_not_a_crash() -> None:
    with pytest.raises(BadInput):
        parse_benchmark_model("count=" + "9" * 5000 + " avg=1")


def test_ort_negative_average_is_not_a_latency() -> None:
    with pytest.raises(BadInput):
        parse_ort_perf_test("Average inference time cost total: -3 ms")
    report = parse_ort_perf_test("Average inference time cost total: 3 ms\nP50 Latency: 1e999 s")
    assert report.latency_ms()["median"] == 3 and report.p50_s is None
    # finite in seconds, infinite in ms (found by test_ort_perf_test_line_shapes_with_random_values)
    with pytest.raises(BadInput):
        parse_ort_perf_test("P50 Latency: 1.797693134862316e+305")
    report = parse_ort_perf_test("Average inference time cost total: 3 ms\nP50 Latency: 1.797693134862316e+305 s\n"
                                 "Session creation time cost: 1e306")
    assert report.latency_ms()["median"] == 3 and report.p50_s is None and report.session_ms is None


@pytest.mark.parametrize("line", [
    'EDGELAT_RESULT {"latency": {"median": NaN, "mean": 1, "std": 0, "p10": 1, "p90": 1, "n": 3, '
    '"rel_ci": 0.1, "stable": true}}',
    'EDGELAT_RESULT {"latency": {"median": -2, "mean": 1, "std": 0, "p10": 1, "p90": 1, "n": 3, '
    '"rel_ci": 0.1, "stable": true}}',
    'EDGELAT_RESULT [1, 2]',
    'EDGELAT_RESULT {"no": "latency"}',
    'EDGELAT_RESULT {"latency": [1]}',
])
def test_python_runner_garbled_results_are_device_errors(line: str) -> None:
    from edgelat.errors import DeviceError

    with pytest.raises(DeviceError):
        PythonRunner().parse(line, RuntimeConfig(runtime="onnxruntime"))


def test_op_table_garbage_cells_are_not_rows() -> None:
    """``times called`` of 1e999 used to raise OverflowError; a node count of thousands of
    digits raised ValueError (lines that long are now skipped whole)."""
    text = (
        "count=1 curr=5\ncount=50 avg=1000 median=990\n"
        "Number of nodes executed: " + "9" * 20 + "\n"
        "============================== Run Order ==============================\n"
        "\t[node type]\t[start]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]\n"
        "\tCONV_2D\t0.0\t1.0\t1.0\t50%\t50%\t0.0\t1e999\t[a]:0\n"
        "\tCONV_2D\t1.0\t-1.0\t1.0\t50%\t100%\t0.0\t1\t[b]:1\n"
        "\tADD\t2.0\t1.0\t1.0\t50%\t100%\t0.0\t1\t[c]:" + "7" * 1000 + "\n"
    )
    report = parse_benchmark_model(text)
    assert [r.name for r in report.ops] == ["[c]:" + "7" * 1000] and report.ops[0].node_index is None
    assert report.op_nodes_executed is None
    assert report.latency_ms()["median"] == 0.99


def test_ort_counts_with_thousands_of_digits_are_ignored() -> None:
    """``int(float('9' * 5000))`` used to raise OverflowError."""
    report = parse_ort_perf_test("Total inference requests: " + "9" * 5000 + "\nAverage time cost: 3 ms\n"
                                 "Peak working set size: " + "9" * 400 + "\n")
    assert report.total_requests is None and report.peak_working_set_bytes is None and report.average_ms == 3


def test_a_long_run_of_digits_is_read_quickly() -> None:
    import time

    t0 = time.monotonic()
    for n in (4000, 200_000):
        with pytest.raises(BadInput):
            parse_benchmark_model("count=1 a=" + "1" * n + "x")
        with pytest.raises(BadInput):
            parse_ort_perf_test("P50 Latency: " + "1" * n + "x")
    assert time.monotonic() - t0 < 5
