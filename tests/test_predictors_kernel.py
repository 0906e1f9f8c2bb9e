"""Kernel regressors, calibration and model-file prediction on a real table profiled on `local`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.devices.registry import Registry
from edgelat.errors import BadInput
from edgelat.lut.store import kernel_rows, open_db
from edgelat.predictors.calibration import Calibration, group_sums, model_weights
from edgelat.predictors.kernel import KernelPredictor, table_specs
from edgelat.predictors.metrics import spearman
from edgelat.on_demand import predict_model_file
from edgelat.predictors import model_predict
from edgelat.predictors.sampling import perturb
from edgelat.profiler import networks
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.ops import KernelSpec

CONFIG = RuntimeConfig()
PROTOCOL = MeasurementProtocol(warmup=1, min_runs=5, max_runs=40, target_rel_ci=0.05, max_seconds=0.3)


def small_specs() -> list[KernelSpec]:
    """~150 small kernels: tiny nets at several resolutions and perturbations of their blocks."""
    base = [s for r in range(32, 113, 8) for s in networks.tiny_net(r)]
    rng = np.random.default_rng(0)
    out = list(base)
    for s in base:
        if s.op == "mbconv":
            p = perturb(s, rng)
            if p is not None and p.h <= 64:
                out.append(p)
    return list({s.key: s for s in out}.values())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A real kernel table of `local` (measured once for this module)."""
    db = open_db(tmp_path_factory.mktemp("kernel") / "edgelat.db")
    with Registry(db).connect("local") as client:
        job = profile_kernels(db, "local", client, small_specs(), CONFIG, PROTOCOL)
    assert job.measured > 100 and not job.failed
    return db


