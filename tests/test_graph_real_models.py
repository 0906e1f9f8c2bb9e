"""The splitter on the 20 real exported models (tests/data/real-models): every one splits,
every node is accounted for, the known patterns are recognised, every node outside the
catalog is cut out as a one-node model that onnxruntime runs, and small ones are predicted
end to end on `local`."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.predictors.graph import Split, UnknownKernel, split_model
from edgelat.profiler.ops import KernelSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_models  # noqa: E402

NAMES = real_models.names()
# Hundreds of MB each: filled in memory, each stripped tensor at its recorded mean (no random
# draws, no disk); the graph is the exported one all the same, and constant tensors (std 0)
# keep their exact values.
BIG = ("vgg11", "alexnet", "wide_resnet50_2", "vit_b_16")


def model_bytes(name: str, tmp_path: Path) -> bytes:
    """The real model with its weights back, as one self-contained ONNX file's bytes."""
    if name not in BIG:
        path = real_models.materialize(name, tmp_path, single_file=True)
        data = path.read_bytes()
        path.unlink()
        return data
    import json

    from onnx import numpy_helper

    model = onnx.load(str(real_models.DATA / f"{name}.onnx"), load_external_data=False)
    stats = json.loads({p.key: p.value for p in model.metadata_props}["stripped_weights"])
    for t in model.graph.initializer:
        if t.name in stats:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(numpy_helper.from_array(np.full(tuple(t.dims), stats[t.name][0], dtype), t.name))
    return model.SerializeToString()


def ops(split: Split) -> Counter:
    """How many items of each kind: catalog ops by name, unknown nodes as graph:<OpType>."""
    return Counter(k.op if isinstance(k, KernelSpec) else k.type for k in split.items)


def one_node_attrs(kernel: UnknownKernel) -> dict:
    node = onnx.load_from_string(kernel.model).graph.node[0]
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def run_alone(kernel: UnknownKernel, session_options) -> None:
    """Check and run the one-node model on onnxruntime; its outputs have the shapes it declares."""
    import onnxruntime as ort

    model = onnx.load_from_string(kernel.model)
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(kernel.model, session_options, providers=["CPUExecutionProvider"])
    feeds = {}
    for vi in model.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], dtype)
    outs = sess.run(None, feeds)
    declared = [tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) for vi in model.graph.output]
    assert [o.shape for o in outs] == declared, (kernel.name, kernel.op_type)


# What each family must come out as (beyond "it splits and everything runs").
def _mobilenet_v2(s: Split) -> None:
    # 17 inverted residuals -> 17 mbconv blocks, relu6 throughout, nothing left over
    assert ops(s)["mbconv"] == 17 and not s.unknown
    assert all(k.act == "relu6" for k in s.kernels if k.op == "mbconv")


def _mobilenet_v3_small(s: Split) -> None:
    blocks = [k for k in s.kernels if k.op == "mbconv"]
    assert len(blocks) == 11 and sum(k.se for k in blocks) == 9 and {k.act for k in blocks} == {"relu", "hswish"}
    assert not s.unknown


def _resnet34(s: Split) -> None:
    # every conv is a conv2d kernel (36), residual adds are add kernels, nothing unknown
    assert ops(s)["conv2d"] == 36 and ops(s)["add"] == 16 and not s.unknown


def _convnext(s: Split) -> None:
    stem = s.items[0]  # the 4x4 stride-4 patchify conv is not a catalog conv: measured as itself
    assert isinstance(stem, UnknownKernel) and stem.op_type == "Conv"
    assert (one_node_attrs(stem)["kernel_shape"], one_node_attrs(stem)["strides"]) == ([4, 4], [4, 4])
    assert ops(s)["dwconv2d"] == 18 and all(k.kernel == 7 for k in s.kernels if k.op == "dwconv2d")
    assert {"graph:LayerNormalization", "graph:Gelu", "graph:MatMul"} <= set(ops(s))


def _grouped(groups: int):
    def check(s: Split) -> None:
        grouped = [u for u in s.unknown if u.op_type == "Conv"]
        assert grouped and all(one_node_attrs(u)["group"] > 1 for u in grouped)
        assert groups in {one_node_attrs(u)["group"] for u in grouped}
        # identical convs (same shapes and attributes) share one key, so they are measured once
        assert len({u.key for u in grouped}) < len(grouped)
    return check


def _inception_v3(s: Split) -> None:
    asym = [u for u in s.unknown if u.op_type == "Conv"]
    assert {tuple(one_node_attrs(u)["kernel_shape"]) for u in asym} == {(1, 7), (7, 1), (1, 3), (3, 1)}
    assert any("not padded 'same'" in n for n in s.notes)  # its valid-padded convs and pools


def _densenet(s: Split) -> None:
    assert ops(s)["graph:BatchNormalization"] == 86  # bn before the conv cannot be folded into it
    assert ops(s)["graph:Concat"] > 0  # dense concats of more than two inputs


def _shufflenet(s: Split) -> None:
    assert ops(s)["graph:Split"] == 13 and ops(s)["graph:Transpose"] == 16  # channel split and shuffle
    assert Counter(v["op_type"] for v in s.layout)["Reshape"] == 32


