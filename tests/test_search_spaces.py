"""Search spaces: genotypes, strings, kernel decompositions, FLOPs/params, export."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from help_data import FBNET, NB201, NB201_EVERY_ARCH, OFA
from search_helpers import TINY_SPACE_YAML, read_help

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.spaces import SPACE_NAMES, get_space
from edgelat.profiler.spaces.yaml_space import example_path, load_yaml_space

ALL = list(SPACE_NAMES) + ["yaml-example"]


def space_of(name: str):
    return get_space(str(example_path()) if name == "yaml-example" else name)


def ofa(ks, e, d, r) -> str:
    return str({"ks": [ks] * 20 if isinstance(ks, int) else ks, "e": [e] * 20 if isinstance(e, int) else e,
                "d": [d] * 5 if isinstance(d, int) else d, "r": r})


# ------------------------------------------------------------------ genotypes
@pytest.mark.parametrize("name", ALL)
def test_sample_mutate_crossover_stay_valid(name):
    space = space_of(name)
    rng = np.random.default_rng(0)
    pop = space.sample(rng, 500)
    assert pop.shape == (500, space.dim) and pop.dtype == np.int16
    assert (pop >= 0).all() and (pop < space.cardinalities).all()
    # every choice of every gene shows up in a large sample (uniform sampling)
    big = space.sample(rng, 4000)
    for i, card in enumerate(space.cardinalities):
        assert set(np.unique(big[:, i])) == set(range(card))
    assert (space.mutate(rng, pop, 0.0) == pop).all()
    mutated = space.mutate(rng, pop, 1.0)
    assert space.check(mutated).shape == pop.shape
    changed = (mutated != pop).mean()
    expected = np.mean(1 - 1 / space.cardinalities)  # a resampled gene keeps its value 1/card of the time
    assert abs(changed - expected) < 0.05
    some = (space.mutate(rng, pop, 0.1) != pop).mean()
    assert 0.1 * expected * 0.6 < some < 0.1 * expected * 1.4
    a, b = pop[:250], pop[250:]
    child = space.crossover(rng, a, b)
    assert ((child == a) | (child == b)).all()
    assert 0.3 < (child == a)[a != b].mean() < 0.7


@pytest.mark.parametrize("name", ALL)
def test_check_rejects_bad_genotypes(name):
    space = space_of(name)
    g = space.sample(np.random.default_rng(1), 1)
    bad = g.astype(np.int64)
    bad[0, 0] = space.cardinalities[0]
    with pytest.raises(BadInput):
        space.kernel_ids(bad)
    bad[0, 0] = -1
    with pytest.raises(BadInput):
        space.kernel_ids(bad)
    with pytest.raises(BadInput):
        space.kernel_ids(np.zeros((1, space.dim + 1), dtype=np.int16))


# ------------------------------------------------------------------ strings
@pytest.mark.parametrize("name,csv_name", [
    ("ofa-mbv3", OFA), ("fbnet", FBNET), ("nasbench201", NB201_EVERY_ARCH),
])
def test_every_dataset_arch_round_trips(name, csv_name):
    space = get_space(name)
    archs, _ = read_help(csv_name, read_help_first_device(csv_name))
    pop = space.from_strings(archs)
    printed = [space.to_string(g) for g in pop]
    if name in ("ofa-mbv3", "proxyless"):  # the dataset's Python dict literals, printed as JSON
        import ast
        import json

        assert [json.loads(s) for s in printed] == [ast.literal_eval(a) for a in archs]
    else:
        assert printed == archs
    np.testing.assert_array_equal(space.from_strings(printed), pop)


def read_help_first_device(csv_name: str) -> str:
    import csv

    from help_data import help_csv

    with open(help_csv(csv_name), newline="") as fh:
        return csv.DictReader(fh).fieldnames[2]


@pytest.mark.parametrize("name", ALL)
def test_sampled_strings_round_trip(name):
    space = space_of(name)
    pop = space.sample(np.random.default_rng(2), 200)
    assert (space.from_strings(space.to_strings(pop)) == pop).all()


@pytest.mark.parametrize("name,bad", [
    ("ofa-mbv3", "not a dict"),
    ("ofa-mbv3", "[1, 2]"),
    ("ofa-mbv3", "{'ks': [3]}"),
    ("ofa-mbv3", ofa(3, 3, 2, 130)),  # resolution not on the 4-pixel grid
    ("ofa-mbv3", ofa(4, 3, 2, 128)),  # kernel 4
    ("ofa-mbv3", ofa(3, 5, 2, 128)),  # expand 5
    ("ofa-mbv3", ofa(3, 3, 5, 128)),  # depth 5
    ("ofa-mbv3", ofa([3] * 19, 3, 2, 128)),  # 19 kernels
    ("ofa-mbv3", ofa(3, 3, 2, "128")),
    ("ofa-mbv3", "__import__('os').system('true')"),
    ("fbnet", "k3_e1 " * 21),
    ("fbnet", "k3_e1 " * 21 + "k7_e6"),
    ("nasbench201", "|nor_conv_3x3~0|+|none~0|"),
    ("nasbench201", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
    ("nasbench201", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"),
    ("proxyless", ofa(3, 3, 2, 224)),  # 20 blocks instead of 21
])
def test_malformed_strings_raise_bad_input(name, bad):
    space = get_space(name)
    with pytest.raises(BadInput) as exc:
        space.from_string(bad)
    assert "\n" not in str(exc.value)


def test_unknown_space_lists_valid_names():
    with pytest.raises(BadInput, match="ofa-mbv3.*proxyless.*fbnet.*nasbench201"):
        get_space("mobilenet-v9")


# ------------------------------------------------------------------ kernels
OFA_STAGES = ((24, 2, False, "relu"), (40, 2, True, "relu"), (80, 2, False, "hswish"),
              (112, 1, True, "hswish"), (160, 2, True, "hswish"))


def ofa_reference_keys(arch: dict) -> list[str]:
    """OFA-MBv3 kernels written out by hand from the paper's architecture."""
    r = arch["r"]
    h = math.ceil(r / 2)
    keys = [KernelSpec("conv2d", r, r, 3, 16, 3, 2, act="hswish", bn=True).key,
            KernelSpec("mbconv", h, h, 16, 16, 3, 1, 1.0, act="relu").key]
    cin = 16
    for s, (width, stride, se, act) in enumerate(OFA_STAGES):
        for p in range(arch["d"][s]):
            b = 4 * s + p
            st = stride if p == 0 else 1
            keys.append(KernelSpec("mbconv", h, h, cin, width, arch["ks"][b], st, arch["e"][b], se, act).key)
            h, cin = math.ceil(h / st), width
    keys += [KernelSpec("conv2d", h, h, 160, 960, 1, 1, act="hswish", bn=True).key,
             KernelSpec("global-avgpool", h, h, 960).key,
             KernelSpec("fc", 1, 1, 960, 1280, act="hswish").key,
             KernelSpec("fc", 1, 1, 1280, 1000).key]
    return keys