def test_regressors_predict_held_out_kernels_far_better_than_a_constant(table):
    specs, y = table_specs(table, "local", CONFIG)
    idx = np.flatnonzero([s.op == "mbconv" for s in specs])
    rng = np.random.default_rng(1)
    rng.shuffle(idx)
    test, train = idx[: len(idx) // 4], idx[len(idx) // 4 :]
    model = KernelPredictor().fit([specs[i] for i in train], y[train])
    assert model.ops_ == ["mbconv"]
    pred = model.predict_regressors([specs[i] for i in test])
    err = np.abs(pred - y[test]) / y[test]
    const_err = np.abs(np.median(y[train]) - y[test]) / y[test]
    assert np.median(err) < 0.25, np.median(err)
    assert np.mean(err) < 0.5 * np.mean(const_err)
    assert spearman(y[test], pred) > 0.85
    # out-of-fold predictions exist for every training kernel and are honest (not in-sample)
    oof = np.array([model.cv_pred_[specs[i].key] for i in train])
    assert not np.allclose(oof, y[train])
    assert set(model.cv_["mbconv"]) == {"linear", "forest", "boosted"}


def test_exact_table_hits_are_used_as_measured_and_missing_types_are_named(table):
    specs, y = table_specs(table, "local", CONFIG)
    model = KernelPredictor().fit(specs, y)
    got = model.predict_specs(specs[:10])
    assert np.array_equal(got, y[:10])
    assert model.hits(specs[:10]).all()
    # a conv measured with bn is also the answer for the same conv written without it
    conv = next(s for s in specs if s.op == "conv2d" and s.bn)
    plain = KernelSpec(**{**conv.to_dict(), "bn": False})
    assert model.predict_specs([plain])[0] == y[specs.index(conv)]
    unseen = KernelSpec("maxpool", 16, 16, 8, kernel=3, stride=2)
    with pytest.raises(BadInput, match="maxpool:h16,w16,cin8,k3,s2"):
        model.predict_specs([unseen])
    new_block = KernelSpec("mbconv", 20, 20, 24, 32, kernel=5, expand=4, act="relu")
    assert new_block.key not in model.table_
    assert 0 < model.predict_specs([new_block])[0] < 10


def test_predictor_is_stored_per_device_and_config_and_refreshes_its_table(table):
    assert KernelPredictor.load(table, "local", CONFIG) is None
    model = KernelPredictor.from_table(table, "local", CONFIG)
    model.save(table, "local", CONFIG)
    assert KernelPredictor.load(table, "local", RuntimeConfig(threads=2)) is None
    loaded = KernelPredictor.load(table, "local", CONFIG)
    probe = [KernelSpec("mbconv", 20, 20, 24, 32, kernel=5, expand=4, act="relu"), KernelSpec("mbconv", 18, 18, 16, 16, kernel=3, expand=3, act="relu")]
    assert np.allclose(loaded.predict_regressors(probe), model.predict_regressors(probe))
    # a kernel measured after the fit is an exact hit for the loaded predictor
    extra = KernelSpec("relu", 9, 9, 8)
    with Registry(table).connect("local") as client:
        profile_kernels(table, "local", client, [extra], CONFIG, PROTOCOL)
    # (the raw median; the normalized one only for a row measured under large drift: see table_specs)
    row = next(r for r in kernel_rows(table, "local", CONFIG) if r["kernel_key"] == extra.key)
    drifted = row["sentinel_level"] is not None and abs(row["sentinel_level"] - 1) > 0.05
    measured = row["median_norm_ms" if drifted else "median_ms"]
    assert KernelPredictor.load(table, "local", CONFIG).predict_specs([extra])[0] == measured


def test_calibration_picks_the_form_that_predicts_left_out_models():
    rng = np.random.default_rng(0)
    sums = rng.uniform(1, 30, 8)
    counts = rng.integers(10, 60, 8)
    measured = 1.2 * sums - 0.02 * counts  # per-kernel overhead counted once per kernel model
    cal = Calibration().fit(sums, counts, measured)
    assert cal.form_ == "ratio+count"
    assert np.allclose(cal.coef_, [1.2, -0.02])
    assert np.allclose(cal.loo_pred_, measured)
    assert np.allclose(cal.predict([10.0], [20]), [11.6])
    # with no evidence for a correction, identity is kept
    assert Calibration().fit([5.0], [10], [7.0]).form_ == "identity"
    # kernels measured one model each pay the model-run overhead once each, a model once:
    # with that overhead measured, the "overhead" form needs nothing fitted
    cal = Calibration(overhead_ms=0.01).fit(sums, counts, sums - 0.01 * (counts - 1))
    assert cal.form_ == "overhead" and np.allclose(cal.coef_, [0.01])
    assert np.allclose(cal.predict([3.0], [11]), [2.9])


def _model_with_softmax(tmp_path) -> str:
    specs = networks.tiny_net(48)[:5] + [KernelSpec("maxpool", 6, 6, 40, kernel=3, stride=2)]
    m = onnx.load_from_string(build_model(specs, "onnx"))
    m.graph.node.append(helper.make_node("Softmax", ["output"], ["prob"], name="softmax", axis=1))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 40, 3, 3]))
    path = tmp_path / "net.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def test_predict_model_file_measures_what_nothing_can_answer_and_stores_it(table, tmp_path):
    KernelPredictor.from_table(table, "local", CONFIG).save(table, "local", CONFIG)
    path = _model_with_softmax(tmp_path)
    before = len(kernel_rows(table, "local", CONFIG))
    # the predict side alone measures nothing: it names what the tables cannot answer
    with pytest.raises(BadInput, match=r"graph:Softmax x1.*measuring on demand was turned off"):
        model_predict.predict_model_file(table, "local", CONFIG, path)
    assert len(kernel_rows(table, "local", CONFIG)) == before
    first = predict_model_file(table, "local", CONFIG, path)
    assert {"device", "latency_ms", "kernels", "calibrated", "runtime"} <= set(first)
    types = [k["type"] for k in first["kernels"]]
    assert types[-2:] == ["maxpool", "graph:Softmax"]
    assert set(first["measured_now"]) == {first["kernels"][-2]["key"], first["kernels"][-1]["key"]}
    assert all(k["predicted_ms"] > 0 for k in first["kernels"])
    total = sum(k["predicted_ms"] for k in first["kernels"])
    assert first["latency_ms"] == first["kernels_sum_ms"] == pytest.approx(total)  # no calibration stored
    stored = {r["kernel_key"]: r for r in kernel_rows(table, "local", CONFIG)}
    softmax = first["kernels"][-1]
    assert stored[softmax["key"]]["op"] == "graph:Softmax"
    assert softmax["predicted_ms"] == stored[softmax["key"]]["median_ms"]
    # the second query finds them in the table: nothing measured, same answer
    second = predict_model_file(table, "local", CONFIG, path)
    assert second["measured_now"] == []
    assert second["latency_ms"] == pytest.approx(first["latency_ms"])
    assert [k["source"] for k in second["kernels"][-2:]] == ["table", "table"]
    assert model_predict.predict_model_file(table, "local", CONFIG, path)["latency_ms"] == second["latency_ms"]


