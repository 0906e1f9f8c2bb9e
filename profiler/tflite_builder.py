"""Kernel specs -> a TFLite flatbuffer (NHWC, float32), as the TFLite converter would write it.

Built with the schema object API shipped in ``ai_edge_litert``. RELU and RELU6
are fused into the producing op (``fusedActivationFunction``); hard-swish uses
the HARD_SWISH builtin; hard-sigmoid is ``relu6(x + 3) * (1/6)`` (ADD with fused
RELU6, then MUL) and swish is ``x * sigmoid(x)``, the way converters lower them.
Weights come from :func:`edgelat.profiler.lowering.lower`, shared with the
ONNX builder.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from edgelat.profiler.lowering import Graph, Node, lower
from edgelat.profiler.ops import KernelSpec

_ALIGN = 16  # the schema asks for 16-byte aligned buffer data (force_align: 16)


def _schema():
    import ai_edge_litert.schema_py_generated as schema

    return schema


class _Emitter:
    def __init__(self, graph: Graph) -> None:
        self.s = _schema()
        self.graph = graph
        self.tensors: list = []
        self.tensor_index: dict[str, int] = {}
        self.buffers: list = [self.s.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: list = []
        self.opcode_index: dict[int, int] = {}
        self.operators: list = []

    # -- tensors and buffers
    def tensor(self, name: str, shape: Sequence[int], data: np.ndarray | None = None, dtype: str = "float32") -> int:
        s = self.s
        buf = 0
        if data is not None:
            self.buffers.append(_aligned_buffer(np.ascontiguousarray(data, dtype=dtype)))
            buf = len(self.buffers) - 1
        ttype = s.TensorType.FLOAT32 if dtype == "float32" else s.TensorType.INT32
        t = s.TensorT(shape=np.array(shape, np.int32), type=ttype, buffer=buf, name=name)
        self.tensors.append(t)
        self.tensor_index[name] = len(self.tensors) - 1
        return self.tensor_index[name]

    def ref(self, name: str) -> int:
        if name not in self.tensor_index:
            self.tensor(name, self.graph.shapes[name])
        return self.tensor_index[name]

    def op(self, code: int, inputs: list[int], outputs: list[int], opt_type: int = 0, options=None) -> None:
        s = self.s
        if code not in self.opcode_index:
            self.opcodes.append(s.OperatorCodeT(deprecatedBuiltinCode=min(code, 127), builtinCode=code, version=1))
            self.opcode_index[code] = len(self.opcodes) - 1
        self.operators.append(
            s.OperatorT(
                opcodeIndex=self.opcode_index[code],
                inputs=np.array(inputs, np.int32),
                outputs=np.array(outputs, np.int32),
                builtinOptionsType=opt_type,
                builtinOptions=options,
            )
        )

    def fused(self, act: str) -> int:
        A = self.s.ActivationFunctionType
        return {"none": A.NONE, "relu": A.RELU, "relu6": A.RELU6}[act]

    # -- ops
    def act(self, kind: str, x: int, out: int, out_name: str) -> None:
        s, B, O = self.s, self.s.BuiltinOperator, self.s.BuiltinOptions
        shape = self.graph.shapes[out_name]
        if kind == "relu":
            self.op(B.RELU, [x], [out])
        elif kind == "relu6":
            self.op(B.RELU6, [x], [out])
        elif kind == "hswish":
            self.op(B.HARD_SWISH, [x], [out])
        elif kind == "sigmoid":
            self.op(B.LOGISTIC, [x], [out])
        elif kind == "hsigmoid":
            three = self.tensor(f"{out_name}_three", [1], np.array([3.0], np.float32))
            sixth = self.tensor(f"{out_name}_sixth", [1], np.array([1.0 / 6.0], np.float32))
            clipped = self.tensor(f"{out_name}_relu6", shape)
            add_opts = s.AddOptionsT(fusedActivationFunction=self.fused("relu6"))
            self.op(B.ADD, [x, three], [clipped], O.AddOptions, add_opts)
            self.op(B.MUL, [clipped, sixth], [out], O.MulOptions, s.MulOptionsT())
        elif kind == "swish":
            sig = self.tensor(f"{out_name}_sigmoid", shape)
            self.op(B.LOGISTIC, [x], [sig])
            self.op(B.MUL, [x, sig], [out], O.MulOptions, s.MulOptionsT())
        else:
            raise ValueError(f"unknown activation {kind}")

    def emit(self, n: Node) -> None:
        s, B, O, P = self.s, self.s.BuiltinOperator, self.s.BuiltinOptions, self.s.Padding
        a, shapes = n.attrs, self.graph.shapes
        ins = [self.ref(i) for i in n.inputs]
        out = self.ref(n.output)
        if n.kind == "conv":
            w = n.consts["weight"].transpose(3, 0, 1, 2)  # HWIO -> OHWI
            wi = self.tensor(f"{n.output}_w", w.shape, w)
            bi = self.tensor(f"{n.output}_b", n.consts["bias"].shape, n.consts["bias"])
            opts = s.Conv2DOptionsT(
                padding=P.SAME, strideW=a["stride"], strideH=a["stride"], fusedActivationFunction=self.fused(a["fused"])
            )
            self.op(B.CONV_2D, [ins[0], wi, bi], [out], O.Conv2DOptions, opts)
        elif n.kind == "dwconv":
            w = n.consts["weight"][None]  # (1, kh, kw, c)
            wi = self.tensor(f"{n.output}_w", w.shape, w)
            bi = self.tensor(f"{n.output}_b", n.consts["bias"].shape, n.consts["bias"])
            opts = s.DepthwiseConv2DOptionsT(
                padding=P.SAME,
                strideW=a["stride"],
                strideH=a["stride"],
                depthMultiplier=1,
                fusedActivationFunction=self.fused(a["fused"]),
            )
            self.op(B.DEPTHWISE_CONV_2D, [ins[0], wi, bi], [out], O.DepthwiseConv2DOptions, opts)
        elif n.kind == "dense":
            w = n.consts["weight"].T  # (cout, cin)
            wi = self.tensor(f"{n.output}_w", w.shape, w)
            bi = self.tensor(f"{n.output}_b", n.consts["bias"].shape, n.consts["bias"])
            opts = s.FullyConnectedOptionsT(fusedActivationFunction=self.fused(a["fused"]))
            self.op(B.FULLY_CONNECTED, [ins[0], wi, bi], [out], O.FullyConnectedOptions, opts)
        elif n.kind in ("maxpool", "avgpool"):
            k, st = a["kernel"], a["stride"]
            opts = s.Pool2DOptionsT(padding=P.SAME, strideW=st, strideH=st, filterWidth=k, filterHeight=k)
            code = B.MAX_POOL_2D if n.kind == "maxpool" else B.AVERAGE_POOL_2D
            self.op(code, ins, [out], O.Pool2DOptions, opts)
        elif n.kind == "gap":
            axes = self.tensor(f"{n.output}_axes", [2], np.array([1, 2], np.int32), dtype="int32")
            self.op(B.MEAN, [ins[0], axes], [out], O.ReducerOptions, s.ReducerOptionsT(keepDims=True))
        elif n.kind == "add":
            self.op(B.ADD, ins, [out], O.AddOptions, s.AddOptionsT())
        elif n.kind == "mul":
            self.op(B.MUL, ins, [out], O.MulOptions, s.MulOptionsT())
        elif n.kind == "concat":
            opts = s.ConcatenationOptionsT(axis=len(shapes[n.output]) - 1)
            self.op(B.CONCATENATION, ins, [out], O.ConcatenationOptions, opts)
        elif n.kind == "act":
            self.act(a["act"], ins[0], out, n.output)
        elif n.kind == "reshape":
            shape = list(shapes[n.output])
            si = self.tensor(f"{n.output}_shape", [len(shape)], np.array(shape, np.int32), dtype="int32")
            opts = s.ReshapeOptionsT(newShape=np.array(shape, np.int32))
            self.op(B.RESHAPE, [ins[0], si], [out], O.ReshapeOptions, opts)
        else:
            raise ValueError(f"no TFLite emission for {n.kind}")

    def model_bytes(self) -> bytes:
        import flatbuffers

        s, g = self.s, self.graph
        inputs = [self.ref(i) for i in g.inputs]
        for n in g.nodes:
            self.emit(n)
        sub = s.SubGraphT(
            tensors=self.tensors,
            inputs=np.array(inputs, np.int32),
            outputs=np.array([self.ref(g.output)], np.int32),
            operators=self.operators,
            name="main",
        )
        model = s.ModelT(
            version=3, operatorCodes=self.opcodes, subgraphs=[sub], description="edgelat", buffers=self.buffers
        )
        builder = flatbuffers.Builder(1024 + sum(b.data.nbytes + _ALIGN for b in self.buffers if b.data is not None))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


@functools.lru_cache(maxsize=1)
def _aligned_buffer_class():
    """BufferT whose bytes start on a 16-byte boundary (the stock Pack aligns to 1)."""
    schema = _schema()

    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):
            raw = self.data.tobytes()
            builder.StartVector(1, len(raw), _ALIGN)
            builder.head -= len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            vec = builder.EndVector()
            schema.BufferStart(builder)
            schema.BufferAddData(builder, vec)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _aligned_buffer(data: np.ndarray):
    return _aligned_buffer_class()(data=data.reshape(-1).view(np.uint8))


def build_tflite(specs: KernelSpec | Sequence[KernelSpec], seed: int = 0) -> bytes:
    """Serialized TFLite model for one kernel or a sequential chain of kernels."""
    return _Emitter(lower(specs, seed)).model_bytes()
