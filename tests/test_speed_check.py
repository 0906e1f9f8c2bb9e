"""The speed check: a warm prediction measures the build's held-out whole models again on the
device and scales its figure by how much faster or slower they run now (real runs on `local`)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from edgelat.cli import main
from edgelat.errors import AgentUnreachable
from edgelat.lut.store import model_median, open_db
from edgelat.on_demand import predict_model_file
from edgelat.predictors.speed_probe import check_speed
from edgelat.predictors import sampling
from edgelat.predictors.calibration import record_model
from edgelat.predictors.graph import split_model
from edgelat.predictors.speed import SpeedCheck
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import model_ref_for, profile_model
from edgelat.profiler.networks import tiny_net
from edgelat.values import MeasurementProtocol, RuntimeConfig

CONFIG = RuntimeConfig(threads=1)
SHORT = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, target_rel_ci=0.1, max_seconds=0.2)
PROBES = [("tiny-56", "holdout", tiny_net(56)), ("tiny-72", "holdout", tiny_net(72))]
SLOWER_THEN = 3.0  # the stored "build" rows: the device ran the probes this many times slower then


def test_the_factor_is_the_geometric_mean_of_now_over_then_of_the_probes_that_ran():
    check = SpeedCheck.of({"a": (4.0, 1.0), "b": (1.0, 1.0), "c": (2.0, None)})
    assert check.factor == pytest.approx(0.5)
    assert "2 of its build's held-out models 50.0% faster" in check.note
    assert [p["name"] for p in check.probes] == ["a", "b", "c"] and check.probes[2]["now_ms"] is None
    one = SpeedCheck.of({"a": (4.0, 1.0), "c": (2.0, None)})
    assert one.factor is None and one.note.startswith("no speed check: 1 of the build's held-out models")


def test_each_kind_gets_its_own_factor_pulled_toward_the_plain_one():
    """Two MobileNet-like probes 10% faster, two plain ones unchanged: blocks get a factor below
    the plain one, other kernels one above it, each pulled toward it by KIND_PRIOR."""
    from edgelat.predictors.speed import KIND_PRIOR

    check = SpeedCheck.of({"m1": (2.0, 1.8), "m2": (4.0, 3.6), "o1": (10.0, 10.0), "o2": (5.0, 5.0)},
                          {"m1": 1.0, "m2": 1.0, "o1": 0.0, "o2": 0.0})
    g = math.sqrt(0.9)  # the plain factor: geometric mean over the four
    assert check.factor == pytest.approx(g)
    a, b = check.by_kind
    assert a == pytest.approx(math.exp((2 * math.log(0.9) + KIND_PRIOR * math.log(g)) / (2 + KIND_PRIOR)))
    assert b == pytest.approx(math.exp(KIND_PRIOR * math.log(g) / (2 + KIND_PRIOR)))
    assert check.factor_for(1.0) == pytest.approx(a) and check.factor_for(0.0) == pytest.approx(b)
    assert check.factor_for(0.5) == pytest.approx(math.sqrt(a * b))
    assert "for inverted-residual blocks" in check.note
    assert SpeedCheck.of({"m1": (2.0, 1.8), "o1": (10.0, 10.0)}).by_kind is None  # no shares: one factor


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A device whose build measured two held-out models (stored SLOWER_THEN times slower than they
    run now, as if the device had been that much slower when the predictor was built), and a small
    model file whose kernels are in the table."""
    from edgelat.devices.registry import Registry

    monkeypatch.setattr(sampling, "default_models", lambda: list(PROBES))
    db = open_db()
    with Registry(db).connect("local") as client:
        for name, role, specs in PROBES:
            data = build_model(specs, "onnx", seed=0)
            ref = model_ref_for(data)
            record_model(db, "local", CONFIG, ref, name, role, "onnx", split_model(data, "onnx").kernels)
            profile_model(db, "local", client, data, "onnx", CONFIG, SHORT, name=name)
            # as if built two hours ago (a build younger than MIN_AGE_S is not checked)
            db.execute("update model_measurements set median_ms = median_ms * ?, measured_at = measured_at - 7200 "
                       "where model_ref = ?", [SLOWER_THEN, ref])
            db.conn.commit()
    path = tmp_path / "net.onnx"
    path.write_bytes(build_model(tiny_net(64, classes=7), "onnx"))
    predict_model_file(db, "local", CONFIG, path, protocol=SHORT, speed_check=False)  # its kernels join the table
    return db, path


