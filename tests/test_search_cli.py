"""``edgelat search`` and ``edgelat export`` through the CLI, on real SQLite tables."""

from __future__ import annotations

import csv
import ast
import json
import sqlite3
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from help_data import NB201_EVERY_ARCH
from search_helpers import TINY_SPACE_YAML, import_nb201, profile_space, read_help

from edgelat.cli import main
from edgelat.config import db_path
from edgelat.lut.store import model_rows, open_db


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def fails(*args: str, match: str) -> str:
    result = run(*args, ok=False)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def pixel3():
    """NAS-Bench-201 latencies of the real pixel3 column, imported as arch measurements."""
    db = open_db()
    import_nb201(db, "pixel3")
    return db


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    """A small YAML space whose whole vocabulary was really profiled on ``local``."""
    import os

    root = tmp_path_factory.mktemp("tiny")
    space_file = root / "tiny.yaml"
    space_file.write_text(TINY_SPACE_YAML)
    old = os.environ.get("EDGELAT_HOME")
    os.environ["EDGELAT_HOME"] = str(root / "home")
    try:
        from edgelat.profiler.spaces import get_space

        db = open_db()
        profile_space(db, get_space(str(space_file)))
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.conn.close()
    finally:
        if old is None:
            os.environ.pop("EDGELAT_HOME")
        else:
            os.environ["EDGELAT_HOME"] = old
    return space_file, root / "home" / "edgelat.db"


def install_db(source: Path) -> None:
    """Copy a prepared database into this test's EDGELAT_HOME (sqlite backup: WAL-safe)."""
    dest = db_path()
    with sqlite3.connect(source) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)


# ------------------------------------------------------------------ nasbench201 on imported pixel3
def test_search_json_contract(pixel3):
    out = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "12",
                         "--generations", "50", "--json").stdout)
    assert out["device"] == "pixel3" and out["space"] == "nasbench201"
    assert out["objective"]["proxy"] is True
    assert out["latency_source"]["kind"] == "imported"
    assert out["constraints"] == {"max_latency_ms": 12.0}
    assert 1 <= len(out["results"]) <= 5
    archs, ms = read_help(NB201_EVERY_ARCH, "pixel3")
    measured = dict(zip(archs, ms))
    for r in out["results"]:
        assert set(r) >= {"arch", "predicted_latency_ms", "score", "flops", "params", "measured_latency_ms"}
        assert r["predicted_latency_ms"] <= 12.0
        assert r["predicted_latency_ms"] == pytest.approx(measured[r["arch"]])  # the imported measurement
        assert r["measured_latency_ms"] is None
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_with_accuracy_csv(pixel3, tmp_path):
    archs, ms = read_help(NB201_EVERY_ARCH, "pixel3")
    # three listed architectures under the budget and one over it; exclude mode must pick
    # the best listed one that fits
    fast = [a for a, m in zip(archs, ms) if m < 12][:3]
    slow = next(a for a, m in zip(archs, ms) if m > 15)
    path = tmp_path / "accuracies.csv"
    path.write_text("arch,accuracy\n" + f"{fast[0]},71.5\n{fast[1]},90.25\n{fast[2]},80.0\n{slow},99.0\n")
    out = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "12",
                         "--accuracy", str(path), "--unknown-archs", "exclude", "--generations", "20",
                         "--json").stdout)
    assert out["objective"]["proxy"] is False and out["objective"]["name"] == "csv:accuracies.csv"
    assert out["results"][0]["arch"] == fast[1] and out["results"][0]["score"] == 90.25
    assert {r["arch"] for r in out["results"]} <= set(fast)
    near = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "12",
                          "--accuracy", str(path), "--generations", "5", "--json").stdout)
    assert near["objective"]["proxy"] is True  # unlisted architectures borrow a neighbour's accuracy


