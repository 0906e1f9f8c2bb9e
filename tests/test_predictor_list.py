"""``edgelat predictor list``: the kernel- and architecture-level predictors a database holds."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.cli import main
from edgelat.devices.registry import Registry
from edgelat.lut.store import open_db
from edgelat.predictors.arch import save_predictor
from edgelat.predictors.ridge import ArchPredictor
from edgelat.predictors.calibration import Calibration
from edgelat.predictors.kernel import KernelPredictor
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.networks import tiny_net
from edgelat.profiler.spaces import get_space

CONFIG = RuntimeConfig(threads=1)
FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.2, target_rel_ci=0.1)


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output + result.stderr
    return result


def test_list_shows_what_was_stored(edgelat_home):
    assert json.loads(run("predictor", "list", "--json").stdout) == []
    assert "no predictors stored" in run("predictor", "list").stdout
    db = open_db()
    with Registry(db).connect("local") as client:
        profile_kernels(db, "local", client, [k for r in (48, 64, 80, 96, 112) for k in tiny_net(r)], CONFIG, FAST)
    kp = KernelPredictor.from_table(db, "local", CONFIG)
    kp.save(db, "local", CONFIG)
    cal = Calibration(forms=("identity", "ratio")).fit([1.0, 2.0, 3.0, 4.0], [5, 5, 5, 5], [1.1, 2.3, 3.2, 4.5])
    cal.save(db, "local", CONFIG)
    space = get_space("nasbench201")
    pop = space.sample(np.random.default_rng(0), 40)
    X = space.encode(pop).astype(float)
    model = ArchPredictor(space).fit(X, 1.0 + X.sum(axis=1))
    save_predictor(db, "nasbench201", "local", CONFIG.key(), model, n_samples=40, fit_seconds=0.01,
                   metrics={"spearman": 0.97}, validation="test")

    rows = json.loads(run("predictor", "list", "--json").stdout)
    assert [r["level"] for r in rows] == ["kernel", "arch"]
    k, a = rows
    assert k["device"] == "local" and k["config_key"] == CONFIG.key() and k["table_rows"] == len(kp.table_)
    assert set(k["regressors"]) == set(kp.ops_) and k["stored_format"] != "pickle (refused: rebuild it)"
    assert k["calibration"]["form"] == cal.form_ and k["calibration"]["models"] == 4
    assert k["fitted_at"].endswith("+00:00")
    assert a["space"] == "nasbench201" and a["samples"] == 40 and a["metrics"]["spearman"] == 0.97
    text = run("predictor", "list").stdout
    assert "calibration" in text and "nasbench201" in text and "Spearman 0.970" in text
    assert json.loads(run("predictor", "list", "--device", "local", "--json").stdout) == rows
    err = run("predictor", "list", "--device", "pixel9", code=1).stderr
    assert err.startswith("error: unknown device 'pixel9'") and err.count("\n") == 1
