"""Layout conversions a kernel pays alone and a model does not (``predictors/layout.py``).

The rules are checked against onnxruntime itself: the graph it optimizes for this machine
holds a ``ReorderInput``/``ReorderOutput`` node for every conversion it makes, on real models
as PyTorch's exporter wrote them (``tests/data/real-models``). The probe runs on the real
onnxruntime; the calibration, predict and search paths take the same prices off.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgelat.predictors.calibration import Calibration, group_sums, model_parts, model_weights
from edgelat.predictors.graph import GRAPH_EDGE, split_file, split_model
from edgelat.predictors.latency import TableLatency
from edgelat.predictors.layout import (
    ChainLayout, LayoutCost, alone_conversions, chain_links, converts, in_model_prices, saved_conversions,
)
from edgelat.predictors.layout_probe import fit_slope, link_saving, measure_layout_cost
from edgelat.profiler.builders import build_model
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.spaces import get_space
from edgelat.values import RuntimeConfig

from real_models import materialize


def _ort_conversions(path, tmp_path) -> int | None:
    """Conversions onnxruntime's optimized graph of ``path`` makes on this machine (None where
    it runs no blocked layout: no NCHWc kernels on this CPU)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False).graph.node
    if not any(n.domain == "com.microsoft.nchwc" for n in nodes):
        return None
    ops = Counter(n.op_type for n in nodes)
    return ops["ReorderInput"] + ops["ReorderOutput"]


# Models whose blocked runs onnxruntime ends only at the classifier (one conversion), and two
# whose runs a channel shuffle (Split/Transpose) or squeeze-excite gates (Mul) break again and again.
@pytest.mark.parametrize("name", ["squeezenet1_1", "mobilenet_v2", "mnasnet0_5", "regnet_x_400mf",
                                  "shufflenet_v2_x1_0", "regnet_y_400mf"])