def test_pareto_csv_and_plot(pixel3, tmp_path):
    front_csv, front_png = tmp_path / "front.csv", tmp_path / "front.png"
    out = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--pareto", "--max-latency", "12",
                         "--generations", "15", "--population", "40", "--out", str(front_csv), "--plot",
                         str(front_png), "--json").stdout)
    assert out["strategy"]["name"] == "nsga2"
    lat = [r["predicted_latency_ms"] for r in out["results"]]
    score = [r["score"] for r in out["results"]]
    assert lat == sorted(lat) and all(b > a for a, b in zip(score, score[1:])) and max(lat) <= 12
    with open(front_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arch"] for r in rows] == [r["arch"] for r in out["results"]]
    assert float(rows[0]["predicted_latency_ms"]) == pytest.approx(lat[0])
    assert front_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and front_png.stat().st_size > 10_000


def test_plot_draws_the_constraint(tmp_path):
    from edgelat.search.report import plot_front
    from edgelat.search.result import Candidate

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        ax = fig.axes[0]
        seen["vlines"] = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        seen["labels"] = ax.get_legend_handles_labels()[1]
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        c = Candidate("a", np.zeros(1), 10.0, 1.0, 1.0, 1.0, 1.0, measured_latency_ms=11.0)
        plot_front(tmp_path / "p.png", [c], (np.array([5.0, 20.0]), np.array([0.5, 2.0])), 12.5, "dev", "sp", "score")
    finally:
        plt.Figure.savefig = real_savefig
    assert seen["vlines"] == [12.5]
    assert "max latency 12.5 ms" in seen["labels"] and "measured on device" in seen["labels"]


def test_human_output_labels_the_proxy(pixel3):
    res = run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "8", "--generations", "5")
    assert "proxy, not a measured accuracy" in res.stdout
    assert "|+|" in res.stdout  # full arch strings are printed


def test_validate_on_an_imported_device_is_refused(pixel3):
    fails("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "12", "--validate", "2",
          match="known only from imported measurements")


def test_compare_flops_on_imported_device_is_unmeasured(pixel3):
    out = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "8",
                         "--generations", "20", "--compare-flops", "--json").stdout)
    cmp_ = out["compare_flops"]
    lc, fc = cmp_["latency_constrained"], cmp_["flops_constrained"]
    assert cmp_["flops_budget"] == lc["flops"] and fc["flops"] <= lc["flops"]
    assert lc["meets_budget_predicted"] is True
    assert lc["measured_latency_ms"] is None and "not measured" in cmp_["note"]


@pytest.mark.parametrize("args,match", [
    (("--space", "nasbench201", "--device", "nosuch", "--max-latency", "5"), "unknown device 'nosuch'"),
    (("--space", "resnet", "--device", "local", "--max-latency", "5"), "unknown search space 'resnet'"),
    (("--space", "nasbench201", "--device", "local"), "give --max-latency"),
    (("--space", "nasbench201", "--device", "local", "--max-latency", "-3"), "--max-latency must be positive"),
    (("--space", "nasbench201", "--device", "local", "--max-latency", "5"),
     "edgelat profile ops --device local --preset mobilenet"),
    (("--space", "nasbench201", "--device", "local", "--max-latency", "5", "--plot", "/nonexistent/dir/x.png"),
     "does not exist"),
    (("--space", "nasbench201", "--device", "local", "--max-latency", "5", "--accuracy", "/nonexistent.csv"),
     "cannot read accuracy file"),
    (("--space", "nasbench201", "--device", "local", "--pareto", "--compare-flops"), "drop --pareto"),
])
def test_search_errors_are_one_line(args, match):
    fails("search", *args, match=match)


def test_no_energy_rows_refuses_energy_budget(pixel3):
    fails("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "12", "--max-energy", "5",
          match="cannot constrain energy")


# ------------------------------------------------------------------ a really profiled table on local
def test_search_validate_measures_and_stores(tiny_db):
    space_file, source = tiny_db
    install_db(source)
    out = json.loads(run("search", "--space", str(space_file), "--device", "local", "--max-latency", "0.5",
                         "--generations", "30", "--validate", "2", "--validate-seconds", "0.3", "--json").stdout)
    assert out["latency_source"]["kind"] == "table" and out["latency_source"]["missing_kernels"] == 0
    validated = out["results"][:2]
    for r in validated:
        assert r["measured_latency_ms"] > 0
        v = r["validation"]
        assert v["meets_budget_measured"] == (r["measured_latency_ms"] <= 0.5)
        assert v["n"] >= 3 and v["format"] == "onnx"
    assert all(r["measured_latency_ms"] is None for r in out["results"][2:])
    rows = {r["model_ref"]: r for r in model_rows(open_db(), "local")}
    for r in validated:
        stored = rows[f"tiny-test:{r['arch']}"]
        assert stored["median_ms"] == pytest.approx(r["measured_latency_ms"])


