"""``lut import-archs``, ``predictor fit`` and ``predict --space`` end to end with CliRunner on real SQLite."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from help_data import NB201 as NB201_NAME
from help_data import help_csv

from edgelat import config
from edgelat.cli import main
from edgelat.predictors import metrics

NB201 = help_csv(NB201_NAME)
ROWS = 1900  # rows kept in the trimmed file (idx 0..1899; tests/data/help/README.md)
A0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def fails(*args: str, match: str) -> str:
    result = run(*args, ok=False)
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
    return err


def db_dump() -> str:
    path = config.db_path()
    if not path.exists():
        return ""
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def rows_of(path: Path, n: int | None = None, start: int = 0) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[start : None if n is None else start + n]


def write_rows(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture()
def imported() -> dict:
    """The real NB201 file imported for three devices (all its rows each)."""
    out = json.loads(run("lut", "import-archs", NB201, "--space", "nasbench201",
                         "--devices", "pixel3,gold_6240,samsung_a50", "--json").stdout)
    return out


def test_import_archs_json_and_table(imported, tmp_path):
    assert len(rows_of(NB201)) == ROWS
    assert imported["rows"] == {"pixel3": ROWS, "gold_6240": ROWS, "samsung_a50": ROWS}
    assert imported["total"] == 3 * ROWS and imported["space"] == "nasbench201"
    listing = json.loads(run("devices", "list", "--json").stdout)
    kinds = {d["name"]: d["kind"] for d in listing}
    assert kinds["pixel3"] == "imported" and kinds["gold_6240"] == "imported"
    small = write_rows(tmp_path / "s.csv", rows_of(NB201, 5), ["idx", "arch", "titanx_1"])
    out = run("lut", "import-archs", small, "--space", "nasbench201", "--source", "HELP").stdout
    assert "titanx_1" in out and "5" in out


def test_import_archs_errors_change_nothing(imported, tmp_path):
    before = db_dump()
    bad = rows_of(NB201, 4)
    bad[2]["pixel3"] = "n/a"
    path = write_rows(tmp_path / "bad.csv", bad, ["arch", "pixel3", "titanx_1"])
    fails("lut", "import-archs", path, "--space", "nasbench201", match="line 4, column 'pixel3'")
    fails("lut", "import-archs", NB201, "--space", "nb201", match="unknown search space 'nb201'")
    fails("lut", "import-archs", NB201, "--space", "ofa-mbv3", "--devices", "pixel3", match="line 2, column 'arch'")
    fails("lut", "import-archs", NB201, "--space", "nasbench201", "--devices", "pixel9", match="no column for device 'pixel9'")
    fails("lut", "import-archs", tmp_path / "nope.csv", "--space", "nasbench201", match="no such CSV file")
    assert db_dump() == before


def test_fit_reports_held_out_metrics_and_predict_uses_the_predictor(imported, tmp_path):
    fit = json.loads(run("predictor", "fit", "--space", "nasbench201", "--device", "gold_6240", "--json").stdout)
    assert fit["kind"] == "ridge" and fit["config_key"] == "imported"
    assert fit["n_measured"] == ROWS and fit["validation"].startswith(f"held-out: a random 20% ({ROWS // 5} rows)")
    m = fit["metrics"]
    assert m["n"] == ROWS // 5 and m["spearman"] > 0.95 and set(m) == {"rmse", "mape", "within_5", "within_10", "spearman", "n"}

    # measured arch -> the measurement itself; its value is the file's
    first = rows_of(NB201, 1)[0]
    out = json.loads(run("predict", "--space", "nasbench201", "--arch", A0, "--device", "gold_6240", "--json").stdout)
    assert out == {"device": "gold_6240", "space": "nasbench201", "arch": A0,
                   "latency_ms": float(first["gold_6240"]), "source": "imported-measurement"}
    text = run("predict", "--space", "nasbench201", "--arch", A0, "--device", "gold_6240").stdout
    assert "imported-measurement" in text and "gold_6240" in text


def test_fewshot_fit_with_10_samples_predicts_a_new_device(tmp_path):
    # sources: all rows of two devices; target: only 10 rows of pixel3 are imported
    run("lut", "import-archs", NB201, "--space", "nasbench201", "--devices", "gold_6240,samsung_a50,silver_4114")
    pool = rows_of(NB201, 10)
    run("lut", "import-archs", write_rows(tmp_path / "ten.csv", pool, ["arch", "silver_4210r"]), "--space", "nasbench201")
    fails("predictor", "fit", "--space", "nasbench201", "--device", "silver_4210r", "--few-shot", "--samples", "10",
          match="--samples 10 leaves nothing to validate on")
    fit = json.loads(run("predictor", "fit", "--space", "nasbench201", "--device", "silver_4210r", "--few-shot",
                         "--json").stdout)
    assert fit["kind"] == "fewshot" and fit["n_samples"] == 10
    assert fit["sources"] == ["gold_6240", "samsung_a50", "silver_4114"]
    assert fit["validation"] == "leave-one-out over the 10 measured architectures" and fit["metrics"]["n"] == 10

    # predict the next 1000 rows (never imported for silver_4210r) and score against the file
    query = rows_of(NB201, 1000, start=900)
    qpath = write_rows(tmp_path / "query.csv", query, ["idx", "arch"])
    out = tmp_path / "pred.csv"
    res = run("predict", "--space", "nasbench201", "--archs", qpath, "--device", "silver_4210r", "--out", out)
    assert "wrote 1000 predictions" in res.stderr and "1000 from arch-predictor" in res.stderr
    pred = rows_of(out)
    assert [r["idx"] for r in pred] == [r["idx"] for r in query] and list(pred[0]) == ["idx", "arch", "latency_ms"]
    y = np.array([float(r["silver_4210r"]) for r in query])
    p = np.array([float(r["latency_ms"]) for r in pred])
    assert metrics.spearman(y, p) > 0.9

    # --json gives per-arch sources; the 10 measured rows answer with their measurement
    mixed = write_rows(tmp_path / "mixed.csv", pool[:2] + query[:3], ["arch"])
    js = json.loads(run("predict", "--space", "nasbench201", "--archs", mixed, "--device", "silver_4210r",
                        "--json").stdout)
    assert [p["source"] for p in js["predictions"]] == ["imported-measurement"] * 2 + ["arch-predictor"] * 3
    assert js["predictions"][0]["latency_ms"] == float(pool[0]["silver_4210r"])
    # without --out the CSV goes to stdout
    text = run("predict", "--space", "nasbench201", "--archs", mixed, "--device", "silver_4210r").stdout
    assert text.splitlines()[0] == "arch,latency_ms" and len(text.splitlines()) == 6


def test_fewshot_samples_option_validates_on_the_rest(imported):
    fit = json.loads(run("predictor", "fit", "--space", "nasbench201", "--device", "samsung_a50", "--few-shot",
                         "--samples", "10", "--json").stdout)
    assert fit["n_samples"] == 10 and fit["metrics"]["n"] == ROWS - 10
    assert fit["sources"] == ["gold_6240", "pixel3"]
    assert fit["metrics"]["spearman"] > 0.85


def test_predict_errors_are_one_line(imported, tmp_path):
    fails("predict", "--space", "nasbench201", "--arch", A0, "--device", "pixel9", match="unknown device 'pixel9'")
    fails("predict", "--space", "darts", "--arch", A0, "--device", "pixel3", match="unknown search space 'darts'")
    fails("predict", "--space", "nasbench201", "--arch", "|conv~0|", "--device", "pixel3", match="malformed architecture")
    fails("predict", "--device", "pixel3", match="nothing to predict")
    fails("predict", "--space", "nasbench201", "--device", "pixel3", match="exactly one of --arch")
    fails("predict", "--space", "nasbench201", "--arch", A0, "--out", tmp_path / "o.csv", "--device", "pixel3",
          match="--out goes with --archs")
    # an imported device without a predictor answers measured archs only
    run("lut", "import-archs", write_rows(tmp_path / "few.csv", rows_of(NB201, 3), ["arch", "titanxp_1"]),
        "--space", "nasbench201")
    other = rows_of(NB201, 1, start=500)[0]["arch"]
    fails("predict", "--space", "nasbench201", "--arch", other, "--device", "titanxp_1",
          match="fit a predictor with 'edgelat predictor fit --space nasbench201 --device titanxp_1'")
    # local has no table, no predictor, no measurements for the space
    fails("predict", "--space", "nasbench201", "--arch", A0, "--device", "local",
          match="no latency source for nasbench201 on 'local'")
    fails("predictor", "fit", "--space", "nasbench201", "--device", "local", match="'local' has 0 measured nasbench201")
    q = tmp_path / "q.csv"
    q.write_text("arch\n" + A0 + "\nnot-an-arch\n")
    fails("predict", "--space", "nasbench201", "--archs", q, "--device", "pixel3", match="line 3, column 'arch'")


def test_fewshot_needs_two_source_devices(tmp_path):
    rows = rows_of(NB201, 60)
    for r in rows[10:]:
        r["titanxp_1"] = ""  # titanxp_1 measured on 10 archs only; pixel3 on all 60
    run("lut", "import-archs", write_rows(tmp_path / "two.csv", rows, ["arch", "pixel3", "titanxp_1"]),
        "--space", "nasbench201")
    fails("predictor", "fit", "--space", "nasbench201", "--device", "titanxp_1", "--few-shot",
          match="few-shot needs at least 2 other devices with >= 30 measurements in the space, found 1")
    plain = json.loads(run("predictor", "fit", "--space", "nasbench201", "--device", "titanxp_1", "--json").stdout)
    assert plain["kind"] == "ridge" and plain["validation"] == "leave-one-out over the 10 measured architectures"


def test_predict_a_model_file_on_local(tmp_path):
    """The model path goes through the kernel-level predictor: real kernels measured on local."""
    from edgelat.profiler.builders import build_model
    from edgelat.profiler.networks import tiny_net

    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(64), "onnx"))
    out = json.loads(run("predict", model, "--device", "local", "--json").stdout)
    assert out["device"] == "local" and out["latency_ms"] > 0 and out["kernels"]
    assert all({"key", "type", "predicted_ms"} <= set(k) for k in out["kernels"])
    text = run("predict", model, "--device", "local").stdout
    assert "tiny.onnx on local" in text
    fails("predict", model, "--space", "nasbench201", "--device", "local", match="either a model file or --space")
    fails("predict", model, "--arch", A0, "--device", "local", match="go with --space")