def _efficientnet(s: Split) -> None:
    # SiLU written as x * sigmoid(x) is recognised as swish; the SE gate broadcast multiply is not catalog
    assert ops(s)["conv2d"] > 0 and sum(k.act == "swish" for k in s.kernels) > 40
    assert {u.op_type for u in s.unknown} == {"Mul"}


def _mnasnet(s: Split) -> None:
    assert ops(s)["mbconv"] == 17 and ops(s)["global-avgpool"] == 1 and not s.unknown  # ReduceMean(keepdims=0)


def _swin(s: Split) -> None:
    folded = Counter(f["op_type"] for f in s.folded)  # the attention-mask and weight-transpose subgraphs
    assert folded["ConstantOfShape"] == 3 and folded["ScatterND"] == 54 and folded["Transpose"] > 0
    assert {"graph:Softmax", "graph:Pad", "graph:Slice"} <= set(ops(s))


def _vit(s: Split) -> None:
    assert ops(s)["graph:MatMul"] > 0 and ops(s)["graph:Softmax"] == 12
    assert ops(s)["fc"] == 1  # the classifier head on the class token


EXPECT = {
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v3_small": _mobilenet_v3_small,
    "resnet34": _resnet34,
    "convnext_tiny": _convnext,
    "resnext50_32x4d": _grouped(32),
    "regnet_x_400mf": _grouped(2),
    "inception_v3": _inception_v3,
    "densenet169": _densenet,
    "shufflenet_v2_x1_0": _shufflenet,
    "efficientnet_b1": _efficientnet,
    "mnasnet0_5": _mnasnet,
    "swin_t": _swin,
    "vit_b_16": _vit,
}


@pytest.fixture(scope="module")
def session_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


@pytest.mark.parametrize("name", NAMES)
def test_real_model_splits_into_kernels_and_runnable_unknown_nodes(name, tmp_path, session_options):
    split = split_model(model_bytes(name, tmp_path), "onnx")
    assert split.items and len(split.items) == len(split.sources)
    # nothing silently dropped: every node of the exported graph is in exactly one place
    nodes = onnx.load(str(real_models.DATA / f"{name}.onnx"), load_external_data=False).graph.node
    placed = [n for src in split.sources for n in src] + [v["name"] for v in split.layout] + [f["name"] for f in split.folded]
    assert len(placed) == len(set(placed)) == len(nodes)
    assert all(isinstance(k, (KernelSpec, UnknownKernel)) for k in split.items)
    # every node outside the catalog runs alone (once per key: identical nodes share it)
    for kernel in {u.key: u for u in split.unknown}.values():
        assert kernel.model, f"{kernel.name} ({kernel.op_type}) was not cut out"
        run_alone(kernel, session_options)
    EXPECT.get(name, lambda s: None)(split)


SHORT = MeasurementProtocol(warmup=1, min_runs=3, max_runs=10, target_rel_ci=0.2, max_seconds=0.1)


@pytest.mark.parametrize("name", ["squeezenet1_1", "shufflenet_v2_x1_0", "regnet_x_400mf"])
def test_small_real_models_are_predicted_on_local_end_to_end(name, tmp_path):
    """No table and no predictor: every kernel, catalog or not, is measured on the fly
    and the answer is a finite positive latency whose parts are all accounted for."""
    from edgelat.lut.store import open_db
    from edgelat.predictors.model_predict import predict_model_file

    db = open_db(tmp_path / "edgelat.db")
    path = real_models.materialize(name, tmp_path, single_file=True)
    out = predict_model_file(db, "local", RuntimeConfig(threads=1), path, protocol=SHORT)
    assert math.isfinite(out["latency_ms"]) and out["latency_ms"] > 0
    assert out["kernels"] and all(k["predicted_ms"] > 0 for k in out["kernels"])
    assert out["latency_ms"] == pytest.approx(sum(k["predicted_ms"] for k in out["kernels"]))
    assert {k["source"] for k in out["kernels"]} == {"measured-now"}
    if name != "squeezenet1_1":  # its nodes are all catalog kernels
        assert any(k["type"].startswith("graph:") for k in out["kernels"])


def test_weights_outside_the_bytes_split_the_same(tmp_path, session_options):
    """The exporter's NAME.onnx read alone (its weights in NAME.onnx.data, not in the bytes):
    folding and cutting out use zeros of the right shape for them, so the split is the
    same and the unknown nodes still run (swin_t: its weight Transposes are folded)."""
    whole = split_model(model_bytes("swin_t", tmp_path), "onnx")
    bare = split_model(real_models.materialize("swin_t", tmp_path / "two-files").read_bytes(), "onnx")
    assert [k.key for k in bare.items] == [k.key for k in whole.items]
    assert bare.folded == whole.folded and Counter(f["op_type"] for f in bare.folded)["Transpose"] > 0
    matmul = next(u for u in bare.unknown if u.op_type == "MatMul" and len(onnx.load_from_string(u.model).graph.initializer))
    run_alone(matmul, session_options)