def test_predict_model_file_names_the_kernels_when_the_device_cannot_measure(table, tmp_path):
    Registry(table).ensure_imported("phone-from-csv")
    path = _model_with_softmax(tmp_path)
    with pytest.raises(BadInput, match=r"graph:Softmax x1.*imported measurements"):
        predict_model_file(table, "phone-from-csv", CONFIG, path)
    with pytest.raises(BadInput, match="cannot read model file"):
        predict_model_file(table, "local", CONFIG, tmp_path / "missing.onnx")


def test_group_calibration_weighs_blocks_apart_and_falls_back_to_the_ratio():
    """Weight-heavy SE blocks cost more inside a model than alone; the group form learns
    one factor per kernel group, pulled toward the plain ratio where the models say little,
    and a group no calibration model had gets the ratio."""
    rng = np.random.default_rng(1)
    se_ms = rng.uniform(0, 6, 12)  # models from all-SE to no-SE; no "other" kernels
    parts = np.column_stack([se_ms, 6 - se_ms + rng.uniform(0, 1, 12), np.zeros(12)])
    counts = rng.integers(10, 30, 12)
    measured = parts @ [1.15, 0.95, 0.0]
    cal = Calibration(forms=("identity", "ratio", "ratio+count", "groups")).fit(parts, counts, measured)
    assert cal.form_ == "groups"
    ratio = Calibration(forms=("ratio",)).fit(parts.sum(axis=1), counts, measured).coef_[0]
    assert np.allclose(cal.coef_[:2], [1.15, 0.95], atol=0.03) and cal.coef_[2] == pytest.approx(ratio)
    assert cal.predict([[1.0, 2.0, 3.0]], [12])[0] == pytest.approx(cal.coef_ @ [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="per-group"):
        cal.predict([6.0], [12])
    # plain totals: the group forms are not candidates
    assert Calibration().fit(parts.sum(axis=1), counts, measured).form_ in ("ratio", "affine", "ratio+count", "identity")
    # a group that is 1% of every model, measured with 1% noise, stays near the ratio
    other = 0.01 * parts.sum(axis=1)
    noisy = (parts @ [1.15, 0.95, 0.0] + other) * (1 + 0.01 * rng.standard_normal(12))
    loose = Calibration(forms=("groups",)).fit(np.column_stack([parts[:, :2], other]), counts, noisy)
    assert abs(loose.coef_[2] - 1.0) < 0.5
    # the groups of real kernels
    se = KernelSpec("mbconv", 14, 14, 40, 40, kernel=5, expand=3, se=True, act="relu")
    block = KernelSpec("mbconv", 14, 14, 40, 40, kernel=3, expand=3, act="relu")
    assert np.allclose(group_sums([se, block, KernelSpec("relu", 7, 7, 8), "graph:Softmax"], [1, 2, 3, 4]), [1, 2, 7])


def test_spill_calibration_charges_the_weights_beyond_what_the_cache_keeps():
    """Models whose weights all stay cached run as fast as their kernels' sum; beyond the
    knot every extra weight is fetched from memory on each run. The knot is found among
    the models' own sizes, and a model under it pays nothing."""
    rng = np.random.default_rng(3)
    sums = rng.uniform(0.5, 12, 14)
    counts = rng.integers(15, 30, 14)
    weights = np.append(rng.uniform(0.05e6, 8e6, 13), 2e6)
    measured = 1.04 * sums - 0.008 * counts + 2e-7 * np.maximum(weights - 2e6, 0)
    cal = Calibration().fit(sums, counts, measured, weights)
    assert cal.form_ == "ratio+count+spill"
    assert np.allclose(cal.coef_, [1.04, -0.008, 2e-7, 2e6])
    assert cal.loo_mape_["ratio+count+spill"] < min(v for f, v in cal.loo_mape_.items() if f != "ratio+count+spill")
    small, big = cal.predict([3.0, 3.0], [20, 20], [1e6, 5e6])
    assert small == pytest.approx(1.04 * 3.0 - 0.008 * 20)
    assert big - small == pytest.approx(2e-7 * 3e6)
    with pytest.raises(ValueError, match="weights"):
        cal.predict([3.0], [20])
    # without the models' weights the form is not a candidate
    assert "ratio+count+spill" not in Calibration().fit(sums, counts, measured).loo_mape_
    # the weights of a split model: kernels' parameters (graph kernels': test_predictors_graph), nothing for a bare key
    block = KernelSpec("mbconv", 14, 14, 40, 40, kernel=3, expand=3, act="relu")
    fc = KernelSpec("fc", 1, 1, 1280, 1000)
    assert model_weights([block, fc, KernelSpec("relu", 7, 7, 8), "graph:Softmax"]) == block.params() + 1280 * 1000 + 1000


def test_trees_learn_what_an_off_grid_channel_count_costs():
    """A device whose depthwise convs take a 3x slower path off the grid of 4 channels (onnxruntime's
    CPU provider on x86 does): the regressors price an unseen 58-channel conv as slower than its
    aligned neighbours, which only the alignment features can tell them."""
    rng = np.random.default_rng(7)
    specs, y = [], []
    for _ in range(400):
        c = int(rng.integers(16, 160))
        h = int(rng.choice((7, 14, 28, 56)))
        s = KernelSpec("dwconv2d", h, h, c, kernel=int(rng.choice((3, 5))), stride=int(rng.choice((1, 2))), bn=True)
        if h == 28 and 54 <= c <= 62:
            continue  # the probes' neighbourhood is never measured
        specs.append(s)
        y.append(0.004 + s.flops() / 2e8 * (3.0 if c % 4 else 1.0))
    model = KernelPredictor(candidates=("forest", "boosted")).fit(specs, np.array(y))
    probe = [KernelSpec("dwconv2d", 28, 28, c, kernel=3, stride=1, bn=True) for c in (56, 58, 60)]
    aligned_56, off_58, aligned_60 = model.predict_specs(probe)
    assert off_58 > 1.7 * aligned_56 and off_58 > 1.7 * aligned_60  # the rule gives 2.0 at this size


def test_calibration_judged_on_families_left_out_prefers_the_form_that_carries_over():
    """Two families: in one, the whole model is the kernel sum less one fixed cost per kernel;
    the other's kernel counts are ten times larger. Judged on single models left out, a
    free ratio fits the first family's narrow span as well; left out by family it must
    predict the second family from the first, which only the per-kernel term does."""
    from edgelat.predictors.calibration import model_family

    rng = np.random.default_rng(3)
    sums, counts, y, names = [], [], [], []
    for i in range(12):
        n = int(rng.integers(18, 24)) if i < 8 else int(rng.integers(150, 200))
        s = float(rng.uniform(2.0, 4.0)) if i < 8 else float(rng.uniform(1.5, 3.0))
        sums.append(s)
        counts.append(n)
        y.append((s - 0.004 * (n - 1)) * float(rng.normal(1.0, 0.002)))
        names.append(f"mobilenetv2-{96 + i}-1.0" if i < 8 else f"resnet-basic-{96 + i}-0.25")
    families = [model_family(n) for n in names]
    assert families == ["mobilenetv"] * 8 + ["resnet"] * 4
    forms = ("ratio", "ratio+count")
    by_family = Calibration(forms=forms).fit(sums, counts, y, families=families)
    assert by_family.form_ == "ratio+count"
    assert by_family.loo_mape_["ratio"] > 5 * by_family.loo_mape_["ratio+count"]
    # the ResNets' out-of-sample predictions come from a fit on the MobileNets alone, and each
    # family weighs the same in the error whatever its number of models
    ratio = Calibration(forms=("ratio",)).fit(sums, counts, y, families=families)
    alone = Calibration(forms=("ratio",)).fit(sums[:8], counts[:8], y[:8])
    assert np.allclose(ratio.loo_pred_[8:], alone.predict(sums[8:], counts[8:]))
    err = np.abs(ratio.loo_pred_ - np.array(y)) / np.array(y)
    assert np.isclose(by_family.loo_mape_["ratio"], (err[:8].mean() + err[8:].mean()) / 2)