def test_pareto_validation_spreads_along_the_front(tiny_db):
    space_file, source = tiny_db
    install_db(source)
    out = json.loads(run("search", "--space", str(space_file), "--device", "local", "--pareto", "--population", "20",
                         "--generations", "10", "--validate", "2", "--validate-seconds", "0.2", "--json").stdout)
    res = out["results"]
    assert len(res) >= 3
    measured = [i for i, r in enumerate(res) if r["measured_latency_ms"] is not None]
    assert measured == [0, len(res) - 1]  # the fastest and the best-scoring ends of the front
    assert res[0]["validation"]["meets_budget_measured"] is None  # no latency bound was given


def test_another_runtime_needs_its_own_table(tiny_db):
    space_file, source = tiny_db
    install_db(source)
    # a LiteRT table does not exist: the error says so instead of mixing runtimes
    fails("search", "--space", str(space_file), "--device", "local", "--max-latency", "0.5", "--runtime", "litert",
          match="no latency source")


def test_energy_budget_without_a_sensor_quotes_the_table(tiny_db):
    space_file, source = tiny_db
    install_db(source)
    from edgelat.lut.store import kernel_rows

    notes = {r["energy_note"] for r in kernel_rows(open_db(), "local")}
    if any(r["energy_mj"] is not None for r in kernel_rows(open_db(), "local")):
        pytest.skip("this machine has an energy sensor")
    fails("search", "--space", str(space_file), "--device", "local", "--max-latency", "0.5", "--max-energy", "1",
          match=f"cannot constrain energy on 'local': {sorted(notes)[0]}")


def test_search_prices_at_the_speed_check_s_factor_as_predict_does(tiny_db, monkeypatch):
    """Without a build's held-out models the check says why and changes nothing; with a factor,
    each architecture's figure is the build's times it (here one factor for every kernel kind:
    a budget that never binds keeps the same winners, so the figures compare one to one)."""
    space_file, source = tiny_db
    install_db(source)
    args = ["search", "--space", str(space_file), "--device", "local", "--max-latency", "1000", "--generations", "5",
            "--population", "12", "--json"]
    plain = json.loads(run(*args).stdout)
    speed = plain["latency_source"]["speed"]
    assert speed["factor"] is None and "left 0 held-out models" in speed["note"] and speed["note"] in plain["notes"]
    from edgelat.predictors import speed_probe
    from edgelat.predictors.speed import SpeedCheck

    monkeypatch.setattr(speed_probe, "check_speed",
                        lambda db, device, config, client=None: SpeedCheck(0.5, note="speed check: half as long now"))
    scaled = json.loads(run(*args).stdout)
    assert scaled["latency_source"]["speed"]["factor"] == 0.5 and "speed check: half as long now" in scaled["notes"]
    assert [r["arch"] for r in scaled["results"]] == [r["arch"] for r in plain["results"]]
    for a, b in zip(scaled["results"], plain["results"]):
        assert a["predicted_latency_ms"] == pytest.approx(0.5 * b["predicted_latency_ms"], rel=1e-4)  # printed rounded
    off = json.loads(run(*args, "--no-speed-check").stdout)
    assert off["latency_source"]["speed"] is None
    assert [r["predicted_latency_ms"] for r in off["results"]] == \
        pytest.approx([r["predicted_latency_ms"] for r in plain["results"]], rel=1e-4)


def test_compare_flops_measures_both(tiny_db):
    space_file, source = tiny_db
    install_db(source)
    out = json.loads(run("search", "--space", str(space_file), "--device", "local", "--max-latency", "0.3",
                         "--generations", "20", "--compare-flops", "--validate-seconds", "0.3", "--json").stdout)
    cmp_ = out["compare_flops"]
    for key in ("latency_constrained", "flops_constrained"):
        assert cmp_[key]["measured_latency_ms"] > 0
        assert isinstance(cmp_[key]["meets_budget_measured"], bool)
    assert cmp_["flops_constrained"]["flops"] <= cmp_["flops_budget"]


