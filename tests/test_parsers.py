"""benchmark_model / onnxruntime_perf_test parsers against 21 real captured outputs.

Every file in ``tests/data/benchmark-outputs`` is parsed and compared
with the values its ``index.json`` says a correct parser must extract; then
the same real texts are re-wrapped the way they reach the bridge (CRLF, adb
logcat headers, interleaved log lines, tabs lost to spaces) and must parse to
the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgelat.agents.parsers import (
    BenchmarkModelReport,
    PerfTestReport,
    parse_benchmark_model,
    parse_ort_perf_test,
)
from edgelat.errors import BadInput

DATA = Path(__file__).resolve().parent / "data" / "benchmark-outputs"
ENTRIES: list[dict] = json.loads((DATA / "index.json").read_text())
BM = [e for e in ENTRIES if e["tool"] == "benchmark_model"]
ORT = [e for e in ENTRIES if e["tool"] == "onnxruntime_perf_test"]


def _text(entry: dict) -> str:
    return (DATA / entry["file"]).read_text()


def bm_values(r: BenchmarkModelReport) -> dict:
    """The report in index.json's vocabulary."""
    runs = r.runs
    return {
        "init_us": r.init_us,
        "first_inference_us": r.first_inference_us,
        "warmup_avg_us": r.warmup_avg_us,
        "inference_avg_us": r.inference_avg_us,
        "summary_format": r.summary_format,
        "warmup_count": r.warmup.count if r.warmup else None,
        "runs_count": runs.count if runs else None,
        "min_us": runs.min_us if runs else None,
        "max_us": runs.max_us if runs else None,
        "avg_us": runs.avg_us if runs else None,
        "std_us": runs.std_us if runs else None,
        "p5_us": runs.p5_us if runs else None,
        "median_us": runs.median_us if runs else None,
        "p95_us": runs.p95_us if runs else None,
        "mem_label": r.memory.get("label"),
        "mem_init_mb": r.memory.get("init_mb"),
        "mem_overall_mb": r.memory.get("overall_mb"),
        "peak_mem_mb": r.memory.get("peak_mb"),
        "op_profile_rows": len(r.ops) if r.ops else None,
        "op_nodes_executed": r.op_nodes_executed,
        "logcat_prefixed": r.logcat_prefixed,
    }


def ort_values(r: PerfTestReport) -> dict:
    return {k: getattr(r, k) for k in ORT[0]["expected"]} if ORT else {}


