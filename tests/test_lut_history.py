"""Measurements are kept, not replaced: ``lut history`` shows every one, the table the latest."""

from __future__ import annotations

import json
import sqlite3

from click.testing import CliRunner

from edgelat import config
from edgelat.cli import main
from edgelat.lut.store import open_db
from edgelat.profiler.builders import build_model
from edgelat.profiler.networks import tiny_net

QUICK = ["--max-seconds", "0.3", "--min-runs", "5", "--warmup", "1"]


def run(*args, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + result.stderr
    return result


def test_profiling_a_model_twice_keeps_both_measurements(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(64), "onnx"))
    first = json.loads(run("profile", "model", model, "--device", "local", "--json", *QUICK).stdout)
    second = json.loads(run("profile", "model", model, "--device", "local", "--json", *QUICK).stdout)
    hist = json.loads(run("lut", "history", "--device", "local", "--model", model, "--json").stdout)
    assert [h["median_ms"] for h in hist] == [second["latency_ms"]["median"], first["latency_ms"]["median"]]
    assert all(h["kind"] == "model" and h["name"] == "tiny.onnx" and h["item_key"] == first["model_ref"] for h in hist)
    assert hist[0]["measured_at"] >= hist[1]["measured_at"] and hist[0]["measured_at"].endswith("+00:00")
    assert isinstance(hist[0]["stable"], bool) and "cpu" in json.dumps(hist[0]["environment"]).lower()
    table = json.loads(run("lut", "show", "--device", "local", "--models", "--json").stdout)
    assert len(table) == 1 and table[0]["median_ms"] == second["latency_ms"]["median"]  # the table: the latest
    text = run("lut", "history", "--device", "local", "--model", model).stdout
    assert text.count("tiny.onnx") == 2


def test_kernel_history_and_limit():
    run("profile", "ops", "--device", "local", "--preset", "smoke", *QUICK)
    run("profile", "ops", "--device", "local", "--preset", "smoke", "--force", *QUICK)
    rows = json.loads(run("lut", "show", "--device", "local", "--json").stdout)
    key = rows[0]["kernel_key"]
    hist = json.loads(run("lut", "history", "--device", "local", "--kernel", key, "--json").stdout)
    assert len(hist) == 2 and hist[0]["median_ms"] == rows[0]["median_ms"]
    everything = json.loads(run("lut", "history", "--device", "local", "--json", "--limit", "3").stdout)
    assert len(everything) == 3
    err = run("lut", "history", "--device", "local", "--kernel", key, "--model", "x.onnx", code=1).stderr
    assert err.strip() == "error: give --model or --kernel, not both"
    assert "no measurements of nope" in run("lut", "history", "--device", "local", "--kernel", "nope").stderr


def test_an_older_database_starts_its_history_from_its_rows(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(48), "onnx"))
    run("profile", "model", model, "--device", "local", *QUICK)
    path = config.db_path()
    with sqlite3.connect(path) as conn:  # as a database from before history existed
        conn.execute("DROP TABLE measurement_history")
        conn.execute("PRAGMA user_version = 4")
    db = open_db()
    rows = list(db["measurement_history"].rows)
    assert len(rows) == 1 and rows[0]["kind"] == "model" and rows[0]["name"] == "tiny.onnx"
    assert rows[0]["median_ms"] == next(db["model_measurements"].rows)["median_ms"]
