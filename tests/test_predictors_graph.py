"""Graph -> kernels: the splitter recovers the kernels a model was built from, in both formats,
applies the device's fusion verdicts, and lists what it does not know instead of dropping it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, CorruptModel
from edgelat.predictors.fusion import FusionRules, apply_rules, load_rules, verdict_rows
from edgelat.predictors.fusion_probe import detect_fusion
from edgelat.predictors.graph import bn_twin, split_model
from edgelat.profiler import networks
from edgelat.profiler.builders import build_model
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.presets import get_preset

NETWORKS = {
    "mobilenetv2-224": networks.mobilenetv2(224),
    "mobilenetv2-160-0.5": networks.mobilenetv2(160, 0.5),
    "mobilenetv3-large-192": networks.mobilenetv3_large(192),
    "tiny": networks.tiny_net(),
    "ofa-mixed": networks.ofa_mbv3([3, 5, 7, 3] * 5, [3, 4, 6, 4] * 5, [2, 3, 4, 3, 2], 176),
}


def same_kernel(got: KernelSpec, want: KernelSpec) -> bool:
    """Equal, or equal up to the batch-norm flag (a folded bn is a plain conv bias)."""
    return got.key == want.key or (bn_twin(want) is not None and got.key == bn_twin(want).key)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_networks_split_back_into_the_kernels_they_were_built_from(name, fmt):
    specs = NETWORKS[name]
    split = split_model(build_model(specs, fmt), fmt)
    assert [k.key for k in split.items] == [s.key for s in specs]
    assert split.unknown == [] and split.layout == []
    assert all(split.sources), "every kernel names the nodes it came from"


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_every_smoke_kernel_and_extra_patterns_split_to_themselves(fmt):
    extra = [
        KernelSpec("fc", 1, 1, 64, 32, act="hswish"),
        KernelSpec("conv2d", 8, 8, 8, 8, kernel=3, bn=True, act="swish"),
        KernelSpec("conv2d", 8, 8, 8, 8, kernel=3, bn=True, act="hsigmoid"),
        KernelSpec("dwconv2d", 8, 8, 8, kernel=3, bn=True, act="sigmoid"),
        KernelSpec("mbconv", 8, 8, 16, 16, kernel=7, expand=6, se=True, act="hswish"),
        KernelSpec("mbconv", 8, 8, 16, 24, kernel=3, expand=1, se=True, act="relu6"),
        KernelSpec("mbconv", 10, 10, 24, 24, kernel=5, expand=184 / 80, act="relu"),
    ]
    for spec in get_preset("smoke") + extra:
        split = split_model(build_model(spec, fmt), fmt)
        assert len(split.items) == 1, (spec.key, [k.key for k in split.items])
        assert same_kernel(split.items[0], spec), (spec.key, split.items[0].key)


def test_conv_with_folded_batchnorm_is_reported_with_bn_and_its_twin_is_the_plain_conv():
    plain = KernelSpec("conv2d", 8, 8, 8, 16, kernel=3, act="relu")
    got = split_model(build_model(plain, "onnx")).items[0]
    assert got.bn and got == bn_twin(plain)


def test_fusion_verdicts_decide_whether_the_activation_is_its_own_kernel():
    specs = [
        KernelSpec("conv2d", 16, 16, 8, 16, kernel=3, bn=True, act="relu6"),
        KernelSpec("dwconv2d", 16, 16, 16, kernel=3, bn=True, act="hswish"),
        KernelSpec("mbconv", 16, 16, 16, 16, kernel=3, expand=3, act="hswish"),
    ]
    rules = FusionRules(frozenset({("conv2d", "relu6"), ("dwconv2d", "hswish")}), source="measured")
    keys = [k.key for k in split_model(build_model(specs, "onnx"), "onnx", rules).items]
    assert keys == [
        "conv2d:h16,w16,cin8,cout16,k3,s1,bn",
        "relu6:h16,w16,cin16",
        "dwconv2d:h16,w16,cin16,k3,s1,bn",
        "hswish:h16,w16,cin16",
        specs[2].key,  # a block is measured as a whole: verdicts do not cut it
    ]
    # the sampler draws kernels the same way, so the table holds what the splitter asks for
    assert [k.key for s in specs for k in apply_rules(s, rules)] == keys
    # in TFLite a relu6 fused into the conv op itself cannot run apart
    tfl = [k.key for k in split_model(build_model(specs, "tflite"), "tflite", rules).items]
    assert tfl[0] == "conv2d:h16,w16,cin8,cout16,k3,s1,bn,relu6"
    assert tfl[1:] == keys[2:]


def _pytorch_style_model() -> bytes:
    """What a PyTorch export looks like: explicit BatchNormalization, ReduceMean pooling,
    Flatten + MatMul + Add classifier, a swish written as x*sigmoid(x), and a Softmax."""
    rng = np.random.default_rng(0)
    init = []

    def const(name, arr):
        init.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("w1", rng.standard_normal((16, 3, 3, 3)))], ["c1"], name="conv1",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", const("g", np.ones(16)), const("b", np.zeros(16)),
                                                const("m", np.zeros(16)), const("v", np.ones(16))], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", const("w2", rng.standard_normal((16, 16, 1, 1)))], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="add2"),
        helper.make_node("Sigmoid", ["a2"], ["s2"], name="sig2"),
        helper.make_node("Mul", ["a2", "s2"], ["sw2"], name="swish2"),
        helper.make_node("ReduceMean", ["sw2", "axes"], ["p"], name="pool", keepdims=1),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("MatMul", ["f", const("wf", rng.standard_normal((16, 10)))], ["mm"], name="fc_mm"),
        helper.make_node("Add", ["mm", const("bf", np.zeros(10))], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    init.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    graph = helper.make_graph(
        nodes, "pt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])], initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def test_exported_style_patterns_and_unknown_ops_are_listed_not_dropped():
    import onnxruntime as ort

    split = split_model(_pytorch_style_model(), "onnx")
    keys = [k.key for k in split.items]
    assert keys[:5] == [
        "conv2d:h32,w32,cin3,cout16,k3,s2,bn,relu",
        "conv2d:h16,w16,cin16,cout16,k1,s1",  # no bias, no BatchNormalization: bn=False
        "add:h16,w16,cin16",
        "swish:h16,w16,cin16",
        "global-avgpool:h16,w16,cin16",
    ]
    assert keys[5] == "fc:h1,w1,cin16,cout10"  # Flatten + MatMul + bias Add are one fc kernel
    assert split.sources[5] == ["flatten", "fc_mm", "fc_bias"]
    (unknown,) = split.unknown
    assert (unknown.name, unknown.op_type, unknown.type) == ("softmax", "Softmax", "graph:Softmax")
    assert unknown.key.startswith("graph:onnx:Softmax:")
    assert any("symbolic dimension N" in n for n in split.notes)
    # the unknown node comes with a standalone model of itself that a runtime can run
    sess = ort.InferenceSession(unknown.model, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: np.ones((1, 10), np.float32)})
    assert np.allclose(out, 0.1)
    # same node, same shapes -> same key (weights do not enter it)
    assert split_model(_pytorch_style_model(), "onnx").unknown[0].key == unknown.key


def test_tflite_unknown_op_is_cut_out_runnable():
    import ai_edge_litert.schema_py_generated as schema
    import flatbuffers
    from ai_edge_litert.interpreter import Interpreter

    data = build_model([KernelSpec("conv2d", 8, 8, 4, 8, kernel=3, bn=True, act="relu")], "tflite")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = model.subgraphs[0]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.TANH
    code.version = 1
    model.operatorCodes.append(code)
    out = schema.TensorT()
    out.shape, out.type, out.buffer, out.name = [1, 8, 8, 8], schema.TensorType.FLOAT32, 0, b"tanh_out"
    sg.tensors.append(out)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [sg.outputs[0]], [len(sg.tensors) - 1]
    sg.operators.append(op)
    sg.outputs = [len(sg.tensors) - 1]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    split = split_model(bytes(b.Output()))
    assert split.fmt == "tflite"
    assert [type(i).__name__ for i in split.items] == ["KernelSpec", "UnknownKernel"]
    unknown = split.unknown[0]
    assert unknown.op_type == "TANH" and unknown.input_shapes == [(1, 8, 8, 8)]
    interp = Interpreter(model_content=unknown.model)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.full((1, 8, 8, 8), 0.5, np.float32))
    interp.invoke()
    assert np.allclose(interp.get_tensor(interp.get_output_details()[0]["index"]), np.tanh(0.5), atol=1e-6)


def test_bad_models_fail_with_a_clear_error():
    with pytest.raises(CorruptModel):
        split_model(b"definitely not a model", "onnx")
    with pytest.raises(CorruptModel):
        split_model(b"\x00\x00\x00\x00TFL3garbage", "tflite")
    m = onnx.load_from_string(build_model(KernelSpec("relu", 4, 4, 8), "onnx"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(BadInput, match="batch 4"):
        split_model(m.SerializeToString(), "onnx")


def test_fusion_detected_on_local_matches_what_onnxruntime_does(tmp_path):
    """onnxruntime's CPU provider fuses Conv+Relu into one kernel (FusedConv, the relu in
    the GEMM epilogue) but runs HardSwish after a Conv as separate HardSigmoid+Mul nodes."""
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db

    db = open_db(tmp_path / "db.sqlite")
    config = RuntimeConfig()
    assert load_rules(db, "local", config).source == "default"
    with Registry(db).connect("local") as client:
        verdicts = detect_fusion(db, "local", client, config, pairs=[("conv2d", "relu"), ("conv2d", "hswish")])
    by_pair = {(v.op, v.act): v for v in verdicts}
    relu, hswish = by_pair["conv2d", "relu"], by_pair["conv2d", "hswish"]
    assert relu.verdict == "fused", relu
    assert hswish.verdict == "separate", hswish
    # fused: conv+relu costs about what the conv alone does; apart: about conv + activation
    assert relu.fused_ms < relu.first_ms + 0.5 * relu.second_cost_ms
    assert hswish.fused_ms > hswish.first_ms + 0.5 * hswish.second_cost_ms
    rules = load_rules(db, "local", config)
    assert rules.source == "measured" and rules.fuses("conv2d", "relu") and not rules.fuses("conv2d", "hswish")
    assert {(r["op"], r["act"]) for r in verdict_rows(db, "local", config)} == set(by_pair)


def test_fusion_figures_are_one_round_that_backs_the_verdict(tmp_path):
    """Five rounds, two of them with the fused probe slowed alone (a burst during one
    item). The verdict is the majority's; the stored figures are one fused-voting round,
    the median one by share saved -- column medians here would say the fused pair costs
    more than its parts, under a "fused" verdict."""
    from edgelat.values import BenchmarkResult, LatencySummary
    from edgelat.lut.store import open_db
    from edgelat.predictors.fusion import OVERHEAD_SPEC
    from edgelat.predictors.fusion_probe import probe_specs

    fused, first, second = probe_specs("conv2d", "relu")
    rounds = [  # (fused, first, second, overhead) ms
        (0.30, 0.10, 0.04, 0.01),  # separate vote (the burst)
        (0.11, 0.10, 0.04, 0.01),  # fused, share saved 0.67
        (0.30, 0.29, 0.05, 0.01),  # fused, 0.75 (a slowed round, all together)
        (0.105, 0.10, 0.04, 0.01),  # fused, 0.83
        (0.29, 0.10, 0.04, 0.01),  # separate vote
    ]

    class Rounds:
        def __init__(self):
            self.calls = 0

        def put_model(self, data):
            return f"sha{len(data)}"

        def benchmark_batch(self, items, config, protocol):
            figures = dict(zip((fused.key, first.key, second.key, OVERHEAD_SPEC.key), rounds[self.calls]))
            self.calls += 1
            for item in items:
                m = figures[item.tag]
                yield BenchmarkResult("sha", config, LatencySummary(m, m, 0.0, m, m, 50, 0.001, True), tag=item.tag)

    db = open_db(tmp_path / "db.sqlite")
    (v,) = detect_fusion(db, "board", Rounds(), RuntimeConfig(), pairs=[("conv2d", "relu")], rounds=5)
    assert v.verdict == "fused"
    assert (v.fused_ms, v.first_ms, v.second_ms, v.overhead_ms) == rounds[2]
    assert v.saved_ms > 0.5 * v.second_cost_ms
    (row,) = verdict_rows(db, "board", RuntimeConfig())
    assert row["fused_ms"] == 0.30 and row["first_ms"] == 0.29


def _classic_export(opset: int = 13) -> bytes:
    """What older exporters and hand-edited graphs write: weights computed by constant
    subgraphs (a ConstantOfShape weight, a Constant node, a reshaped flat initializer, a
    transposed fc weight, a Range/Cast bias) and a flatten spelled Shape -> Gather ->
    Unsqueeze -> Concat -> Reshape, on a symbolic batch. Before opset 13 the weights are
    also listed as graph inputs (IR 3 style) and Unsqueeze takes its axes as an attribute."""
    rng = np.random.default_rng(0)
    i64 = lambda name, v: numpy_helper.from_array(np.asarray(v, np.int64), name)  # noqa: E731
    f32 = lambda name, v: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [0.05])
    nodes = [
        helper.make_node("Constant", [], ["w1_shape"], value=helper.make_tensor("v", TensorProto.INT64, [4], [16, 3, 3, 3])),
        helper.make_node("ConstantOfShape", ["w1_shape"], ["w1"], name="w1_fill", value=fill),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Reshape", ["w2_flat", "w2_shape"], ["w2"], name="w2_reshape"),
        helper.make_node("Constant", [], ["b2"], name="b2_const", value=numpy_helper.from_array(np.zeros(16, np.float32))),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Shape", ["p"], ["p_shape"], name="shape"),
        helper.make_node("Gather", ["p_shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze") if opset >= 13
        else helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsqueeze", axes=[0]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], name="concat_shape", axis=0),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Transpose", ["wf_t"], ["wf"], name="wf_transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["f", "wf"], ["mm"], name="fc_mm"),
        helper.make_node("Range", ["start", "limit", "delta"], ["bias_i"], name="bias_range"),
        helper.make_node("Cast", ["bias_i"], ["bias"], name="bias_cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["mm", "bias"], ["logits"], name="fc_bias"),
    ]
    init = [
        f32("w2_flat", rng.standard_normal(16 * 16 * 9)), i64("w2_shape", [16, 16, 3, 3]),
        i64("zero", 0), i64("axes0", [0]), i64("minus1", [-1]),
        f32("wf_t", rng.standard_normal((10, 16))),
        i64("start", 0), i64("limit", 10), i64("delta", 1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])]
    if opset < 13:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in init]
    graph = helper.make_graph(nodes, "classic", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset >= 13 else 3
    return model.SerializeToString()


@pytest.mark.parametrize("opset", [11, 13])
def test_constant_subgraphs_are_folded_and_their_convs_recognised(opset):
    split = split_model(_classic_export(opset), "onnx")
    assert [k.key for k in split.items] == [
        "conv2d:h16,w16,cin3,cout16,k3,s1,relu",
        "conv2d:h16,w16,cin16,cout16,k3,s2,bn,relu",
        "global-avgpool:h8,w8,cin16",
        "fc:h1,w1,cin16,cout10",
    ]
    assert split.unknown == []
    assert split.sources[3] == ["flatten", "fc_mm", "fc_bias"]
    folded = {f["op_type"] for f in split.folded}
    assert folded == {"Constant", "ConstantOfShape", "Reshape", "Shape", "Gather", "Unsqueeze", "Concat", "Transpose", "Range", "Cast"}
    assert any("symbolic dimension batch taken as 1" in n for n in split.notes)
    # every node is accounted for exactly once: a kernel's source, a view, or a folded constant
    named = [n for src in split.sources for n in src] + [v["name"] for v in split.layout] + [f["name"] for f in split.folded]
    model = onnx.load_from_string(_classic_export(opset))
    assert len(named) == len(set(named)) == len(model.graph.node)
    assert not any("onnxruntime run" in n for n in split.notes)  # inference and folding told every shape


def _graph(nodes, inputs, outputs, init=(), opset=18) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(init))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _run_alone(kernel) -> list[np.ndarray]:
    """Run an unknown kernel's one-node model on onnxruntime with zero inputs of its declared shapes."""
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load_from_string(kernel.model))
    sess = ort.InferenceSession(kernel.model, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()})