def test_ofa_kernels_match_hand_written_architecture():
    import ast

    space = get_space("ofa-mbv3")
    archs, _ = read_help(OFA, "v100_1")
    for s in archs[:300]:
        g = space.from_string(s)
        assert [k.key for k in space.kernels(g)] == ofa_reference_keys(ast.literal_eval(s))


def test_ofa_vocabulary_covers_all_resolutions_and_nothing_more():
    space = get_space("ofa-mbv3")
    vocab = space.kernel_vocabulary()
    keys = [k.key for k in vocab]
    assert len(keys) == len(set(keys))
    stems = {k.h for k in vocab if k.op == "conv2d" and k.cin == 3}
    assert stems == set(range(128, 225, 4))
    # every vocabulary kernel is used by some architecture, and ids are in range
    pop = space.sample(np.random.default_rng(3), 60000)
    ids = space.kernel_ids(pop)
    assert ids.dtype == np.int32 and ids.min() >= -1 and ids.max() < len(vocab)
    assert len(np.unique(ids[ids >= 0])) == len(vocab)


def test_inactive_blocks_change_nothing():
    space = get_space("ofa-mbv3")
    a = space.from_string(ofa(3, 3, 2, 160))
    ks = [3] * 20
    ks[2] = ks[3] = 7  # blocks 3-4 of stage 1 are past depth 2
    b = space.from_string(ofa(ks, 3, 2, 160))
    assert not (a == b).all()
    assert (space.kernel_ids(a) == space.kernel_ids(b)).all()
    assert (space.encode(a) == space.encode(b)).all()
    assert space.flops(a)[0] == space.flops(b)[0]


@pytest.mark.parametrize("name", ALL)
def test_flops_params_are_sums_over_kernels(name):
    space = space_of(name)
    pop = space.sample(np.random.default_rng(4), 20)
    flops, params = space.flops(pop), space.params(pop)
    for i, g in enumerate(pop):
        ks = space.kernels(g)
        assert flops[i] == sum(k.flops() for k in ks)
        assert params[i] == sum(k.params() for k in ks)
    fig = space.figures(pop)
    assert (fig["flops"] == flops).all() and (fig["params"] == params).all()
    assert (fig["memory_bytes"] > 4 * params).all()


