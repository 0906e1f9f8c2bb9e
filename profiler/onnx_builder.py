"""Kernel specs -> an ONNX model (NCHW, opset 17), as an exporter from PyTorch would write it.

Graph inputs are ``input`` (and ``input2`` for add/mul/concat), the output is
``output``. Weights come from :func:`edgelat.profiler.lowering.lower`, shared
with the TFLite builder, so both formats compute the same function.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from edgelat.profiler.lowering import Graph, Node, lower
from edgelat.profiler.ops import KernelSpec

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; onnxruntime >= 1.14 loads it


def _nchw(shape: tuple[int, ...]) -> list[int]:
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else list(shape)


# ---- the protobuf wire format, for the few ONNX messages a kernel model needs ----------------
# Written here rather than through the onnx package: importing onnx costs more than building a
# whole preset's models, and its message objects copy every weight tensor on the way to bytes.
# Fields go in field-number order and repeated numbers unpacked (onnx.proto is proto2), so the
# bytes are the ones ``onnx.helper`` + ``SerializeToString`` give (a test checks it).

_FLOAT, _INT64 = 1, 7  # TensorProto.DataType
_DTYPES = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64}
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s take ten bytes, as in protobuf
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _len(field: int, size: int) -> bytes:
    return _varint(field << 3 | 2) + _varint(size)


def _str(field: int, text: str) -> bytes:
    data = text.encode()
    return _len(field, len(data)) + data


class _Message:
    """A message as a list of byte chunks, so big payloads are copied once, into the final bytes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, *chunks: bytes) -> "_Message":
        for chunk in chunks:
            self.parts.append(chunk)
            self.size += len(chunk)
        return self

    def sub(self, field: int, message: "_Message") -> "_Message":
        self.add(_len(field, message.size))
        self.parts.extend(message.parts)
        self.size += message.size
        return self


def _attribute(name: str, value: object) -> _Message:
    """AttributeProto as ``onnx.helper.make_attribute`` fills it (name, f | i | ints, type)."""
    a = _Message().add(_str(1, name))
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return a.add(_int(3, int(value)), _int(20, _ATTR_INT))
    if isinstance(value, (float, np.floating)):
        return a.add(_varint(2 << 3 | 5), struct.pack("<f", float(value)), _int(20, _ATTR_FLOAT))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, np.integer)) for v in value):
        return a.add(*(_int(8, int(v)) for v in value), _int(20, _ATTR_INTS))
    raise TypeError(f"no ONNX attribute encoding for {name}={value!r}")


def _value_info(name: str, shape: list[int]) -> _Message:
    """ValueInfoProto of a float tensor with a fixed shape."""
    dims = _Message()
    for d in shape:
        dims.sub(1, _Message().add(_int(1, int(d))))  # TensorShapeProto.dim { dim_value }
    tensor = _Message().add(_int(1, _FLOAT)).sub(2, dims)  # TypeProto.Tensor { elem_type, shape }
    return _Message().add(_str(1, name)).sub(2, _Message().sub(1, tensor))


class _Emitter:
    """Writes the model's protobuf bytes directly (see the wire-format notes above)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = _Message()
        self.inits = _Message()

    def const(self, name: str, value: np.ndarray) -> str:
        # TensorProto as onnx.numpy_helper.from_array writes it: dims, data_type, name, raw_data
        value = np.asarray(value)
        if value.ndim == 0:  # a scalar goes as one element (as np.ascontiguousarray gives it)
            value = value.reshape(1)
        dtype = _DTYPES.get(value.dtype)
        if dtype is None:
            raise TypeError(f"no ONNX tensor type for {value.dtype}")
        # tobytes writes C order from any layout: a transposed weight is copied once, here
        raw = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        tensor = _Message().add(*(_int(1, d) for d in value.shape), _int(2, dtype), _str(8, name), _len(9, len(raw)), raw)
        self.inits.sub(5, tensor)  # GraphProto.initializer
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        # NodeProto as onnx.helper.make_node writes it: attributes sorted by name; tensor names
        # are unique, so a node is named after what it produces
        node = _Message().add(*(_str(1, i) for i in inputs), _str(2, output), _str(3, output), _str(4, op))
        for key in sorted(attrs):
            node.sub(5, _attribute(key, attrs[key]))
        self.nodes.sub(1, node)  # GraphProto.node
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
            w, b = n.consts["weight"], n.consts["bias"]
            if len(shapes[x]) == 4:
                x = self.node("Flatten", [x], f"{out}_flat", axis=1)
                # the weights' rows follow the NHWC flattening (TFLite's); ONNX flattens NCHW
                _, hh, ww, cc = shapes[n.inputs[0]]
                w = w.reshape(hh, ww, cc, -1).transpose(2, 0, 1, 3).reshape(hh * ww * cc, -1)
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
        g = self.graph
        for n in g.nodes:
            self.emit(n)
        graph = _Message()
        graph.parts.extend(self.nodes.parts)
        graph.size += self.nodes.size
        graph.add(_str(2, "edgelat"))
        graph.parts.extend(self.inits.parts)
        graph.size += self.inits.size
        for i in g.inputs:
            graph.sub(11, _value_info(i, _nchw(g.shapes[i])))
        graph.sub(12, _value_info(g.output, _nchw(g.shapes[g.output])))
        # ModelProto: ir_version, producer_name, graph, opset_import { domain "", version }
        model = _Message().add(_int(1, IR_VERSION), _str(2, "edgelat")).sub(7, graph)
        model.sub(8, _Message().add(_str(1, ""), _int(2, OPSET)))
        return b"".join(model.parts)


def build_onnx(specs: KernelSpec | Sequence[KernelSpec], seed: int = 0) -> bytes:
    """Serialized ONNX model for one kernel or a sequential chain of kernels."""
    return _Emitter(lower(specs, seed)).model_bytes()