def test_ops_outside_the_catalog_become_unknown_kernels_that_run_alone():
    rng = np.random.default_rng(0)
    f32 = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    nodes = [
        helper.make_node("Conv", ["x", "wd"], ["d"], name="dilated", kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["d", "wa"], ["a"], name="asym_1x7", kernel_shape=[1, 7], pads=[0, 3, 0, 3]),
        helper.make_node("Conv", ["a", "wg"], ["g"], name="grouped", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Conv", ["g", "we"], ["e"], name="patchify_4x4_s4", kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("LRN", ["e"], ["l"], name="lrn", size=3),
        helper.make_node("Pad", ["l", "pads"], ["pd"], name="pad"),
        helper.make_node("Resize", ["pd", "", "scales"], ["rs"], name="resize", mode="nearest"),
        helper.make_node("HardSigmoid", ["rs"], ["hs"], name="hsig", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["rs", "hs"], ["hw"], name="hswish_mul"),
        helper.make_node("Split", ["hw", "split"], ["s0", "s1", "s2"], name="split3", axis=1),
        helper.make_node("Concat", ["s2", "s0", "s1"], ["y"], name="concat3", axis=1),
    ]
    init = [f32("wd", (8, 8, 3, 3)), f32("wa", (8, 8, 1, 7)), f32("wg", (8, 4, 3, 3)), f32("we", (8, 8, 4, 4)),
            numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
            numpy_helper.from_array(np.array([2, 2, 4], np.int64), "split")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    split = split_model(_graph(nodes, [x], [y], init), "onnx")
    kinds = [(type(k).__name__, getattr(k, "op_type", None) or k.key) for k in split.items]
    assert kinds == [
        ("UnknownKernel", "Conv"), ("UnknownKernel", "Conv"), ("UnknownKernel", "Conv"), ("UnknownKernel", "Conv"),
        ("UnknownKernel", "LRN"), ("UnknownKernel", "Pad"), ("UnknownKernel", "Resize"),
        ("KernelSpec", "hswish:h12,w12,cin8"),  # HardSigmoid(1/6, 1/2) * x, as exporters write hard-swish
        ("UnknownKernel", "Split"), ("UnknownKernel", "Concat"),
    ]
    assert split.unknown[3].output_shapes == [(1, 4, 4, 8)]  # NHWC, like every 4-D shape the split reports
    # their float constants are their weights (the calibration's spill term counts them); integer
    # pads and split sizes are not (Resize's four float scales are, harmlessly)
    from edgelat.predictors.calibration import kernel_weights

    assert [k.params() for k in split.unknown] == [576, 448, 288, 1024, 0, 0, 4, 0, 0]
    assert kernel_weights(split.items) == [576, 448, 288, 1024, 0, 0, 4, 0, 0, 0]
    for kernel in split.unknown:
        outs = _run_alone(kernel)
        declared = onnx.load_from_string(kernel.model).graph.output
        assert [o.shape for o in outs] == [tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in declared]


def test_identical_unknown_nodes_share_one_key_and_one_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [helper.make_node("Softmax", ["x"], ["a"], name="s1", axis=1),
             helper.make_node("Softmax", ["a"], ["b"], name="s2", axis=1),
             helper.make_node("Softmax", ["b"], ["c"], name="s3", axis=2)]
    split = split_model(_graph(nodes, [x], [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)]), "onnx")
    a, b, c = split.unknown
    assert a.key == b.key != c.key
    assert a.model is b.model and a.name != b.name


def test_batch_is_read_from_the_graph_inputs_only():
    """A reshape to [4, ...] inside the graph (windows, heads) is no batch: what runs on it
    is measured as itself, never priced as a batch-1 catalog kernel."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu_image"),
             helper.make_node("Reshape", ["r", "to4"], ["w"], name="to_windows"),
             helper.make_node("Relu", ["w"], ["rw"], name="relu_windows"),
             helper.make_node("Reshape", ["rw", "back"], ["y"], name="from_windows")]
    init = [numpy_helper.from_array(np.array([4, 2, 4, 4], np.int64), "to4"),
            numpy_helper.from_array(np.array([1, 8, 4, 4], np.int64), "back")]
    split = split_model(_graph(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init), "onnx")
    assert [type(k).__name__ for k in split.items] == ["KernelSpec", "UnknownKernel"]
    assert split.items[0].key == "relu:h4,w4,cin8"
    assert split.unknown[0].name == "relu_windows"
    assert [v["name"] for v in split.layout] == ["to_windows", "from_windows"]
    _run_alone(split.unknown[0])


def test_dynamic_spatial_input_is_refused_in_one_line():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "height", 32])
    data = _graph([helper.make_node("Relu", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(BadInput, match=r"^input x: dimension 2 is dynamic \(height\); export the model with a fixed input size$"):
        split_model(data, "onnx")


def test_shapes_onnx_cannot_infer_are_taken_from_one_runtime_run():
    """An op from onnxruntime's own domain has no onnx shape function; one run at batch 1
    tells its output shape, so the catalog kernel after it is still recognised."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Gelu", ["a"], ["b"], name="gelu", domain="com.microsoft"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    split = split_model(model.SerializeToString(), "onnx")
    assert [k.key if isinstance(k, KernelSpec) else k.op_type for k in split.items] == ["relu:h4,w4,cin8", "Gelu", "sigmoid:h4,w4,cin8"]
    assert split.unknown[0].input_shapes == [(1, 4, 4, 8)]
    assert any("onnxruntime run" in n for n in split.notes)
    (out,) = _run_alone(split.unknown[0])
    assert out.shape == (1, 8, 4, 4)


def test_silu_written_every_way_is_swish():
    """x*sigmoid(x) (any operand order) and opset 24's Swish op are the catalog's swish."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("Mul", ["s", "x"], ["a"], name="silu_mul"),
             helper.make_node("Swish", ["a"], ["y"], name="swish_op", alpha=1.0)]
    split = split_model(_graph(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=24), "onnx")
    assert [k.key for k in split.items] == ["swish:h4,w4,cin8", "swish:h4,w4,cin8"]
    assert split.sources == [["sig", "silu_mul"], ["swish_op"]]
