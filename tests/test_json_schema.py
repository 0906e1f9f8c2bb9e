"""One output language: every command's ``--json`` follows the same rules for the same concept.

- a measured latency summary is one object (``median``, ``mean``, ``std``, ``p10``, ``p90``,
  ``n``, ``stable``, ``rel_ci``) wherever it appears under ``latency_ms``;
- ``stable`` and every met budget (``meets_budget_predicted``/``meets_budget_measured``) are
  booleans (or null when there is no budget), never 0/1, and the old names are gone;
- times are ISO 8601 strings;
- an architecture of a dict-shaped space is a JSON object in a string (``json.loads`` reads it);
- an error in ``--json`` mode is ``{"error": ..., "kind": ...}`` on stderr with a non-zero exit.

The commands run for real on ``local`` and on real HELP measurements.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from click.testing import CliRunner
from help_data import NB201, help_csv

from edgelat.values import RuntimeConfig
from edgelat.cli import main
from edgelat.lut.store import open_db
from edgelat.predictors.kernel import KernelPredictor
from edgelat.profiler.builders import build_model
from edgelat.profiler.networks import tiny_net
from edgelat.results import TIME_KEYS, Latency

QUICK = ["--max-seconds", "0.2", "--min-runs", "5", "--warmup", "1"]
LATENCY_KEYS = set(Latency(None).to_dict())
OLD_NAMES = {"feasible", "meets_constraint", "meets_latency_predicted", "meets_latency_measured"}
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def run(*args: Any) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def check(value: Any, where: str = "$") -> int:
    """Walk a JSON document and check the rules; returns how many values were checked."""
    n = 1
    if isinstance(value, dict):
        assert not OLD_NAMES & set(value), f"{where}: old name {OLD_NAMES & set(value)}"
        for key, v in value.items():
            at = f"{where}.{key}"
            if key in ("stable", "meets_budget_predicted", "meets_budget_measured"):
                assert v is None or isinstance(v, bool), f"{at} = {v!r} is not a boolean"
            if key in TIME_KEYS and v is not None:
                assert isinstance(v, str), f"{at} = {v!r} is not an ISO 8601 time"
                dt.datetime.fromisoformat(v)
            if key == "latency_ms" and isinstance(v, dict):
                assert set(v) == LATENCY_KEYS, f"{at} has keys {sorted(v)}"
            if key == "arch" and isinstance(v, str) and v.startswith("{"):
                assert isinstance(json.loads(v), dict), at
            n += check(v, at)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            n += check(v, f"{where}[{i}]")
    return n


def test_every_command_speaks_the_same_json(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(48), "onnx"))
    docs = {
        "devices list": run("devices", "list", "--json"),
        "devices show": run("devices", "show", "local", "--json"),
        "profile ops": run("profile", "ops", "--device", "local", "--preset", "smoke", "--json", *QUICK),
        "profile model": run("profile", "model", model, "--device", "local", "--json", *QUICK),
        "lut show": run("lut", "show", "--device", "local", "--json"),
        "lut show --models": run("lut", "show", "--device", "local", "--models", "--json"),
        "lut history": run("lut", "history", "--device", "local", "--json"),
        "predict MODEL": run("predict", model, "--device", "local", "--json"),
        "spaces list": run("spaces", "list", "--json"),
        "spaces show": run("spaces", "show", "ofa-mbv3", "--json"),
        "export": run("export", "--space", "nasbench201", "--arch", NB201_ARCH, "--out", tmp_path / "c.onnx", "--json"),
        "lut import-archs": run("lut", "import-archs", help_csv(NB201), "--space", "nasbench201",
                                "--devices", "gold_6240,samsung_a50,pixel3", "--json"),
    }
    docs["lut show --archs"] = run("lut", "show", "--device", "pixel3", "--archs", "--limit", "5", "--json")
    docs["predictor fit"] = run("predictor", "fit", "--space", "nasbench201", "--device", "pixel3", "--json")
    docs["predict --arch"] = run("predict", "--space", "nasbench201", "--arch", NB201_ARCH, "--device", "pixel3", "--json")
    docs["predictor list"] = run("predictor", "list", "--json")
    docs["search"] = run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", "100",
                         "--generations", "3", "--population", "20", "--json")
    docs["search --compare-flops"] = run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency",
                                         "8", "--generations", "3", "--population", "20", "--compare-flops", "--json")
    # a kernel predictor fitted on the rows measured above (a real 'predictor build' takes minutes)
    KernelPredictor.from_table(open_db(), "local", RuntimeConfig()).save(open_db(), "local", RuntimeConfig())
    docs["predictor report"] = run("predictor", "report", "--device", "local", "--json")
    for name, doc in docs.items():
        assert check(doc) > 1, name
    # the one latency object, where whole models are measured
    assert set(docs["profile model"]["latency_ms"]) == LATENCY_KEYS
    assert set(docs["lut show --models"][0]["latency_ms"]) == LATENCY_KEYS
    assert docs["lut show --models"][0]["latency_ms"]["median"] == docs["profile model"]["latency_ms"]["median"]
    assert all(r["meets_budget_predicted"] is True for r in docs["search"]["results"])
    assert all(isinstance(r["stable"], bool) for r in docs["lut show"])
    cmp_ = docs["search --compare-flops"]["compare_flops"]
    for key in ("latency_constrained", "flops_constrained"):
        assert cmp_[key]["meets_budget_predicted"] in (True, False)
        assert cmp_[key]["meets_budget_measured"] is None  # pixel3 is known only from imported rows
    rep = docs["predictor report"]
    assert rep["device"] == "local" and rep["kernels"]["overall"]["n"] > 0 and "points" not in rep["kernels"]
    assert set(rep["models"]) >= {"holdout", "calibration_leave_one_out"}


@pytest.mark.parametrize("args", [
    ("devices", "show", "pixel9", "--json"),
    ("lut", "show", "--device", "pixel9", "--json"),
    ("predict", "--space", "darts", "--arch", "x", "--device", "local", "--json"),
    ("spaces", "show", "darts", "--json"),
])
def test_json_errors_are_json_on_stderr(args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1 and result.stdout == ""
    err = json.loads(result.stderr)
    assert set(err) == {"error", "kind"} and err["error"] and err["kind"] in ("UnknownDevice", "BadInput")