def test_a_warm_prediction_is_scaled_by_the_speed_check(built):
    db, path = built
    plain = predict_model_file(db, "local", CONFIG, path, speed_check=False)
    assert plain["speed"] is None and {k["source"] for k in plain["kernels"]} == {"table"}
    out = predict_model_file(db, "local", CONFIG, path)
    speed = out["speed"]
    then = {p["name"]: p["then_ms"] for p in speed["probes"]}
    assert set(then) == {"tiny-56", "tiny-72"} and all(p["now_ms"] > 0 for p in speed["probes"])
    for name, _, specs in PROBES:  # "then" is the build's stored row, untouched by the check
        assert then[name] == model_median(db, "local", CONFIG, model_ref_for(build_model(specs, "onnx", seed=0)))
    expect = math.exp(sum(math.log(p["now_ms"] / p["then_ms"]) for p in speed["probes"]) / 2)
    assert speed["factor"] == pytest.approx(expect) and speed["factor"] < 0.6  # the device is ~3x faster "now"
    assert out["latency_ms"] == pytest.approx(plain["latency_ms"] * speed["factor"])
    assert out["kernels_sum_ms"] == pytest.approx(plain["kernels_sum_ms"])  # the table's figures, as stored
    assert speed["note"] in out["notes"] and "faster now" in speed["note"]


def test_kernels_measured_now_are_not_scaled_twice(built, tmp_path):
    """A kernel measured during the prediction already runs at today's speed: the factor applies to
    the build's figures only (here the table's and its regressors'), not to what was measured now."""
    db, _ = built
    fresh = tmp_path / "fresh.onnx"
    fresh.write_bytes(build_model(tiny_net(88, classes=5), "onnx"))
    out = predict_model_file(db, "local", CONFIG, fresh, protocol=SHORT)
    now = sum(k["predicted_ms"] for k in out["kernels"] if k["source"] == "measured-now")
    then = sum(k["predicted_ms"] for k in out["kernels"] if k["source"] != "measured-now")
    factor = out["speed"]["factor"]
    assert now > 0 and factor < 0.6
    assert out["latency_ms"] == pytest.approx(now + factor * then)


def test_no_speed_check_says_why(built, monkeypatch):
    db, path = built
    sustained = predict_model_file(db, "local", CONFIG, path, state="sustained")
    assert sustained["speed"]["factor"] is None and "sustained state" in sustained["speed"]["note"]
    off = predict_model_file(db, "local", CONFIG, path, measure_missing=False)
    assert off["speed"]["factor"] is None and "measuring on the device was turned off" in off["speed"]["note"]
    from edgelat.config import db_path, reading_db

    with reading_db(db_path()):  # as a read through a hub runs: nothing measured for a copy of its tables
        copy = predict_model_file(db, "local", CONFIG, path)
    assert copy["speed"]["factor"] is None and "the tables are a hub's copy" in copy["speed"]["note"]
    assert copy["latency_ms"] == pytest.approx(off["latency_ms"])

    class Gone:  # the device went away: the runner reports it lost; the build's figure stands
        def put_model(self, data):
            raise AgentUnreachable("the agent stopped answering")

        def close(self):
            pass

    lost = check_speed(db, "local", CONFIG, client=Gone())
    assert lost.factor is None and "was lost while measuring" in lost.note and "stopped answering" in lost.note
    monkeypatch.setattr(sampling, "default_models", lambda: [(n, "holdout", tiny_net(40)) for n, _, _ in PROBES])
    rebuilt = check_speed(db, "local", CONFIG)  # another builder version: the bytes no longer match the rows
    assert rebuilt.factor is None and "left 0 held-out models" in rebuilt.note