def test_the_conversions_a_model_still_makes_are_the_ones_onnxruntime_makes(name, tmp_path):
    path = materialize(name, tmp_path)
    expected = _ort_conversions(path, tmp_path)
    if expected is None:
        pytest.skip("onnxruntime runs no blocked layout on this CPU")
    split = split_file(path)
    saved = saved_conversions(split.items, split.links)
    paid = sum(alone_conversions(split.items)) - sum(c for c, _ in saved)
    # onnxruntime shares one conversion among the consumers of a tensor (a squeeze-excite input
    # feeds the pool and the gate); counted per kernel, a few more
    assert expected <= paid <= expected + max(1, expected // 10), (paid, expected)
    assert sum(c for c, _ in saved) > 0.5 * sum(alone_conversions(split.items))


def test_links_name_each_item_s_producers_and_consumers(tmp_path):
    split = split_file(materialize("squeezenet1_1", tmp_path))
    assert len(split.links) == len(split.items)
    assert split.links[0][0] == (GRAPH_EDGE,)  # the stem reads the model's input
    # the first fire module: one squeeze conv feeds two expand convs, whose outputs one concat joins
    squeeze = next(i for i, k in enumerate(split.items) if k.op == "conv2d" and k.kernel == 1)
    expands = split.links[squeeze][1]
    assert len(expands) == 2 and all(split.items[e].op == "conv2d" for e in expands)
    concat = {c for e in expands for c in split.links[e][1]}
    assert len(concat) == 1 and split.items[concat.pop()].op == "concat"
    # every link is seen from both ends
    for i, (prods, cons) in enumerate(split.links):
        assert all(i in split.links[p][1] for p in prods if p >= 0)
        assert all(i in split.links[c][0] for c in cons if c >= 0)


def test_a_chain_saves_the_conversions_between_blocked_kernels_only():
    conv = KernelSpec.from_key("conv2d:h56,w56,cin32,cout32,k1,s1,relu")
    swish = KernelSpec.from_key("conv2d:h56,w56,cin32,cout32,k1,s1,swish")
    stem = KernelSpec.from_key("conv2d:h56,w56,cin3,cout32,k3,s1,relu")
    gap = KernelSpec.from_key("global-avgpool:h56,w56,cin32")
    elements = 56 * 56 * 32.0
    got = saved_conversions([stem, conv, swish, conv, gap], chain_links(5))
    # the stem reads three channels as they are (nothing to save on its input); its output and
    # the next conv's input are saved; the swish conv's output leaves the blocked layout, so
    # its consumer converts as alone; the pool does not run blocked
    assert got == [(1, elements), (2, 2 * elements), (1, elements), (0, 0.0), (0, 0.0)]
    assert alone_conversions([stem, conv, swish, conv, gap]) == [1, 2, 2, 2, 0]
    cost = LayoutCost(1e-7)
    ms = [0.1, 0.2, 0.2, 0.2, 0.01]
    expect = [0.1 - 1e-7 * elements, 0.2 - 2e-7 * elements, 0.2 - 1e-7 * elements, 0.2, 0.01]
    assert in_model_prices([stem, conv, swish, conv, gap], None, ms, cost) == pytest.approx(expect)
    assert in_model_prices([stem, conv], None, ms[:2], None) == ms[:2]
    # never below a fifth of the alone price, however large the price per element
    assert in_model_prices([conv, conv], None, [0.2, 0.2], LayoutCost(1.0)) == pytest.approx([0.04, 0.04])


def test_only_onnxruntime_on_cpu_converts():
    assert converts(RuntimeConfig())
    assert not converts(RuntimeConfig(runtime="litert"))
    assert not converts(RuntimeConfig(provider="cuda"))


def _priced_space(seed: int):
    """The ofa-mbv3 space, made-up prices of its vocabulary, and one architecture's prices."""
    space = get_space("ofa-mbv3")
    vocab = space.kernel_vocabulary()
    rng = np.random.default_rng(seed)
    prices = rng.uniform(0.01, 0.5, len(vocab))
    index = {k.key: i for i, k in enumerate(vocab)}
    return space, vocab, prices, rng, lambda ks: [prices[index[k.key]] for k in ks]


def test_search_takes_off_what_predict_takes_off_an_exported_network():
    space, vocab, prices, _, price_of = _priced_space(5)
    cost = LayoutCost(8e-8)
    pop = space.sample(np.random.default_rng(9), 64)
    ordered, got = ChainLayout(vocab, cost).prices(space.kernel_ids(pop), np.append(prices, 0.0))
    for i in range(len(pop)):
        ks = space.kernels(pop[i])
        ms = price_of(ks)
        assert [vocab[j].key for j in ordered[i] if j >= 0] == [k.key for k in ks]
        assert got[i][: len(ks)] == pytest.approx(in_model_prices(ks, None, ms, cost), rel=1e-12)
        assert not got[i][len(ks):].any()
    # the chain a search assumes is the graph the exported file holds
    for g in pop[:3]:
        split = split_model(space.export(g, "onnx"), "onnx")
        ks = space.kernels(g)
        assert [k.key for k in split.items] == [k.key for k in ks]
        assert saved_conversions(split.items, split.links) == saved_conversions(ks, None)


def test_a_calibrated_search_prices_an_architecture_as_its_kernel_list():
    space, vocab, prices, rng, price_of = _priced_space(3)
    cost = LayoutCost(8e-8)
    train = space.sample(rng, 40)
    sums, counts, weights, measured = [], [], [], []
    for g in train:
        ks = space.kernels(g)
        parts = model_parts(ks, price_of(ks), cost)
        sums.append(parts), counts.append(len(ks)), weights.append(model_weights(ks))
        measured.append(0.95 * parts.sum() + 0.003 * len(ks) + rng.normal(0, 0.01))
    cal = Calibration(forms=("identity", "groups+count")).fit(sums, counts, measured, weights)
    cal.layout_ = cost
    pop = space.sample(np.random.default_rng(8), 100)
    model = TableLatency(space, "dev", "cfg", prices, calibration=cal)
    assert model.describe()["layout_per_element_ms"] == 8e-8
    got = model.predict(pop)
    for i in (0, 17, 99):
        ks = space.kernels(pop[i])
        ms = price_of(ks)
        assert got[i] == pytest.approx(cal.predict([model_parts(ks, ms, cost)], [len(ks)], [model_weights(ks)])[0], rel=1e-9)
        # and the conversions really come off
        assert got[i] < cal.predict([group_sums(ks, ms)], [len(ks)], [model_weights(ks)])[0]


def test_a_calibration_keeps_its_layout_price(tmp_path):
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "x.db")
    cal = Calibration(forms=("identity", "ratio")).fit([1.0, 2.0, 3.0], [1, 2, 3], [1.1, 2.2, 3.3])
    cal.layout_ = LayoutCost(7.5e-8)
    cal.save(db, "dev", RuntimeConfig())
    back = Calibration.load(db, "dev", RuntimeConfig())
    assert back.layout_ == LayoutCost(7.5e-8)
    cal.layout_ = None
    cal.save(db, "dev", RuntimeConfig())
    assert Calibration.load(db, "dev", RuntimeConfig()).layout_ is None


