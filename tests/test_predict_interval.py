"""``predict MODEL``: a 90% interval from the build's own out-of-sample errors, the coverage of the
total by source, and ``--measure-if-unsure`` measuring what makes the interval wide.

Everything is measured for real on ``local``: the table holds tiny-net kernels at other
resolutions than the predicted model's, so the model's kernels are priced by the regressors
fitted on them; the calibration is fitted on whole tiny nets measured on ``local``.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.cli import main
from edgelat.devices.registry import Registry
from edgelat.lut.store import kernel_rows, open_db
from edgelat.predictors.calibration import Calibration, group_sums, model_weights
from edgelat.predictors.kernel import KernelPredictor
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import profile_kernels, profile_model
from edgelat.profiler.networks import tiny_net

CONFIG = RuntimeConfig(threads=1)
FAST = MeasurementProtocol(warmup=2, min_runs=5, max_runs=50, max_seconds=0.3, target_rel_ci=0.05)
TRAIN_RES = (48, 56, 72, 88, 104, 120)


def run(*args) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout) if "--json" in args else {"text": result.stdout}


@pytest.fixture()
def built(edgelat_home, tmp_path):
    """A table of tiny-net kernels, regressors fitted on it, and a calibration from whole tiny nets."""
    db = open_db()
    specs = [k for r in TRAIN_RES for k in tiny_net(r)]
    with Registry(db).connect("local") as client:
        job = profile_kernels(db, "local", client, specs, CONFIG, FAST)
        assert not job.failed and not job.interrupted
        kp = KernelPredictor.from_table(db, "local", CONFIG)
        kp.save(db, "local", CONFIG)
        sums, counts, weights, measured = [], [], [], []
        for r in TRAIN_RES:
            net = tiny_net(r)
            res = profile_model(db, "local", client, build_model(net, "onnx"), "onnx", CONFIG, FAST)
            sums.append(group_sums(net, kp.predict_specs(net)))
            counts.append(len(net))
            weights.append(model_weights(net))
            measured.append(res.latency.median)
    cal = Calibration(forms=("identity", "ratio", "affine")).fit(sums, counts, measured, weights)
    assert not cal.is_identity
    cal.save(db, "local", CONFIG)
    model = tmp_path / "tiny80.onnx"
    model.write_bytes(build_model(tiny_net(80), "onnx"))  # 80: a resolution the table never saw
    return db, model


def test_interval_and_coverage_then_measure_if_unsure(built):
    db, model = built
    before = run("predict", model, "--device", "local", "--json")
    assert before["calibrated"] is True
    low, mid, high = before["latency_ms_low"], before["latency_ms"], before["latency_ms_high"]
    assert 0 < low < mid < high
    cov = before["coverage"]
    assert set(cov) == {"table", "regressor", "measured-now"} and sum(cov.values()) == pytest.approx(1.0, abs=1e-5)
    assert cov["regressor"] > 0.5  # the model's kernels are not in the table
    assert before["interval"].startswith("90% interval: calibration ±")
    keys_before = {r["kernel_key"] for r in kernel_rows(db, "local", CONFIG)}

    after = run("predict", model, "--device", "local", "--measure-if-unsure", "--json")
    assert after["coverage"]["measured-now"] > 0 and after["coverage"]["regressor"] < cov["regressor"]
    measured_now = set(after["measured_now"])
    assert measured_now and measured_now <= {r["kernel_key"] for r in kernel_rows(db, "local", CONFIG)} - keys_before
    # what was measured no longer carries a regressor's error: the interval is narrower
    assert after["latency_ms_high"] / after["latency_ms_low"] < high / low
    # and the next plain prediction answers those kernels from the table
    again = run("predict", model, "--device", "local", "--json")
    assert again["coverage"]["table"] >= after["coverage"]["measured-now"] - 1e-9

    text = run("predict", model, "--device", "local")["text"]
    assert "90% interval" in text and "from: " in text


def test_no_calibration_no_interval(edgelat_home, tmp_path):
    model = tmp_path / "tiny64.onnx"
    model.write_bytes(build_model(tiny_net(64), "onnx"))
    out = run("predict", model, "--device", "local", "--json")
    assert out["latency_ms_low"] is None and out["latency_ms_high"] is None
    assert out["interval"] == "no interval: the device has no calibration (run 'edgelat predictor build')"
    assert out["coverage"]["measured-now"] == pytest.approx(1.0)  # an empty table: everything measured now


def test_measure_if_unsure_goes_with_a_model_file():
    result = CliRunner().invoke(main, ["predict", "--space", "nasbench201", "--arch", "x", "--device", "local",
                                       "--measure-if-unsure"])
    assert result.exit_code == 1 and result.stderr.strip() == "error: --measure-if-unsure goes with a model file"


def test_unsure_kernels_carry_most_of_the_variance():
    from edgelat.predictors.uncertainty import unsure_kernels

    rows = [{"key": k, "source": s, "predicted_ms": 1.0} for k, s in
            [("a", "regressor"), ("b", "regressor"), ("c", "table"), ("a", "regressor"), ("d", "regressor")]]
    sd = [0.5, 0.1, 0.0, 0.5, 0.05]
    assert unsure_kernels(rows, sd) == ["a"]  # 0.5 of 0.5125 variance: 97.6%
    assert unsure_kernels(rows, sd, share=0.99) == ["a", "b"]
