"""One state, said out loud: ``profile model`` and ``predict`` agree on which device state they
mean (warm by default, sustained with ``--sustained``), record it on rows and answers, and
``predict`` picks the calibration of that state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgelat.values import RuntimeConfig
from edgelat.cli import main
from edgelat.lut.store import model_rows, open_db
from edgelat.lut.predictors_store import CALIBRATIONS as CAL_TABLE
from edgelat.predictors.calibration import Calibration, measured_models, record_model
from edgelat.profiler import networks
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import model_ref_for
from edgelat.profiler.states import state_ref

QUICK = ["--max-seconds", "0.3", "--min-runs", "10", "--warmup", "1"]
CONFIG = RuntimeConfig()
NET = networks.tiny_net(48)


def run(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def _ratio(ratio: float, state: str) -> Calibration:
    """A ``ratio`` calibration whose coefficient is ``ratio`` (fitted on exact data)."""
    sums = np.array([1.0, 2.0, 3.0, 4.0])
    cal = Calibration(forms=("ratio",)).fit(sums, [5, 5, 5, 5], ratio * sums * np.array([1.01, 0.99, 1.0, 1.0]))
    cal.state_ = state
    return cal


def test_profile_and_predict_name_one_state_and_predict_picks_its_calibration(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(build_model(NET, "onnx"))
    ref = model_ref_for(path.read_bytes())

    warm = json.loads(run("profile", "model", path, "--device", "local", "--json", *QUICK).stdout)
    assert warm["state"] == "warm" and warm["environment"]["state"] == "warm"
    sustained = json.loads(run("profile", "model", path, "--device", "local", "--sustained", "--settle-s", "0.3",
                               "--json", *QUICK).stdout)
    assert sustained["state"] == "sustained" and sustained["environment"]["settled_s"] >= 0.3
    db = open_db()
    rows = {r["model_ref"]: r for r in model_rows(db, "local", CONFIG)}
    # both states kept, side by side: the sustained measurement does not overwrite the warm one
    assert set(rows) == {ref, state_ref(ref, "sustained")}
    assert rows[ref]["median_ms"] == warm["latency_ms"]["median"]
    assert rows[state_ref(ref, "sustained")]["median_ms"] == sustained["latency_ms"]["median"]
    assert json.loads(rows[state_ref(ref, "sustained")]["environment_json"])["state"] == "sustained"
    text = run("profile", "model", path, "--device", "local", "--sustained", "--settle-s", "0", *QUICK).stdout
    assert ", sustained: median" in text

    # one calibration per state, stored in one row; predict takes the one of the state asked for
    _ratio(1.25, "warm").save(db, "local", CONFIG)
    _ratio(2.0, "sustained").save(db, "local", CONFIG)
    assert Calibration.states(db, "local", CONFIG) == ["sustained", "warm"]
    p_warm = json.loads(run("predict", path, "--device", "local", "--json").stdout)
    p_sus = json.loads(run("predict", path, "--device", "local", "--sustained", "--json").stdout)
    assert p_warm["state"] == "warm" and p_sus["state"] == "sustained"
    assert p_warm["kernels_sum_ms"] == pytest.approx(p_sus["kernels_sum_ms"])
    assert p_warm["latency_ms"] == pytest.approx(1.25 * p_warm["kernels_sum_ms"], rel=0.02)
    assert p_sus["latency_ms"] == pytest.approx(2.0 * p_sus["kernels_sum_ms"], rel=0.02)
    # each answer sits next to the measurement of its own state
    assert p_warm["measured_ms"] == warm["latency_ms"]["median"]
    latest = {r["model_ref"]: r["median_ms"] for r in model_rows(db, "local", CONFIG)}
    assert p_sus["measured_ms"] == latest[state_ref(ref, "sustained")]
    assert ", warm:" in run("predict", path, "--device", "local").stdout
    assert ", sustained:" in run("predict", path, "--device", "local", "--sustained").stdout


def test_calibrations_of_two_states_share_a_row_and_an_old_row_serves_both(tmp_path):
    db = open_db(tmp_path / "edgelat.db")
    assert Calibration.load(db, "local", CONFIG) is None
    _ratio(1.5, "sustained").save(db, "local", CONFIG)
    assert Calibration.load(db, "local", CONFIG, "warm") is None  # a state never fitted is not borrowed
    _ratio(1.1, "warm").save(db, "local", CONFIG)
    warm, sus = Calibration.load(db, "local", CONFIG), Calibration.load(db, "local", CONFIG, "sustained")
    assert (warm.state_, sus.state_) == ("warm", "sustained")
    assert warm.coef_[0] == pytest.approx(1.1, rel=0.02) and sus.coef_[0] == pytest.approx(1.5, rel=0.02)
    (row,) = db[CAL_TABLE].rows
    assert json.loads(row["coef_json"])[0] == pytest.approx(1.1, rel=0.02)  # the columns hold the default state's
    # a row written before states were kept: used for either state, marked as of no known state
    db[CAL_TABLE].update(("local", CONFIG.key()), {"meta_json": json.dumps({"n_models": 4, "loo_mape": {"ratio": 0.01}})})
    old = Calibration.load(db, "local", CONFIG, "sustained")
    assert old is not None and old.state_ is None and old.coef_[0] == pytest.approx(1.1, rel=0.02)
    with pytest.raises(Exception, match="unknown state"):
        Calibration.load(db, "local", CONFIG, "hot")


def test_measured_models_of_a_state_are_its_own_rows(tmp_path):
    from edgelat.values import BenchmarkResult, LatencySummary

    db = open_db(tmp_path / "edgelat.db")
    from edgelat.lut.store import add_model_result

    record_model(db, "local", CONFIG, "ref1", "net", "calibration", "onnx", NET)
    for ref, ms in (("ref1", 2.0), (state_ref("ref1", "sustained"), 2.4)):
        lat = LatencySummary(median=ms, mean=ms, std=0.01, p10=ms, p90=ms, n=10, rel_ci=0.01, stable=True)
        add_model_result(db, "local", ref, "net", BenchmarkResult(model_sha256="x", config=CONFIG, latency=lat,
                                                                  tag="net"))
    assert [m["measured_ms"] for m in measured_models(db, "local", CONFIG)] == [2.0]
    assert [m["measured_ms"] for m in measured_models(db, "local", CONFIG, state="sustained")] == [2.4]


def test_state_options_refuse_what_does_not_go_together(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(build_model(NET, "onnx"))
    bad = run("profile", "model", path, "--device", "local", "--settle-s", "5", ok=False)
    assert bad.exit_code != 0 and "--settle-s goes with --sustained" in bad.stderr and "Traceback" not in bad.output
    bad = run("predict", "--space", "nasbench201", "--arch", "x", "--device", "local", "--sustained", ok=False)
    assert bad.exit_code != 0 and "--sustained goes with a model file" in bad.stderr


def test_the_api_says_the_state_too(tmp_path):
    import edgelat

    path = tmp_path / "tiny.onnx"
    path.write_bytes(build_model(NET, "onnx"))
    dev = edgelat.device("local")
    warm = dev.profile_model(path, max_seconds=0.3)
    sustained = dev.profile_model(path, max_seconds=0.3, sustained=True, settle_s=0.2)
    assert (warm.state, sustained.state) == ("warm", "sustained")
    assert sustained.to_dict()["state"] == "sustained" and sustained.environment["settled_s"] >= 0.2
    p = edgelat.predictor("local")
    a, b = p.predict(path), p.predict(path, sustained=True)
    assert (a.state, b.state) == ("warm", "sustained") and a.to_dict()["state"] == "warm"
    assert a.details["measured_ms"] == warm.latency_ms.median and b.details["measured_ms"] == sustained.latency_ms.median
