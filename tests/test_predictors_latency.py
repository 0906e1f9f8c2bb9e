"""``latency_model``: which source answers a population, and that it answers correctly.

The table path runs on a real table: the NAS-Bench-201 kernel vocabulary is
profiled on ``local`` with onnxruntime (short protocol) into a real SQLite file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from help_data import NB201 as NB201_NAME
from help_data import help_csv

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.devices.registry import Registry
from edgelat.errors import BadInput, UnknownDevice
from edgelat.lut.store import open_db
from edgelat.predictors import latency as latency_mod
from edgelat.predictors.arch import save_predictor
from edgelat.predictors.ridge import ArchPredictor
from edgelat.predictors.archs_io import import_arch_table, read_arch_table
from edgelat.predictors.latency import CHUNK, latency_model
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.spaces import get_space

NB201 = help_csv(NB201_NAME)
CONFIG = RuntimeConfig(runtime="onnxruntime", threads=1)
FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.3)


@pytest.fixture(scope="module")
def profiled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose ``local`` table holds the whole NB201 vocabulary, measured for real."""
    path = tmp_path_factory.mktemp("lat") / "edgelat.db"
    db = open_db(path)
    space = get_space("nasbench201")
    with Registry(db).connect("local") as client:
        summary = profile_kernels(db, "local", client, space.kernel_vocabulary(), CONFIG, FAST)
    assert summary.measured == len(space.kernel_vocabulary()) and not summary.failed
    return path


def copy_db(src: Path, edgelat_home: Path):
    edgelat_home.mkdir(parents=True, exist_ok=True)
    dst = edgelat_home / "edgelat.db"
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return open_db(dst)


def medians(db) -> dict[str, float]:
    return dict(db.execute("select kernel_key, median_ms from kernel_measurements where device='local'").fetchall())


def test_full_table_answers_a_batch_as_the_sum_of_each_archs_kernels(profiled_db, edgelat_home):
    db = copy_db(profiled_db, edgelat_home)
    space = get_space("nasbench201")
    model = latency_model(db, "local", CONFIG, space)
    assert model.kind == "table" and model.missing == []
    pop = space.sample(np.random.default_rng(0), CHUNK + 37)  # crosses a block boundary
    got = model.predict(pop)
    prices = medians(db)
    for i in (0, 1, CHUNK - 1, CHUNK, CHUNK + 36):
        expect = sum(prices[k.key] for k in space.kernels(pop[i]))
        assert got[i] == pytest.approx(expect, rel=1e-12)
    assert np.all(got > 0)
    # more convolutions cost more on a real runtime: all-conv3x3 > all-skip
    heavy = space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    light = space.from_string("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|")
    h, l = model.predict(np.stack([heavy, light]))
    assert h > 2 * l


def test_a_partial_table_is_an_error_not_a_zero(profiled_db, edgelat_home):
    db = copy_db(profiled_db, edgelat_home)
    space = get_space("nasbench201")
    vocab = space.kernel_vocabulary()
    gone = [vocab[3].key, vocab[10].key]
    with db.conn:
        for key in gone:
            db.execute("delete from kernel_measurements where kernel_key = ?", [key])
    with pytest.raises(BadInput) as exc:
        latency_model(db, "local", CONFIG, space)
    msg = str(exc.value)
    assert f"{len(vocab) - 2} of the space's {len(vocab)} kernels (2 missing)" in msg
    assert "edgelat predictor build --device local" in msg and "\n" not in msg
    # another runtime config has no table at all
    with pytest.raises(BadInput, match=f"0 of the space's {len(vocab)}"):
        latency_model(db, "local", RuntimeConfig(runtime="onnxruntime", threads=2), space)


def test_missing_kernels_are_priced_by_the_kernel_predictor(profiled_db, edgelat_home, monkeypatch):
    db = copy_db(profiled_db, edgelat_home)
    space = get_space("nasbench201")
    vocab = space.kernel_vocabulary()
    gone = vocab[5].key
    with db.conn:
        db.execute("delete from kernel_measurements where kernel_key = ?", [gone])

    class FlopsPredictor:
        """Stands in for the kernel-level predictor's interface: ms from FLOPs."""

        calls: list[list[str]] = []

        def predict_specs(self, specs):
            self.calls.append([s.key for s in specs])
            return np.array([1e-6 * s.flops() + 0.01 for s in specs])

    kp = FlopsPredictor()
    monkeypatch.setattr(latency_mod, "_kernel_predictor", lambda db, device, config: kp)
    model = latency_model(db, "local", CONFIG, space)
    assert model.kind == "table" and model.missing == [gone] and kp.calls == [[gone]]
    prices = medians(db)
    prices[gone] = 1e-6 * vocab[5].flops() + 0.01
    pop = space.sample(np.random.default_rng(1), 200)
    expect = [sum(prices[k.key] for k in space.kernels(g)) for g in pop]
    assert np.allclose(model.predict(pop), expect, rtol=1e-12)


def test_a_fitted_arch_predictor_wins_over_the_table(profiled_db, edgelat_home):
    db = copy_db(profiled_db, edgelat_home)
    space = get_space("nasbench201")
    table = read_arch_table(NB201, space, ["silver_4210r"])
    X, y = space.encode(table.pop[:500]), table.latency["silver_4210r"][:500]
    ridge = ArchPredictor(space).fit(X, y)
    save_predictor(db, space.name, "local", CONFIG.key(), ridge, n_samples=500, fit_seconds=0.0, metrics={},
                   validation="test")
    model = latency_model(db, "local", CONFIG, space)
    assert model.kind == "arch-predictor"
    pop = table.pop[500:600]
    assert np.allclose(model.predict(pop), ridge.predict(space.encode(pop)))
    # another config of the same device still uses its table (here: none -> error)
    with pytest.raises(BadInput):
        latency_model(db, "local", RuntimeConfig(threads=4), space)
    # a stored predictor whose encoding no longer matches the space is refused
    short = ArchPredictor(space).fit(X[:, :30], y)
    save_predictor(db, space.name, "local", CONFIG.key(), short, n_samples=500, fit_seconds=0.0, metrics={},
                   validation="test")
    with pytest.raises(BadInput, match="refit it with 'edgelat predictor fit"):
        latency_model(db, "local", CONFIG, space)


def test_imported_measurements_answer_exactly_and_refuse_the_unmeasured(tmp_path):
    db = open_db()
    space = get_space("nasbench201")
    with NB201.open(newline="") as fh:
        rows = list(csv.reader(fh))[:301]
    sub = tmp_path / "sub.csv"
    with sub.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    import_arch_table(db, sub, space, ["samsung_s7"])
    table = read_arch_table(sub, space, ["samsung_s7"])
    model = latency_model(db, "samsung_s7", CONFIG, space)
    assert model.kind == "imported"
    order = np.random.default_rng(0).permutation(300)
    assert np.array_equal(model.predict(table.pop[order]), table.latency["samsung_s7"][order])
    unmeasured = space.sample(np.random.default_rng(3), 2000)
    with pytest.raises(BadInput, match=r"never measured on 'samsung_s7'; fit a predictor"):
        model.predict(unmeasured)


def test_unknown_device_and_empty_device():
    db = open_db()
    space = get_space("nasbench201")
    with pytest.raises(UnknownDevice):
        latency_model(db, "pixel9", CONFIG, space)
    with pytest.raises(BadInput, match="no latency source for nasbench201 on 'local'"):
        latency_model(db, "local", CONFIG, space)