@pytest.mark.parametrize("name", ALL)
def test_encode_is_float32_fixed_width(name):
    space = space_of(name)
    pop = space.sample(np.random.default_rng(5), 64)
    x = space.encode(pop)
    assert x.dtype == np.float32 and x.shape[0] == 64 and x.shape[1] == space.encode(pop[:1]).shape[1]
    assert np.isfinite(x).all()
    # different architectures (with different kernels) get different encodings
    ids = space.kernel_ids(pop)
    for i in range(10):
        for j in range(i + 1, 10):
            if not (ids[i] == ids[j]).all():
                assert not (x[i] == x[j]).all()


def test_ofa_params_and_flops_match_known_figures():
    space = get_space("ofa-mbv3")
    big = space.from_string(ofa(7, 6, 4, 224))
    small = space.from_string(ofa(3, 3, 2, 128))
    # OFA reports the largest MobileNetV3 subnet (w1.0) at about 7.7M parameters
    assert abs(space.params(big)[0] - 7.7e6) / 7.7e6 < 0.02
    assert space.params(big)[0] == 7_645_128
    assert space.params(small)[0] < space.params(big)[0]
    # resolution changes FLOPs, not parameters
    big160 = space.from_string(ofa(7, 6, 4, 160))
    assert space.params(big160)[0] == space.params(big)[0]
    ratio = space.flops(big)[0] / space.flops(big160)[0]
    assert 1.8 < ratio < (224 / 160) ** 2 + 0.01  # head fc layers do not scale


def test_nasbench201_params_match_the_benchmark():
    space = get_space("nasbench201")
    full = space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    # NAS-Bench-201 (CIFAR-10) tops out at 1.53M parameters
    assert abs(space.params(full)[0] - 1.53e6) / 1.53e6 < 0.01
    empty = space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert space.params(empty)[0] < 0.2e6


def test_nasbench201_cell_kernels():
    space = get_space("nasbench201")
    g = space.from_string("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|")
    ops = [k.op for k in space.kernels(g)]
    # per cell: relu+conv (edge 1<-0), nothing for skip/none into node 2 (one input: no add),
    # avgpool, relu+conv, skip into node 3 (3 inputs: 2 adds); 15 cells
    assert ops.count("avgpool") == 15 + 2  # cells + the two reduction shortcuts
    assert ops.count("add") == 15 * 2 + 2
    assert ops.count("mul") == 0
    zero = space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert [k.op for k in space.kernels(zero)].count("mul") == 15 * 3  # each node is a zero tensor


def test_nasbench201_decomposition_explains_measured_latency():
    """The kernel counts of each architecture linearly explain real measured latency
    (least squares on half the archs, checked on the other half)."""
    from scipy.stats import spearmanr

    space = get_space("nasbench201")
    archs, ms = read_help(NB201, "1080ti_1")
    pop = space.from_strings(archs)
    ids = space.kernel_ids(pop)
    n_vocab = len(space.kernel_vocabulary())
    x = np.zeros((len(pop), n_vocab + 1))
    for j in range(ids.shape[1]):
        np.add.at(x, (np.arange(len(pop)), ids[:, j]), 1.0)
    train = np.arange(len(pop)) % 2 == 0
    w, *_ = np.linalg.lstsq(x[train, :n_vocab], ms[train], rcond=None)
    pred = x[~train, :n_vocab] @ w
    assert spearmanr(pred, ms[~train])[0] > 0.97


def test_fbnet_grouped_blocks_are_priced_as_two_half_convs():
    space = get_space("fbnet")
    plain = space.from_string(" ".join(["k3_e1"] * 22))
    grouped = space.from_string(" ".join(["k3_e1_g2"] * 22))
    kp, kg = space.kernels(plain), space.kernels(grouped)
    assert len(kg) > len(kp)
    half = [k for k in kg if k.op == "conv2d" and k.h == 112 and k.cin == 8]
    # layer 0 (16 -> 16) pw and pwl, and layer 1's pw (16 -> 16 before its stride): each two 8-channel convs
    assert len(half) == 3 * 2
    assert space.params(grouped)[0] < space.params(plain)[0]
    skip = space.from_string(" ".join(["skip"] * 22))
    assert [k.op for k in space.kernels(skip)].count("conv2d") == 1 + 6 + 1  # stem, shape changes, head


