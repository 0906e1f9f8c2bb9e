"""Imported architecture measurements are shown, exported and used like profiled ones.

Real HELP NAS-Bench-201 latencies (``tests/data/help``) imported for a few devices."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner
from help_data import NB201, help_csv

from edgelat.cli import main


def run(*args, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + result.stderr
    return result


def test_imported_rows_are_shown_and_exported(tmp_path):
    run("lut", "import-archs", help_csv(NB201), "--space", "nasbench201", "--devices", "pixel3")
    err = run("lut", "show", "--device", "pixel3").stderr
    assert err.strip() == "pixel3 has no kernels rows; it has 1900 archs rows ('edgelat lut show --device pixel3 --archs')"
    rows = json.loads(run("lut", "show", "--device", "pixel3", "--archs", "--json").stdout)
    assert len(rows) == 1900 and {r["space"] for r in rows} == {"nasbench201"}
    with help_csv(NB201).open() as fh:
        truth = {r["arch"]: float(r["pixel3"]) for r in csv.DictReader(fh)}
    assert all(r["latency_ms"] == truth[r["arch"]] for r in rows)
    slowest = json.loads(run("lut", "show", "--device", "pixel3", "--archs", "--sort", "median", "--limit", "1",
                             "--json").stdout)
    assert slowest[0]["latency_ms"] == max(truth.values())
    assert "showing the first 100 rows" in run("lut", "show", "--device", "pixel3", "--archs").stdout

    out = tmp_path / "pixel3.csv"
    assert run("lut", "export", "--device", "pixel3", "--archs", "--out", out).stdout.strip() == f"wrote 1900 rows to {out}"
    with out.open() as fh:
        assert len(list(csv.DictReader(fh))) == 1900
    empty = tmp_path / "kernels.csv"
    err = run("lut", "export", "--device", "pixel3", "--out", empty, code=1).stderr.strip()
    assert err.startswith("error: nothing to export: pixel3 has no kernels rows; it has 1900 archs rows")
    assert not empty.exists()


def test_search_prices_measured_architectures_by_their_measurement(tmp_path):
    run("lut", "import-archs", help_csv(NB201), "--space", "nasbench201",
        "--devices", "gold_6240,samsung_a50,silver_4114,pixel3")
    run("predictor", "fit", "--space", "nasbench201", "--device", "pixel3", "--samples", "10")
    with help_csv(NB201).open() as fh:
        truth = {r["arch"]: float(r["pixel3"]) for r in csv.DictReader(fh)}
    budget = sorted(truth.values())[len(truth) // 2]
    rep = json.loads(run("search", "--space", "nasbench201", "--device", "pixel3", "--max-latency", budget,
                         "--generations", "20", "--population", "40", "--top", "10", "--json").stdout)
    assert rep["latency_source"]["kind"] == "measured+arch-predictor"
    assert rep["latency_source"]["measured_archs"] == 1900
    assert any("1900 of the space's architectures are measured on pixel3" in n for n in rep["notes"])
    # what the search priced them with: the measurement where there is one, the predictor elsewhere
    import numpy as np

    from edgelat.values import RuntimeConfig
    from edgelat.lut.store import open_db
    from edgelat.predictors.latency import latency_model
    from edgelat.profiler.spaces import get_space

    space = get_space("nasbench201")
    model = latency_model(open_db(), "pixel3", RuntimeConfig(), space)
    archs = list(truth)[:50]
    np.testing.assert_array_equal(model.predict(space.from_strings(archs)), [truth[a] for a in archs])
    others = space.sample(np.random.default_rng(0), 200)
    unmeasured = others[[space.to_string(g) not in truth for g in others]]
    np.testing.assert_allclose(model.predict(unmeasured), model.inner.predict(unmeasured))