def test_cli_predict_speed_check_and_its_opt_out(built):
    _, path = built
    r = CliRunner().invoke(main, ["predict", str(path), "--device", "local", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["speed"]["factor"] < 0.6 and len(out["speed"]["probes"]) == 2
    r = CliRunner().invoke(main, ["predict", str(path), "--device", "local", "--threads", "1", "--json",
                                  "--no-speed-check"])
    assert r.exit_code == 0 and json.loads(r.stdout)["speed"] is None
    assert json.loads(r.stdout)["latency_ms"] == pytest.approx(out["latency_ms"] / out["speed"]["factor"])
    text = CliRunner().invoke(main, ["predict", str(path), "--device", "local", "--threads", "1"]).stdout
    assert "speed check: the device ran 2 of its build's held-out models" in text
    bad = CliRunner().invoke(main, ["predict", "--space", "nasbench201", "--arch", "x", "--device", "local",
                                    "--no-speed-check"])
    assert bad.exit_code == 1 and bad.stderr.strip() == "error: --no-speed-check goes with a model file"


def test_checks_of_the_last_minutes_are_combined_probe_by_probe(built, monkeypatch):
    import sqlite3
    import time

    from edgelat.lut import predictors_store
    from edgelat.predictors.speed import RECENT_S

    db, _ = built
    first = check_speed(db, "local", CONFIG)
    assert first.checks == 1 and "median of" not in first.note
    second = check_speed(db, "local", CONFIG)
    stored = predictors_store.recent_speed_probes(db, "local", CONFIG, 0.0)
    assert len(stored) == 4  # two checks of two probes, each beside the build's figure it was compared with
    refs = {model_ref_for(build_model(specs, "onnx", seed=0)): name for name, _, specs in PROBES}
    for p in second.probes:
        values = sorted(r["now_ms"] for r in stored if refs[r["model_ref"]] == p["name"])
        assert p["now_ms"] == pytest.approx(sum(values) / 2)  # the median of two
        assert all(r["then_ms"] == p["then_ms"] for r in stored if refs[r["model_ref"]] == p["name"])
    assert second.checks == 2 and "the median of 2 checks in the last 10 minutes" in second.note
    # checks older than the window, and checks against another build's figures, are left out
    db.execute("update speed_checks set measured_at = ?", [time.time() - RECENT_S - 5])
    db.execute("insert into speed_checks (device, config_key, model_ref, then_ms, now_ms, measured_at) "
               "select device, config_key, model_ref, then_ms * 2, now_ms * 10, ? from speed_checks", [time.time()])
    db.conn.commit()
    third = check_speed(db, "local", CONFIG)
    assert third.checks == 1
    # a database that takes no write: this check alone, and still a factor
    monkeypatch.setattr(predictors_store, "save_speed_probes",
                        lambda *a, **k: (_ for _ in ()).throw(sqlite3.OperationalError("database or disk is full")))
    full = check_speed(db, "local", CONFIG)
    assert full.factor is not None and full.factor < 0.6 and full.checks == 1


def test_a_build_younger_than_an_hour_is_not_checked(built):
    from edgelat.predictors.speed import MIN_AGE_S

    db, path = built
    db.execute("update model_measurements set measured_at = ?", [__import__("time").time() - MIN_AGE_S / 2])
    db.conn.commit()
    young = check_speed(db, "local", CONFIG)
    assert young.factor is None and "held-out models 30 minutes ago" in young.note
    out = predict_model_file(db, "local", CONFIG, path)
    assert out["speed"]["factor"] is None
    assert out["latency_ms"] == pytest.approx(predict_model_file(db, "local", CONFIG, path, speed_check=False)["latency_ms"])