def test_index_covers_all_21_files() -> None:
    files = sorted(p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.txt"))
    assert len(ENTRIES) == 21 and len(files) == 21
    assert sorted(e["file"] for e in ENTRIES) == files


@pytest.mark.parametrize("entry", BM, ids=[e["file"].split("/")[1] for e in BM])
def test_benchmark_model_matches_index(entry: dict) -> None:
    got = bm_values(parse_benchmark_model(_text(entry)))
    assert got == entry["expected"]


@pytest.mark.parametrize("entry", ORT, ids=[e["file"].split("/")[1] for e in ORT])
def test_ort_perf_test_matches_index(entry: dict) -> None:
    got = ort_values(parse_ort_perf_test(_text(entry)))
    assert got == entry["expected"]


# --- the same texts as they reach the bridge -----------------------------------------------------


def _logcat_brief(text: str) -> str:
    return "".join(f"I/tflite  (12345): {line}\n" for line in text.splitlines())


def _logcat_threadtime(text: str) -> str:
    return "".join(f"01-02 03:04:05.678  4321  4321 I tflite  : {line}\n" for line in text.splitlines())


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _interleave(text: str) -> str:
    """A foreign log line after every 5th line (delegate chatter, kernel messages)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        out.append(line)
        if i % 5 == 4:
            out.append("WARNING: Attempting to use a delegate that only supports static-sized tensors")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("wrap", [_crlf, _logcat_brief, _logcat_threadtime, _interleave],
                         ids=["crlf", "logcat-brief", "logcat-threadtime", "interleaved"])
@pytest.mark.parametrize("entry", BM, ids=[e["file"].split("/")[1] for e in BM])
def test_benchmark_model_survives_carriers(entry: dict, wrap) -> None:
    if wrap in (_logcat_brief, _logcat_threadtime) and entry["expected"]["logcat_prefixed"]:
        pytest.skip("already a logcat capture; logcat does not nest")
    plain = parse_benchmark_model(_text(entry))
    wrapped = parse_benchmark_model(wrap(_text(entry)))
    want = bm_values(plain)
    got = bm_values(wrapped)
    if wrap in (_logcat_brief, _logcat_threadtime):
        assert got.pop("logcat_prefixed") is True
        want.pop("logcat_prefixed")
    assert got == want
    assert wrapped.ops == plain.ops and wrapped.ops_by_type == plain.ops_by_type
    assert wrapped.init_ops == plain.init_ops and wrapped.op_timings == plain.op_timings


@pytest.mark.parametrize("wrap", [_crlf, _logcat_brief, _interleave], ids=["crlf", "logcat", "interleaved"])
@pytest.mark.parametrize("entry", ORT, ids=[e["file"].split("/")[1] for e in ORT])
def test_ort_perf_test_survives_carriers(entry: dict, wrap) -> None:
    got = parse_ort_perf_test(wrap(_text(entry)))
    assert ort_values(got) == entry["expected"]


def test_op_tables_with_spaces_instead_of_tabs() -> None:
    """A table copied from a web page loses its tabs; columns are still recovered."""
    entry = next(e for e in BM if e["file"].startswith("benchmark_model/09_"))
    tabs = parse_benchmark_model(_text(entry))
    spaces = parse_benchmark_model(_text(entry).replace("\t", "  "))
    assert spaces.ops == tabs.ops and spaces.ops_by_type == tabs.ops_by_type


# --- op rows in detail -----------------------------------------------------------------------------


def _report(prefix: str) -> BenchmarkModelReport:
    entry = next(e for e in BM if e["file"].startswith(f"benchmark_model/{prefix}_"))
    return parse_benchmark_model(_text(entry))


def test_op_rows_overflowing_and_spaced_node_types() -> None:
    r = _report("09")
    vx, post = r.ops
    assert (vx.node_type, vx.start_ms, vx.first_ms, vx.avg_ms, vx.pct, vx.cdf_pct) == (
        "Vx Delegate", 0.013, 81.759, 152.984, 99.026, 99.026)
    assert (vx.mem_kb, vx.times_called, vx.name, vx.node_index) == (0.0, 1, "Squeeze, convert_scores", 64)
    assert post.node_type == "TFLite_Detection_PostProcess" and post.node_index == 63
    assert post.name.endswith("TFLite_Detection_PostProcess:3")
    assert [t.node_type for t in r.ops_by_type] == ["Vx Delegate", "TFLite_Detection_PostProcess"]
    assert r.ops_by_type[0].count == 1 and r.ops_by_type[0].avg_ms == 152.983
    # the setup-phase table is kept apart from the run table
    assert [(o.node_type, o.times_called) for o in r.init_ops] == [
        ("ModifyGraphWithDelegate", 2), ("AllocateTensors", 3)]
    assert r.op_timings is not None and r.op_timings.count == 50 and r.op_timings.avg_us == 154488


def test_op_rows_sum_and_types_agree_with_summary_table() -> None:
    r = _report("08")
    assert len(r.ops) == 31 and len(r.top_ops) == 10
    by_type: dict[str, int] = {}
    for op in r.ops:
        by_type[op.node_type] = by_type.get(op.node_type, 0) + 1
    assert by_type == {t.node_type: t.count for t in r.ops_by_type}
    assert sum(op.avg_ms for op in r.ops) == pytest.approx(162.9, abs=0.1)
    assert r.ops[0].name == "MobilenetV1/MobilenetV1/Conv2d_0/Relu6" and r.ops[0].node_index == 0
    assert r.ops[-1].cdf_pct == 100.0


def test_old_tables_without_section_header_or_node_index() -> None:
    r = _report("10")
    assert r.init_ops == [] and len(r.ops) == 31
    assert all(op.node_index is None for op in r.ops)
    assert r.ops[0].name == "MobilenetV1/MobilenetV1/Conv2d_0/Relu6"
    r11 = _report("11")  # narrower [start] column, times called all 0
    assert all(op.times_called == 0 for op in r11.ops)
    assert r11.ops[-1].node_type == "SOFTMAX" and r11.ops[-1].start_ms == 79.443


def _run_order_block(text: str) -> str:
    """The regular-runs "Run Order" table of a capture, title to blank line."""
    runs = text[text.index("Operator-wise Profiling Info for Regular Benchmark Runs:"):]
    start = runs.index("============================== Run Order")
    return runs[start: runs.index("\n\n", start) + 2]


def test_delegate_internal_tables_are_kept_apart() -> None:
    """Newer builds append the delegate's own per-op tables ("Delegate internal: ")."""
    text = _text(next(e for e in BM if e["file"].startswith("benchmark_model/08_")))
    block = _run_order_block(text)
    plain = parse_benchmark_model(text)
    r = parse_benchmark_model(text + "Delegate internal: \n" + block
                              + "Timings (microseconds): count=50 first=1 curr=1 min=1 max=1 avg=1 std=0\n")
    assert r.ops == plain.ops and len(r.ops) == 31 and r.op_timings == plain.op_timings
    assert r.delegate_ops == plain.ops  # the same rows, filed as the delegate's
    assert r.op_nodes_executed == 31


def test_subgraph_tables_are_kept_apart() -> None:
    text = _text(next(e for e in BM if e["file"].startswith("benchmark_model/08_")))
    block = _run_order_block(text)
    head, tail = text.split("Operator-wise Profiling Info for Regular Benchmark Runs:\n")
    r = parse_benchmark_model(
        head + "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        + "Primary graph (name: main) profile:\n" + tail
        + "Subgraph (index: 1, name: while_body) profile:\n" + block)
    assert len(r.ops) == 31 and len(r.subgraph_ops[1]) == 31 and r.delegate_ops == []


# --- latency_ms: what the bridge stores -------------------------------------------------------------


def test_latency_ms_uses_printed_median_when_present() -> None:
    lat = _report("04").latency_ms()
    assert lat["median"] == pytest.approx(899.281) and lat["median_source"] == "median"
    assert lat["mean"] == pytest.approx(899.641) and lat["std"] == pytest.approx(1.549)
    assert (lat["min"], lat["max"], lat["n"]) == (pytest.approx(898.007), pytest.approx(906.121), 50)
    assert lat["p5"] == pytest.approx(898.333) and lat["p95"] == pytest.approx(904.305)


def test_latency_ms_old_build_says_median_is_the_average() -> None:
    lat = _report("02").latency_ms()
    assert lat["median"] == pytest.approx(137.722) and lat["median_source"] == "avg"
    assert lat["p5"] is None and lat["p95"] is None and lat["n"] == 50


def test_latency_ms_summary_only_never_invents_spread() -> None:
    lat = _report("11").latency_ms()  # only "Average inference timings ... Inference: 79760.9"
    assert lat["mean"] == pytest.approx(79.7609)
    assert lat["std"] is None and lat["min"] is None and lat["max"] is None and lat["n"] is None
    r = _report("11")
    assert r.session_ms == pytest.approx(38.467) and r.first_run_ms is None


def test_latency_ms_tables_only_has_no_latency() -> None:
    lat = _report("07").latency_ms()
    assert all(lat[k] is None for k in ("median", "mean", "std", "min", "max", "n"))


def test_session_and_first_run_ms() -> None:
    r = _report("12")
    assert r.session_ms == pytest.approx(95.112) and r.first_run_ms == pytest.approx(237.814)
    assert r.params["Num threads"] == "4" and r.model_size_mb == pytest.approx(5.05872)
    assert r.peak_memory_mb == pytest.approx(90.25)


def test_ort_latency_ms() -> None:
    e = next(x for x in ORT if x["file"].startswith("onnxruntime_perf_test/04_"))
    r = parse_ort_perf_test(_text(e))
    lat = r.latency_ms()
    assert lat["median"] == pytest.approx(82.6095) and lat["median_source"] == "p50"
    assert lat["mean"] == pytest.approx(82.3382) and lat["std"] is None
    assert lat["min"] == pytest.approx(80.8129) and lat["p99"] == pytest.approx(83.8817)
    assert lat["n"] == 10 and r.session_ms == pytest.approx(1144.76)
    old = parse_ort_perf_test(_text(next(x for x in ORT if x["file"].startswith("onnxruntime_perf_test/03_"))))
    lat = old.latency_ms()
    assert lat["median"] == pytest.approx(83.8059) and lat["median_source"] == "avg"
    assert lat["n"] == 7160 and lat["min"] is None


# --- formats the captured set lacks (lines as TFLite 2.x prints them, from a published run) ----------


def test_peak_memory_via_periodic_monitoring() -> None:
    text = (
        "INFO: count=9 first=81913 curr=55502 min=55502 max=81913 avg=58984.7 std=8115\n"
        "INFO: count=1061 first=56576 curr=56299 min=54669 max=60236 avg=56265.8 std=982\n"
        "INFO: Inference timings in us: Init: 3337, First inference: 81913, Warmup (avg): 58984.7, "
        "Inference (avg): 56265.8\n"
        "INFO: Memory footprint delta from the start of the tool (MB): init=2.43359 overall=8.67578\n"
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 13.1797\n"
        "INFO: Memory status at the end of exeution:\n"
        "INFO: - VmRSS              : 13 MB\n"
    )
    r = parse_benchmark_model(text)
    assert r.memory == {"label": "Memory footprint delta", "init_mb": 2.43359, "overall_mb": 8.67578,
                        "peak_mb": 13.1797}
    assert r.peak_memory_mb == 13.1797 and r.runs is not None and r.runs.avg_us == 56265.8


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "",
    "ERROR: Could not open 'model.tflite'.\nERROR: Failed to load model\n",
    "/system/bin/sh: benchmark_model: not found\n",
])
def test_benchmark_model_without_timings_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="benchmark_model output has no timing lines"):
        parse_benchmark_model(text)


def test_bad_input_quotes_the_last_line() -> None:
    with pytest.raises(BadInput, match="Failed to load model"):
        parse_benchmark_model("STARTING!\nERROR: Failed to load model\n")


@pytest.mark.parametrize("text", [
    "",
    "Session creation time cost: 0.2 s\n"  # a crash right after the session was made
    "[E:onnxruntime:, sequential_executor.cc:514 ExecuteKernel] Non-zero status code returned",
])
def test_ort_without_timings_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="onnxruntime_perf_test output has no timing lines"):
        parse_ort_perf_test(text)


def test_benchmark_model_text_is_not_ort_output() -> None:
    with pytest.raises(BadInput):
        parse_ort_perf_test(_text(BM[0]))
    with pytest.raises(BadInput):
        parse_benchmark_model(_text(ORT[-1]))


def test_to_dict_round_trips_through_json() -> None:
    d = json.loads(json.dumps(_report("01").to_dict()))
    assert d["runs"]["count"] == 50 and len(d["ops"]) == 31 and d["latency_ms"]["n"] == 50
