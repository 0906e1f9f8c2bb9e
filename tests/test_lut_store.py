"""The store: schema, WAL, idempotent upserts, queries, exports (real SQLite files)."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from edgelat.values import BenchmarkResult, LatencySummary, RuntimeConfig
from edgelat.errors import BadInput
from edgelat.lut import store
from edgelat.lut.table import export_table, table_rows


def _result(median: float, cfg: RuntimeConfig | None = None, energy: float | None = None) -> BenchmarkResult:
    cfg = cfg or RuntimeConfig(runtime="onnxruntime", threads=1, version="1.0")
    lat = LatencySummary(median=median, mean=median * 1.01, std=0.01, p10=median * 0.9, p90=median * 1.1,
                         n=42, rel_ci=0.01, stable=True)
    return BenchmarkResult(model_sha256="0" * 64, config=cfg, latency=lat, energy_mj=energy,
                           energy_note="" if energy is not None else "no energy sensor found",
                           environment={"before": {"loadavg": [0.1, 0.2, 0.3]}})


def test_open_db_creates_tables_in_wal_mode(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    assert db.journal_mode == "wal"
    for table in ("devices", "kernel_measurements", "model_measurements", "arch_measurements"):
        assert db[table].exists()
    # reopening is harmless
    store.open_db(tmp_path / "x.db")


def test_kernel_rows_are_keyed_and_replaced_not_duplicated(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    cfg = RuntimeConfig(threads=1)
    store.add_kernel_result(db, "d1", "add:h8", "add", {"op": "add"}, _result(1.0, cfg))
    store.add_kernel_result(db, "d1", "add:h8", "add", {"op": "add"}, _result(2.0, cfg))
    store.add_kernel_result(db, "d1", "add:h8", "add", {"op": "add"}, _result(3.0, RuntimeConfig(threads=2)))
    store.add_kernel_result(db, "d2", "relu:h8", "relu", {"op": "relu"}, _result(4.0, cfg))
    rows = store.kernel_rows(db, "d1", cfg)
    assert [r["median_ms"] for r in rows] == [2.0]
    assert store.measured_kernel_keys(db, "d1", cfg) == {"add:h8"}
    assert store.measured_kernel_keys(db, "d1", RuntimeConfig(threads=2)) == {"add:h8"}
    assert store.configs_of(db, "d1") == sorted([cfg.key(), RuntimeConfig(threads=2).key()])
    assert db["kernel_measurements"].count == 3


def test_failed_results_are_refused(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    bad = BenchmarkResult(model_sha256="0" * 64, config=RuntimeConfig(), error="CorruptModel: nope")
    with pytest.raises(ValueError):
        store.add_kernel_result(db, "d1", "k", "add", {}, bad)
    assert db["kernel_measurements"].count == 0


def test_missing_energy_is_null_with_its_reason(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    store.add_model_result(db, "d1", "sha256:ab", "m.onnx", _result(5.0))
    row = store.model_rows(db, "d1")[0]
    assert row["energy_mj"] is None and row["energy_note"] == "no energy sensor found"
    store.add_model_result(db, "d1", "sha256:cd", "n.onnx", _result(5.0, energy=1.5))
    assert {r["energy_mj"] for r in store.model_rows(db, "d1")} == {None, 1.5}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_export_round_trips_every_row(tmp_path, suffix):
    db = store.open_db(tmp_path / "x.db")
    for i in range(5):
        store.add_kernel_result(db, "d1", f"add:{i}", "add", {"op": "add", "i": i}, _result(1.0 + i))
    out = tmp_path / f"t{suffix}"
    assert export_table(db, "d1", out) == 5
    frame = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix](out)
    assert sorted(frame["median_ms"].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert json.loads(frame["environment"].iloc[0])["before"]["loadavg"] == [0.1, 0.2, 0.3]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_bad_format_or_directory_writes_nothing(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    with pytest.raises(BadInput, match="unknown export format"):
        export_table(db, "d1", tmp_path / "t.xlsx")
    with pytest.raises(BadInput, match="does not exist"):
        export_table(db, "d1", tmp_path / "missing" / "t.csv")
    assert not (tmp_path / "t.xlsx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_table_rows_decode_json_and_filter_by_op(tmp_path):
    db = store.open_db(tmp_path / "x.db")
    store.add_kernel_result(db, "d1", "add:1", "add", {"op": "add"}, _result(1.0))
    store.add_kernel_result(db, "d1", "relu:1", "relu", {"op": "relu"}, _result(1.0))
    rows = table_rows(db, "d1", op="relu")
    assert [r["kernel_key"] for r in rows] == ["relu:1"] and rows[0]["spec"] == {"op": "relu"}


def test_concurrent_reader_sees_committed_rows(tmp_path):
    """WAL: another connection reads while the writer keeps the file open."""
    db = store.open_db(tmp_path / "x.db")
    store.add_kernel_result(db, "d1", "add:1", "add", {}, _result(1.0))
    other = sqlite3.connect(tmp_path / "x.db")
    assert other.execute("select count(*) from kernel_measurements").fetchone()[0] == 1


def test_infinite_confidence_interval_is_stored_as_unknown(tmp_path):
    """Fewer than six samples give no CI of the median: the row says unknown, not a number."""
    db = store.open_db(tmp_path / "x.db")
    res = _result(1.0)
    res.latency = LatencySummary(median=1.0, mean=1.0, std=0.0, p10=1.0, p90=1.0, n=3,
                                 rel_ci=float("inf"), stable=False)
    store.add_kernel_result(db, "d1", "add:1", "add", {}, res)
    row = store.kernel_rows(db, "d1")[0]
    assert row["rel_ci"] is None and row["stable"] == 0
