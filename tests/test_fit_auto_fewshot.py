"""``predictor fit`` borrows from other devices by itself when a device has few measurements.

Real measured NAS-Bench-201 latencies (HELP, kept trimmed in ``tests/data/help``: rows 0..1899): three
devices are imported whole, a fourth with 10 architectures only. Plain ``fit`` must choose
to borrow (and say why), predict the fourth device's unseen architectures well, and
``--no-few-shot`` must fit alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from help_data import NB201 as NB201_NAME
from help_data import help_csv

from edgelat.cli import main
from edgelat.predictors import metrics

NB201 = help_csv(NB201_NAME)
SOURCES = "gold_6240,samsung_a50,silver_4114"
TARGET = "silver_4210r"


def run(*args) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout) if "--json" in args else {"text": result.stdout}


def rows(n: int | None = None, start: int = 0) -> list[dict[str, str]]:
    with NB201.open(newline="") as fh:
        out = list(csv.DictReader(fh))
    return out[start : None if n is None else start + n]


def write(path: Path, data: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(data)
    return path


def test_fit_borrows_by_itself_with_few_samples_and_says_so(tmp_path):
    run("lut", "import-archs", NB201, "--space", "nasbench201", "--devices", SOURCES)
    run("lut", "import-archs", write(tmp_path / "ten.csv", rows(10), ["arch", TARGET]), "--space", "nasbench201")

    auto = run("predictor", "fit", "--space", "nasbench201", "--device", TARGET, "--json")
    assert auto["few_shot"] is True and auto["kind"] == "fewshot"
    assert auto["sources"] == SOURCES.split(",")
    assert "leave-one-out over the 10 training architectures" in auto["few_shot_reason"]
    query = rows(1000, start=900)
    qpath = write(tmp_path / "q.csv", query, ["arch"])
    out = tmp_path / "pred.csv"
    run("predict", "--space", "nasbench201", "--archs", qpath, "--device", TARGET, "--out", out)
    with out.open() as fh:
        pred = np.array([float(r["latency_ms"]) for r in csv.DictReader(fh)])
    y = np.array([float(r[TARGET]) for r in query])
    borrowed = metrics.spearman(y, pred)
    assert borrowed > 0.9

    alone = run("predictor", "fit", "--space", "nasbench201", "--device", TARGET, "--no-few-shot", "--json")
    assert alone["few_shot"] is False and alone["kind"] == "ridge" and alone["sources"] == []
    assert alone["few_shot_reason"] == "asked not to (--no-few-shot)"
    run("predict", "--space", "nasbench201", "--archs", qpath, "--device", TARGET, "--out", out)
    with out.open() as fh:
        pred_alone = np.array([float(r["latency_ms"]) for r in csv.DictReader(fh)])
    assert metrics.spearman(y, pred_alone) < borrowed  # what the automatic choice saved the user from

    text = run("predictor", "fit", "--space", "nasbench201", "--device", TARGET)["text"]
    assert "borrowing from other devices: yes (leave-one-out" in text


def test_fit_alone_when_nothing_to_borrow_from(tmp_path):
    data = rows(60)
    for r in data[10:]:
        r["titanxp_1"] = ""
    run("lut", "import-archs", write(tmp_path / "two.csv", data, ["arch", "pixel3", "titanxp_1"]), "--space", "nasbench201")
    fit = run("predictor", "fit", "--space", "nasbench201", "--device", "titanxp_1", "--json")
    assert fit["few_shot"] is False and fit["kind"] == "ridge"
    assert fit["few_shot_reason"] == "1 other device(s) have enough measurements in the space to borrow from (2 needed)"