@pytest.mark.slow
def test_ofa_search_end_to_end_on_local(tmp_path):
    """OFA-MBv3: kernels measured at resolution 128 (plus stem/head at a few more), the
    rest priced by the kernel predictor fitted on them; search, validate, store."""
    from edgelat.values import MeasurementProtocol, RuntimeConfig
    from edgelat.devices.registry import Registry
    from edgelat.predictors.kernel import KernelPredictor
    from edgelat.profiler.jobs import profile_kernels
    from edgelat.profiler.spaces import get_space

    space = get_space("ofa-mbv3")
    vocab = space.kernel_vocabulary()
    pop = space.sample(np.random.default_rng(0), 20000)
    pop[:, space.r_gene] = 0  # resolution 128
    ids = np.unique(space.kernel_ids(pop))
    specs = [vocab[i] for i in ids if i >= 0]
    specs += [k for k in vocab if k.op in ("conv2d", "global-avgpool") and k.h in (4, 5, 6, 7, 136, 176, 224, 68, 88, 112)]
    db = open_db()
    with Registry(db).connect("local") as client:
        summary = profile_kernels(db, "local", client, specs, RuntimeConfig(),
                                  MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.2))
    assert not summary.failed
    KernelPredictor.from_table(db, "local", RuntimeConfig()).save(db, "local", RuntimeConfig())
    png = tmp_path / "ofa.png"
    out = json.loads(run("search", "--space", "ofa-mbv3", "--device", "local", "--max-latency", "6",
                         "--validate", "1", "--validate-seconds", "0.5", "--plot", str(png), "--json").stdout)
    assert out["latency_source"]["kind"] == "table" and out["latency_source"]["missing_kernels"] > 0
    best = out["results"][0]
    assert best["predicted_latency_ms"] <= 6 and best["measured_latency_ms"] > 0
    assert any(r["model_ref"] == f"ofa-mbv3:{best['arch']}" for r in model_rows(open_db(), "local"))
    assert png.exists()


# ------------------------------------------------------------------ export
OFA_ARCH = str({"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 3] * 5, "d": [2, 3, 4, 2, 3], "r": 128})


def test_export_onnx_and_tflite(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    onnx_path, tfl_path = tmp_path / "net.onnx", tmp_path / "net.tflite"
    info = json.loads(run("export", "--space", "ofa-mbv3", "--arch", OFA_ARCH, "--out", str(onnx_path), "--json").stdout)
    assert info["format"] == "onnx" and info["bytes"] == onnx_path.stat().st_size and json.loads(info["arch"]) == ast.literal_eval(OFA_ARCH)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 128, 128]
    res = run("export", "--space", "ofa-mbv3", "--arch", OFA_ARCH, "--out", str(tfl_path))
    assert "wrote" in res.stdout
    interp = Interpreter(model_path=str(tfl_path))
    interp.allocate_tensors()
    assert list(interp.get_input_details()[0]["shape"]) == [1, 128, 128, 3]


def test_export_nasbench201_onnx_runs(tmp_path):
    path = tmp_path / "cell.onnx"
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"
    run("export", "--space", "nasbench201", "--arch", arch, "--out", str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.ones((1, 3, 32, 32), dtype=np.float32)})[0]
    assert out.shape == (1, 10)


@pytest.mark.parametrize("args,match", [
    (("--space", "nasbench201", "--arch", "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "--out", "x.tflite"),
     "not supported for the nasbench201 space"),
    (("--space", "ofa-mbv3", "--arch", "{'ks': [3]}", "--out", "x.onnx"), "architecture keys must be"),
    (("--space", "ofa-mbv3", "--arch", OFA_ARCH, "--out", "x.pt"), "name it *.onnx or *.tflite"),
    (("--space", "ofa-mbv3", "--arch", OFA_ARCH, "--out", "/nonexistent/x.onnx"), "does not exist"),
])
def test_export_errors_leave_no_file(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    fails("export", *args, match=match)
    assert list(tmp_path.iterdir()) == []
