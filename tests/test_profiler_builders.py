"""ONNX and TFLite builders: real onnxruntime and LiteRT runs compute the same function."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgelat.errors import BadInput
from edgelat.profiler.builders import build_model
from edgelat.profiler.lowering import lower
from edgelat.profiler.ops import ACTIVATION_OPS, OP_TYPES, KernelSpec, same_pads
from edgelat.profiler.networks import get_network
from edgelat.profiler.presets import get_preset
from profiler_helpers import ATOL, RTOL, expected_shape, run_both

SINGLE = [
    KernelSpec("conv2d", 15, 13, 3, 8, kernel=3, stride=2),
    KernelSpec("conv2d", 12, 12, 8, 16, kernel=5, stride=1, bn=True, act="relu6"),
    KernelSpec("conv2d", 8, 8, 8, 8, kernel=1, bn=True, act="hsigmoid"),
    KernelSpec("dwconv2d", 11, 11, 8, kernel=3, stride=2, bn=True, act="relu"),
    KernelSpec("dwconv2d", 10, 10, 8, kernel=7, stride=1, bn=True, act="swish"),
    KernelSpec("fc", 1, 1, 48, 20),
    KernelSpec("fc", 1, 1, 48, 20, act="hswish"),
    KernelSpec("maxpool", 9, 9, 4, kernel=3, stride=2),
    KernelSpec("avgpool", 9, 9, 4, kernel=3, stride=2),
    KernelSpec("avgpool", 8, 8, 4, kernel=2, stride=2),
    KernelSpec("global-avgpool", 7, 7, 16),
    KernelSpec("add", 6, 5, 8),
    KernelSpec("mul", 6, 5, 8),
    KernelSpec("concat", 6, 5, 8, 3),
    *(KernelSpec(a, 6, 5, 8) for a in ACTIVATION_OPS),
    KernelSpec("se", 6, 6, 24),
    KernelSpec("mbconv", 10, 10, 16, 16, kernel=3, expand=3, act="relu"),
    KernelSpec("mbconv", 10, 10, 16, 24, kernel=5, stride=2, expand=4, se=True, act="hswish"),
    KernelSpec("mbconv", 9, 9, 16, 16, kernel=7, expand=1, se=True, act="relu6"),
]

CHAINS = {
    "three-mbconv": [
        KernelSpec("mbconv", 16, 16, 8, 16, kernel=3, stride=2, expand=4, act="relu"),
        KernelSpec("mbconv", 8, 8, 16, 16, kernel=5, expand=3, se=True, act="hswish"),
        KernelSpec("mbconv", 8, 8, 16, 24, kernel=7, stride=2, expand=6, se=True, act="hswish"),
    ],
    "head": [
        KernelSpec("conv2d", 5, 5, 16, 32, kernel=1, bn=True, act="hswish"),
        KernelSpec("global-avgpool", 5, 5, 32),
        KernelSpec("fc", 1, 1, 32, 24, act="hswish"),
        KernelSpec("swish", 1, 1, 24),
        KernelSpec("fc", 1, 1, 24, 10),
    ],
    # fc gives a (1, C) tensor; a following conv needs it back in 4-D
    "fc-then-conv": [
        KernelSpec("fc", 1, 1, 16, 12, act="relu"),
        KernelSpec("conv2d", 1, 1, 12, 8, kernel=3, bn=True),
        KernelSpec("se", 1, 1, 8),
    ],
}


# ---------------------------------------------------------------- numpy references
def act_ref(kind: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    sig = 1 / (1 + np.exp(-x))
    return {
        "none": x,
        "relu": np.maximum(x, 0),
        "relu6": np.clip(x, 0, 6),
        "hswish": x * np.clip(x + 3, 0, 6) / 6,
        "hsigmoid": np.clip(x + 3, 0, 6) / 6,
        "sigmoid": sig,
        "swish": x * sig,
    }[kind]


def pad_same(x: np.ndarray, k: int, s: int, value: float) -> np.ndarray:
    (t, b), (l, r) = same_pads(x.shape[1], k, s), same_pads(x.shape[2], k, s)
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def windows(x: np.ndarray, k: int, s: int, ho: int, wo: int):
    for i in range(k):
        for j in range(k):
            yield i, j, x[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s, :]


def conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    k, ho, wo = w.shape[0], -(-x.shape[1] // s), -(-x.shape[2] // s)
    xp = pad_same(x.astype(np.float64), k, s, 0.0)
    return sum(np.einsum("nhwc,cd->nhwd", win, w[i, j]) for i, j, win in windows(xp, k, s, ho, wo)) + b


def pool_ref(x: np.ndarray, kind: str, k: int, s: int) -> np.ndarray:
    ho, wo = -(-x.shape[1] // s), -(-x.shape[2] // s)
    if kind == "maxpool":
        xp = pad_same(x.astype(np.float64), k, s, -np.inf)
        return np.max([win for _, _, win in windows(xp, k, s, ho, wo)], axis=0)
    xp = pad_same(x.astype(np.float64), k, s, 0.0)
    ones = pad_same(np.ones_like(x, dtype=np.float64), k, s, 0.0)  # padding is not counted
    total = sum(win for _, _, win in windows(xp, k, s, ho, wo))
    count = sum(win for _, _, win in windows(ones, k, s, ho, wo))
    return total / count


def reference(spec: KernelSpec, inputs: list[np.ndarray], seed: int = 0) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    op = spec.op
    if op == "add":
        return x + inputs[1]
    if op == "mul":
        return x * inputs[1]
    if op == "concat":
        return np.concatenate([x, inputs[1]], axis=3)
    if op in ACTIVATION_OPS:
        return act_ref(op, x)
    if op in ("maxpool", "avgpool"):
        return pool_ref(x, op, spec.kernel, spec.stride)
    if op == "global-avgpool":
        return x.mean(axis=(1, 2), keepdims=True)
    node = lower(spec, seed).nodes[0]  # the weights both builders were given
    w, b = node.consts["weight"].astype(np.float64), node.consts["bias"].astype(np.float64)
    if op == "fc":
        return act_ref(spec.act, x.reshape(1, -1) @ w + b)
    if op == "conv2d" and not spec.bn:
        return act_ref(spec.act, conv_ref(x, w, b, spec.stride))
    raise AssertionError(f"no reference for {spec.key}")


REFERENCE_OPS = [s for s in SINGLE if s.op not in ("dwconv2d", "se", "mbconv") and not (s.op == "conv2d" and s.bn)]


# ---------------------------------------------------------------- tests
def test_single_kernels_cover_every_op_type():
    assert {s.op for s in SINGLE} == set(OP_TYPES)


@pytest.mark.parametrize("spec", SINGLE, ids=lambda s: s.key)
def test_formats_agree_on_every_kernel(spec: KernelSpec):
    o_out, t_out, _ = run_both(spec)
    assert o_out.shape == t_out.shape == expected_shape(spec)
    assert np.isfinite(o_out).all()
    assert np.abs(o_out).max() > 1e-3  # not a degenerate all-zero output
    np.testing.assert_allclose(o_out, t_out, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spec", REFERENCE_OPS, ids=lambda s: s.key)
def test_both_formats_match_numpy_reference(spec: KernelSpec):
    o_out, t_out, inputs = run_both(spec)
    ref = reference(spec, inputs).reshape(o_out.shape)
    np.testing.assert_allclose(o_out, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(t_out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_formats_agree_on_chains(name: str):
    chain = CHAINS[name]
    o_out, t_out, _ = run_both(chain, seed=7)
    assert o_out.shape == t_out.shape == expected_shape(chain[-1])
    assert np.abs(o_out).max() > 1e-3
    np.testing.assert_allclose(o_out, t_out, rtol=RTOL, atol=ATOL)


def test_mbconv_residual_is_really_added():
    """With the same weights, the stride-1 cin==cout block differs from its body by exactly the input."""
    block = KernelSpec("mbconv", 8, 8, 16, 16, kernel=3, expand=3, act="relu")
    g = lower(block, seed=3)
    assert g.nodes[-1].kind == "add" and "input" in g.nodes[-1].inputs
    no_res = KernelSpec("mbconv", 8, 8, 16, 24, kernel=3, expand=3, act="relu")
    assert all(n.kind != "add" for n in lower(no_res).nodes)


def test_same_seed_same_weights_in_both_formats():
    spec = KernelSpec("conv2d", 8, 8, 4, 6, kernel=3, bn=True, act="relu")
    onnx_model = onnx.load_from_string(build_model(spec, "onnx", seed=5))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx_model.graph.initializer}
    w_oihw = next(v for k, v in inits.items() if k.endswith("_w"))
    w_ohwi = np.ascontiguousarray(w_oihw.transpose(0, 2, 3, 1))
    tflite_bytes = build_model(spec, "tflite", seed=5)
    # the identical float32 weights sit in the flatbuffer, 16-byte aligned
    at = tflite_bytes.find(w_ohwi.tobytes())
    assert at >= 0 and at % 16 == 0
    assert build_model(spec, "onnx", seed=5) == build_model(spec, "onnx", seed=5)
    assert build_model(spec, "tflite", seed=5) == tflite_bytes
    assert build_model(spec, "tflite", seed=6) != tflite_bytes


def test_different_seed_changes_the_function():
    spec = KernelSpec("conv2d", 6, 6, 4, 4, kernel=3)
    a, _, _ = run_both(spec, seed=0)
    b, _, _ = run_both(spec, seed=1)
    assert not np.allclose(a, b)


def test_batchnorm_folding_changes_the_function():
    """bn is folded (different weights and bias), not silently dropped."""
    plain = lower(KernelSpec("conv2d", 6, 6, 4, 4, kernel=3), seed=2).nodes[0].consts
    folded = lower(KernelSpec("conv2d", 6, 6, 4, 4, kernel=3, bn=True), seed=2).nodes[0].consts
    # same raw draw, then a per-output-channel scale: the weight ratio is constant per channel
    ratio = folded["weight"] / plain["weight"]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0, 0, 0], ratio.shape), rtol=1e-5)
    assert not np.allclose(ratio, 1.0)


def test_weights_are_float32_with_variance_one_over_fan_in():
    """Drawn as float32 uniforms on +-sqrt(3 / fan_in): the variance of the normal draws they
    replace, bounded, never a denormal or a zero-filled tensor."""
    for spec, fan_in in ((KernelSpec("conv2d", 8, 8, 64, 128, kernel=3), 3 * 3 * 64),
                         (KernelSpec("dwconv2d", 8, 8, 256, kernel=5), 5 * 5),
                         (KernelSpec("fc", 1, 1, 512, 300), 512)):
        w = lower(spec, seed=4).nodes[0].consts["weight"]
        bound = np.sqrt(3.0 / fan_in)
        assert w.dtype == np.float32
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert abs(float(w.var()) * fan_in - 1.0) < 0.1
        assert abs(float(w.mean())) < 0.05 * bound
        assert np.count_nonzero(np.abs(w) < np.finfo(np.float32).tiny) <= w.size // 1000


def test_tflite_uses_fused_activations_and_builtins():
    import ai_edge_litert.schema_py_generated as schema

    def op_names(spec):
        model = schema.ModelT.InitFromPackedBuf(build_model(spec, "tflite"), 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        return [names[model.operatorCodes[o.opcodeIndex].builtinCode] for o in model.subgraphs[0].operators]

    assert op_names(KernelSpec("conv2d", 8, 8, 4, 4, kernel=3, act="relu6")) == ["CONV_2D"]
    assert op_names(KernelSpec("dwconv2d", 8, 8, 4, kernel=3, act="hswish")) == ["DEPTHWISE_CONV_2D", "HARD_SWISH"]
    assert op_names(KernelSpec("hsigmoid", 4, 4, 4)) == ["ADD", "MUL"]
    assert op_names(KernelSpec("swish", 4, 4, 4)) == ["LOGISTIC", "MUL"]
    assert op_names(KernelSpec("global-avgpool", 4, 4, 4)) == ["MEAN"]


def test_onnx_model_is_valid_opset17_nchw():
    spec = KernelSpec("mbconv", 8, 8, 8, 8, kernel=3, expand=4, se=True, act="hswish")
    model = onnx.load_from_string(build_model(spec, "onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 8, 8, 8] and model.graph.input[0].name == "input"
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "HardSwish", "GlobalAveragePool", "HardSigmoid", "Mul", "Add"} <= ops


def test_smoke_preset_builds_and_runs_in_both_formats():
    for spec in get_preset("smoke"):
        o_out, t_out, _ = run_both(spec)
        np.testing.assert_allclose(o_out, t_out, rtol=RTOL, atol=ATOL, err_msg=spec.key)


@pytest.mark.parametrize(
    "specs, fragment",
    [
        ([], "empty"),
        ([KernelSpec("add", 4, 4, 4), KernelSpec("relu", 4, 4, 4)], "two inputs"),
        ([KernelSpec("relu", 4, 4, 4), KernelSpec("concat", 4, 4, 4, 4)], "two inputs"),
        ([KernelSpec("conv2d", 8, 8, 4, 8, kernel=3, stride=2), KernelSpec("relu", 8, 8, 8)], "expects input"),
        ([KernelSpec("relu", 4, 4, 4), "relu:h4,w4,cin4"], "expected KernelSpec"),
    ],
)
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_bad_chains_are_rejected(specs, fragment, fmt):
    with pytest.raises(BadInput, match=fragment):
        build_model(specs, fmt)


def test_unknown_format_is_rejected():
    with pytest.raises(BadInput, match="unknown model format 'pb'"):
        build_model(KernelSpec("relu", 4, 4, 4), "pb")


@pytest.mark.parametrize("specs", [*SINGLE, get_network("tiny", resolution=64)], ids=lambda s: getattr(s, "key", "tiny"))
def test_onnx_bytes_are_the_onnx_packages_own_encoding(specs):
    # the builder writes protobuf itself: parsing and re-serializing with onnx changes nothing
    data = build_model(specs, "onnx", seed=3)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == data
    assert model.ir_version == 8 and model.producer_name == "edgelat" and model.graph.name == "edgelat"


@pytest.mark.parametrize("value", [0, 3, -1, 300, 1.0 / 6.0, 0.5, [3, 3], [0, 1, 1, 0], [-1, 2]])
def test_onnx_attributes_encode_as_onnx_helper_does(value):
    from onnx import helper

    from edgelat.profiler.onnx_builder import _attribute

    assert b"".join(_attribute("attr", value).parts) == helper.make_attribute("attr", value).SerializeToString()


def test_building_onnx_models_does_not_import_onnx():
    import subprocess
    import sys

    code = ("import sys; from edgelat.profiler.builders import build_model; "
            "from edgelat.profiler.ops import KernelSpec; "
            "build_model(KernelSpec('conv2d', 8, 8, 4, 8, kernel=3, bn=True, act='relu6'), 'onnx'); "
            "print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_small_kernel_is_built_once_and_the_cache_keeps_to_its_byte_cap(monkeypatch):
    from edgelat.profiler import builders

    monkeypatch.setattr(builders, "_built", type(builders._built)())
    small = KernelSpec("conv2d", 8, 8, 4, 8, kernel=3)
    first = builders.build_model(small, "onnx")
    assert builders.build_model(small, "onnx") is first  # the same bytes, not built again
    assert builders.build_model(small, "tflite") is not first and builders.build_model(small, "onnx", seed=1) != first
    big = KernelSpec("fc", 1, 1, 1024, 1024)  # 4 MB of weights: over CACHE_MODEL_BYTES
    assert builders.build_model(big, "onnx") is not builders.build_model(big, "onnx")
    chain = [KernelSpec("relu", 4, 4, 4), KernelSpec("relu", 4, 4, 4)]
    assert builders.build_model(chain, "onnx") is not builders.build_model(chain, "onnx")  # chains are not kept
    monkeypatch.setattr(builders, "CACHE_BYTES", 3 * len(first))
    for c in range(4, 12):
        builders.build_model(KernelSpec("conv2d", 8, 8, c, 8, kernel=3), "onnx")
    assert sum(len(v) for v in builders._built.values()) <= builders.CACHE_BYTES
    assert len(builders._built) <= 3
