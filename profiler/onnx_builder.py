"""Kernel specs -> an ONNX model (NCHW, opset 17), as an exporter from PyTorch would write it.

Graph inputs are ``input`` (and ``input2`` for add/mul/concat), the output is
``output``. Weights come from :func:`edgelat.profiler.lowering.lower`, shared
with the TFLite builder, so both formats compute the same function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgelat.profiler.lowering import Graph, Node, lower
from edgelat.profiler.ops import KernelSpec

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; onnxruntime >= 1.14 loads it


def _nchw(shape: tuple[int, ...]) -> list[int]:
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else list(shape)


class _Emitter:
    """Writes the ModelProto in place: weights go straight into the graph's initializers
    (``make_graph`` and ``make_model`` would copy every weight twice more, which was a
    good part of building a kernel's model)."""

    def __init__(self, graph: Graph) -> None:
        import onnx
        from onnx import helper

        self.helper = helper
        self.graph = graph
        self.model = onnx.ModelProto()
        self.model.ir_version = IR_VERSION
        self.nodes: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        # what onnx.numpy_helper.from_array writes for a numeric array (little-endian raw data)
        value = np.ascontiguousarray(value)
        tensor = self.model.graph.initializer.add()
        tensor.dims.extend(value.shape)
        tensor.name = name
        tensor.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        tensor.data_type = self.helper.np_dtype_to_tensor_dtype(value.dtype)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        # tensor names are unique, so a node is named after what it produces
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def act(self, kind: str, x: str, out: str) -> str:
        if kind == "relu":
            return self.node("Relu", [x], out)
        if kind == "relu6":
            lo = self.const(f"{out}_lo", np.array(0.0, np.float32))
            hi = self.const(f"{out}_hi", np.array(6.0, np.float32))
            return self.node("Clip", [x, lo, hi], out)
        if kind == "hswish":
            return self.node("HardSwish", [x], out)
        if kind == "hsigmoid":
            return self.node("HardSigmoid", [x], out, alpha=1.0 / 6.0, beta=0.5)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], out)
        if kind == "swish":
            s = self.node("Sigmoid", [x], f"{out}_sig")
            return self.node("Mul", [x, s], out)
        raise ValueError(f"unknown activation {kind}")

    def emit(self, n: Node) -> None:
        a, out, shapes = n.attrs, n.output, self.graph.shapes
        if n.kind in ("conv", "dwconv"):
            w, b = n.consts["weight"], n.consts["bias"]
            if n.kind == "conv":
                w_oihw, group = w.transpose(3, 2, 0, 1), 1
            else:
                w_oihw, group = w.transpose(2, 0, 1)[:, None, :, :], w.shape[2]
            top, bottom, left, right = a["pads"]
            k, s = a["kernel"], a["stride"]
            y = out if a["fused"] == "none" else f"{out}_pre"
            self.node(
                "Conv",
                [n.inputs[0], self.const(f"{out}_w", w_oihw), self.const(f"{out}_b", b)],
                y,
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[top, left, bottom, right],
                group=group,
            )
            if a["fused"] != "none":
                self.act(a["fused"], y, out)
        elif n.kind == "dense":
            x = n.inputs[0]
            if len(shapes[x]) == 4:
                x = self.node("Flatten", [x], f"{out}_flat", axis=1)
            w, b = n.consts["weight"], n.consts["bias"]
            y = out if a["fused"] == "none" else f"{out}_pre"
            self.node("Gemm", [x, self.const(f"{out}_w", w.T), self.const(f"{out}_b", b)], y, transB=1)
            if a["fused"] != "none":
                self.act(a["fused"], y, out)
        elif n.kind in ("maxpool", "avgpool"):
            top, bottom, left, right = a["pads"]
            k, s = a["kernel"], a["stride"]
            extra = {"count_include_pad": 0} if n.kind == "avgpool" else {}
            op = "MaxPool" if n.kind == "maxpool" else "AveragePool"
            self.node(op, n.inputs, out, kernel_shape=[k, k], strides=[s, s], pads=[top, left, bottom, right], **extra)
        elif n.kind == "gap":
            self.node("GlobalAveragePool", n.inputs, out)
        elif n.kind in ("add", "mul"):
            self.node("Add" if n.kind == "add" else "Mul", n.inputs, out)
        elif n.kind == "concat":
            self.node("Concat", n.inputs, out, axis=1 if len(shapes[out]) == 4 else -1)
        elif n.kind == "act":
            self.act(a["act"], n.inputs[0], out)
        elif n.kind == "reshape":
            shape = self.const(f"{out}_shape", np.array(_nchw(shapes[out]), np.int64))
            self.node("Reshape", [n.inputs[0], shape], out)
        else:
            raise ValueError(f"no ONNX emission for {n.kind}")

    def model_bytes(self) -> bytes:
        from onnx import TensorProto

        h, g = self.helper, self.graph
        for n in g.nodes:
            self.emit(n)
        vi = lambda name: h.make_tensor_value_info(name, TensorProto.FLOAT, _nchw(g.shapes[name]))  # noqa: E731
        model = self.model
        model.graph.node.extend(self.nodes)
        model.graph.name = "edgelat"
        model.graph.input.extend([vi(i) for i in g.inputs])
        model.graph.output.extend([vi(g.output)])
        model.opset_import.extend([h.make_opsetid("", OPSET)])
        model.producer_name = "edgelat"
        return model.SerializeToString()


def build_onnx(specs: KernelSpec | Sequence[KernelSpec], seed: int = 0) -> bytes:
    """Serialized ONNX model for one kernel or a sequential chain of kernels."""
    return _Emitter(lower(specs, seed)).model_bytes()