# ------------------------------------------------------------------ export
def run_onnx(data: bytes) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random(inp.shape, dtype=np.float32)
    return sess.run(None, {inp.name: x})[0]


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "proxyless", "yaml-example"])
def test_onnx_export_runs(name):
    space = space_of(name)
    g = space.sample(np.random.default_rng(6), 1)[0]
    data = space.export(g, "onnx", seed=1)
    onnx.checker.check_model(onnx.load_from_string(data))
    out = run_onnx(data)
    assert out.ndim == 2 and out.shape[0] == 1 and np.isfinite(out).all()
    assert space.export(g, "onnx", seed=1) == data  # deterministic


def test_nasbench201_export_holds_exactly_the_priced_kernels():
    space = get_space("nasbench201")
    counts = {"Conv": "conv2d", "Relu": "relu", "AveragePool": "avgpool", "Add": "add", "Mul": "mul"}
    for g in space.sample(np.random.default_rng(7), 12):
        model = onnx.load_from_string(space.export(g, "onnx"))
        ops = [k.op for k in space.kernels(g)]
        for onnx_op, kernel_op in counts.items():
            assert sum(n.op_type == onnx_op for n in model.graph.node) == ops.count(kernel_op), (space.to_string(g), onnx_op)


def test_ofa_exports_to_both_formats_with_the_same_function():
    from ai_edge_litert.interpreter import Interpreter

    space = get_space("ofa-mbv3")
    g = space.from_string(ofa(3, 3, 2, 128))
    onnx_out = run_onnx(space.export(g, "onnx", seed=3))
    interp = Interpreter(model_content=space.export(g, "tflite", seed=3))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    interp.set_tensor(inp["index"], x.transpose(0, 2, 3, 1).copy())
    interp.invoke()
    tfl_out = interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(1, -1)
    assert onnx_out.shape == (1, 1000)
    np.testing.assert_allclose(tfl_out, onnx_out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["nasbench201", "fbnet"])
def test_dag_spaces_refuse_tflite(name):
    space = get_space(name)
    with pytest.raises(BadInput, match="not supported"):
        space.export(space.sample(np.random.default_rng(0), 1)[0], "tflite")


def test_unknown_format():
    space = get_space("nasbench201")
    with pytest.raises(BadInput, match="onnx or tflite"):
        space.export(space.sample(np.random.default_rng(0), 1)[0], "pb")


# ------------------------------------------------------------------ YAML spaces
def test_yaml_space_loads_and_names_widths(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE_YAML)
    space = get_space(str(path))
    assert space.name == "tiny-test"
    g = space.sample(np.random.default_rng(0), 1)[0]
    s = space.to_string(g)
    assert '"w": [' in s and (space.from_string(s) == g).all()
    # a wider first stage widens the input of the second stage's first block
    narrow = space.from_string("{'ks': [3, 3, 3, 3], 'e': [2, 2, 2, 2], 'd': [1, 1], 'w': [8, 16], 'r': 32}")
    wide = space.from_string("{'ks': [3, 3, 3, 3], 'e': [2, 2, 2, 2], 'd': [1, 1], 'w': [16, 16], 'r': 32}")
    assert [k.cin for k in space.kernels(narrow) if k.op == "mbconv"] == [8, 8]
    assert [k.cin for k in space.kernels(wide) if k.op == "mbconv"] == [8, 16]


@pytest.mark.parametrize("patch,message", [
    (("kernels: [3, 5]", "kernels: [3, 4]"), "must be odd"),
    (("name: tiny-test", "name: 'bad name!'"), "invalid name"),
    (("stride: 2, act: relu}", "stride: 3, act: relu}"), "use 1 or 2"),
    (("act: hswish}", "act: gelu}"), "unknown activation"),
    (("  - {op: gap}\n", ""), "fc needs a gap"),
    (("resolutions: [32]", "resolution: [32]"), "unknown key"),
    (("depths: [1, 2], kernels: [3, 5]", "depths: [1, 2], kernel: [3, 5]"), "unknown key"),
    (("stages:", "stages: {}\nx:"), "unknown key"),
    (("{widths: [8, 16]", "{widths: [8, 8]"), "duplicate"),
    (("resolutions: [32]", "resolutions: [32\n"), "not valid YAML"),
])
def test_yaml_space_errors_name_file_and_field(tmp_path, patch, message):
    path = tmp_path / "broken.yaml"
    path.write_text(TINY_SPACE_YAML.replace(*patch))
    with pytest.raises(BadInput, match=message) as exc:
        load_yaml_space(path)
    assert str(path) in str(exc.value)


def test_missing_yaml_file():
    with pytest.raises(BadInput, match="cannot read space file"):
        get_space("/nonexistent/space.yaml")