def test_the_link_saving_and_its_slope():
    assert link_saving(0.1, 0.24) == pytest.approx(0.03)
    slope, intercept = fit_slope([1e5, 2e5, 4e5], [0.011, 0.021, 0.041])
    assert slope == pytest.approx(1e-7) and intercept == pytest.approx(0.001)


def test_the_probe_measures_chains_saving_conversions_on_onnxruntime(tmp_path):
    import sqlite_utils

    from edgelat.agents.client import LocalClient
    from edgelat.agents.local import LocalBackend

    db = sqlite_utils.Database(tmp_path / "x.db")
    with LocalClient(LocalBackend(root=str(tmp_path)), cache_dir=tmp_path / "cache") as client:
        probe = measure_layout_cost(db, "local", client, RuntimeConfig(threads=1), rounds=2)
    assert len(probe.slopes) == 2 and len(probe.probes) == 8
    if _no_blocked_layout(tmp_path):
        pytest.skip("onnxruntime runs no blocked layout on this CPU")
    # on a CPU where onnxruntime converts, every chain saves, and larger maps save more
    assert all(p["saved_ms"] > 0 for p in probe.probes)
    assert probe.cost.per_element_ms > 0
    by_size = sorted(probe.probes, key=lambda p: p["elements"])
    assert by_size[-1]["saved_ms"] > by_size[0]["saved_ms"]
    assert not db.table_names() or "kernel_measurements" not in db.table_names() or not db["kernel_measurements"].count
    assert json.loads(json.dumps(probe.to_dict()))["per_element_ms"] == probe.cost.per_element_ms


def _no_blocked_layout(tmp_path) -> bool:
    path = tmp_path / "probe.onnx"
    path.write_bytes(build_model([KernelSpec.from_key("dwconv2d:h28,w28,cin32,k3,s1,relu")] * 2, "onnx"))
    sub = tmp_path / "opt"
    sub.mkdir()
    return _ort_conversions(path, sub) is None


def test_predict_takes_the_conversions_off_a_real_model_before_its_calibration(tmp_path):
    from edgelat.lut.store import open_db
    from edgelat.on_demand import predict_model_file
    from edgelat.predictors.calibration import kernel_weights
    from edgelat.values import MeasurementProtocol

    config = RuntimeConfig(threads=1)
    short = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, target_rel_ci=0.5, max_seconds=0.05)
    db = open_db()
    path = materialize("squeezenet1_1", tmp_path)
    first = predict_model_file(db, "local", config, path, protocol=short, speed_check=False)  # measures its kernels
    assert first["layout"] is None and not first["calibrated"]  # no calibration, nothing taken off
    cal = Calibration(forms=("identity", "ratio")).fit([1.0, 2.0, 3.0], [1, 2, 3], [1.2, 2.4, 3.6])
    cal.layout_ = LayoutCost(8e-8)
    cal.save(db, "local", config)
    out = predict_model_file(db, "local", config, path, speed_check=False)
    split = split_file(path)
    ms = [k["predicted_ms"] for k in out["kernels"]]
    parts = model_parts(split.items, ms, cal.layout_, split.links)
    assert out["latency_ms"] == pytest.approx(cal.predict([parts], [len(ms)], [kernel_weights(split.items)])[0])
    assert out["layout"]["saved_ms"] == pytest.approx(sum(ms) - parts.sum()) and out["layout"]["saved_ms"] > 0
    assert out["layout"]["conversions_not_made"] == sum(c for c, _ in saved_conversions(split.items, split.links)) > 40
    assert out["layout"]["per_element_ms"] == 8e-8
    assert out["latency_ms"] < 1.2 * out["kernels_sum_ms"]  # the ratio alone would give exactly that
