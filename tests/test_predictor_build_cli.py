"""`edgelat predictor build` and `edgelat predictor report` through the real CLI on `local`."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from edgelat.values import RuntimeConfig
from edgelat.cli import main
from edgelat.lut.store import kernel_rows, open_db
from edgelat.predictors.fusion import DEFAULT_PAIRS, load_rules, verdict_rows
from edgelat.predictors.kernel import KernelPredictor
from edgelat.predictors.sampling import MODELS_SHARE


def test_build_then_report_on_local(tmp_path):
    runner = CliRunner()
    built = runner.invoke(main, ["predictor", "build", "--device", "local", "--budget-minutes", "0.4", "--json"])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert summary["device"] == "local" and summary["config_key"] == "onnxruntime|cpu|t1|fp32"
    # the rounds go on until only the models' share is left; how far the last group and the
    # whole models' one pass overrun depends on the machine's load (test_predictors_build checks
    # structurally that no group starts past its limit)
    assert summary["spent_s"] >= (1 - MODELS_SHARE) * 24
    # the verdicts printed are the ones stored (whether each is right is test_predictors_graph's job:
    # a verdict rests on timing differences that a 24 s build on a shared machine cannot promise)
    assert summary["fusion"] == {f"{r['op']}+{r['act']}": r["verdict"] for r in verdict_rows(open_db(), "local", RuntimeConfig())}
    assert set(summary["fusion"]) == {f"{op}+{act}" for op, act in DEFAULT_PAIRS}
    assert summary["kernels_measured"] > 0 and summary["regressors"]
    # the layout conversion's price was measured (onnxruntime on a CPU) and prints as it is stored
    price = summary["layout"]["per_element_ms"]
    assert price >= 0 and len(summary["layout"]["probes"]) == 8

    db = open_db()
    config = RuntimeConfig()
    assert len(kernel_rows(db, "local", config)) == summary["kernels_total"]
    predictor = KernelPredictor.load(db, "local", config)
    assert sorted(summary["regressors"]) == predictor.ops_
    assert load_rules(db, "local", config).source == "measured"

    plot = tmp_path / "report.png"
    rep = runner.invoke(main, ["predictor", "report", "--device", "local", "--plot", str(plot), "--json"])
    assert rep.exit_code == 0, rep.output
    data = json.loads(rep.stdout)
    assert data["kernels"]["overall"]["n"] == len(predictor.cv_pred_)
    if data["calibration"] is not None:
        assert data["calibration"]["layout"] == {"per_element_ms": price}
    assert 0 <= data["kernels"]["overall"]["within_10"] <= 1
    assert plot.read_bytes()[:4] == b"\x89PNG"
    table = runner.invoke(main, ["predictor", "report", "--device", "local"])
    assert table.exit_code == 0 and "kernels (out-of-fold)" in table.stdout

    # the budget is spent: a rerun measures nothing and says so
    again = runner.invoke(main, ["predictor", "build", "--device", "local", "--budget-minutes", "0.4"])
    assert again.exit_code == 0, again.output
    assert "the budget was already spent" in again.stdout
    printed = " ".join(again.stdout.split())  # rich wraps lines at the terminal width
    # nothing left to measure with: the price the finished run kept is the one used and shown
    assert f"layout conversion (kernels alone and chained): {price * 1e6:.3f} ns per element" in printed
    # one calibration per state the build could fit: on a loaded machine a 24 s build may not get
    # its whole models measured (test_predictors_build checks the fit per state structurally)
    fitted = ((summary.get("calibration") or {}).get("states") or {})
    for state in fitted:
        assert re.search(rf"calibration \({state}\): \S+ .* from \d+ whole models \(MAPE \d+\.\d% on families left out\)",
                         printed), printed
    assert len(kernel_rows(db, "local", config)) == summary["kernels_total"]


def test_errors_are_one_line_and_name_what_to_do():
    runner = CliRunner()
    res = runner.invoke(main, ["predictor", "build", "--device", "nosuch", "--budget-minutes", "1"])
    assert res.exit_code == 1 and "unknown device 'nosuch'" in res.stderr
    res = runner.invoke(main, ["predictor", "report", "--device", "local"])
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0
    assert "predictor build --device local" in res.stderr
    res = runner.invoke(main, ["predictor", "report", "--device", "local", "--runtime", "litert"])
    assert res.exit_code == 1 and "litert" in res.stderr
    res = runner.invoke(main, ["predictor", "build", "--device", "local", "--budget-minutes", "-1"])
    assert res.exit_code == 2
