"""Model graph -> kernels: split an ONNX or TFLite file into catalog kernels.

A predictor predicts kernels, not files, so a file is first read into a small
format-neutral list of primitive nodes (NHWC shapes, constants resolved) and
then matched, in execution order, against the catalog's kernels. An ONNX file
is first brought to the graph the runtime really runs (:mod:`.onnx_reader`):
constant subgraphs folded, the batch read from the graph inputs only, every
shape known. What is recognised (each pattern only when every intermediate
tensor feeds nothing else, so a match never hides work done for another
branch):

- ``mbconv``: [1x1 conv + bn + act] -> kxk depthwise conv + bn + act -> [SE]
  -> 1x1 conv + bn (linear) -> [residual add of the block input]. Both
  activations must agree, the expanded width must be ``round(cin*expand)``,
  the SE must be the catalog's, and the residual must be there exactly when
  the catalog's block has one (stride 1, cin == cout). Otherwise the block is
  split into its convs/SE/add.
- ``se``: global average pool -> 1x1 conv -> relu -> 1x1 conv -> hard sigmoid
  -> multiply with the pooled input, squeeze width ``se_channels(c)``.
- ``conv2d`` / ``dwconv2d`` (+ batch-norm) (+ activation), ``fc`` (+ activation;
  a flatten/reshape feeding it belongs to it). Whether the activation stays in
  the kernel is the device's fusion verdict (:mod:`edgelat.predictors.fusion`);
  an activation fused in the file itself (TFLite ``fusedActivationFunction``)
  always stays. Only what the catalog computes exactly: a square odd kernel,
  equal strides, no dilation, no groups or one per channel.
- pools, global average pool (also ``ReduceMean``/``MEAN`` over H, W), add,
  mul, concat of two inputs on channels, and the activations (``swish`` =
  ``x*sigmoid(x)``, ``hswish`` = ``HardSwish`` or ``x*hsigmoid(x)``,
  ``hsigmoid`` = ``HardSigmoid(1/6, 1/2)`` or ``relu6(x+3)/6``).

A conv or pool not padded "same" (valid, explicit pads, ceil mode) is priced
as the catalog kernel with the same output and work (see ``_Matcher.sized``),
and the split's notes say how many.

``bn``: a convolution carrying a per-channel bias (or followed by an explicit
BatchNormalization) is reported with ``bn=True``. Once folded, batch-norm is
exactly such a bias, so a conv with a folded batch-norm and one with a plain
bias are the same computation and cannot be told apart in a file; the
predictor treats the two keys as one (:func:`bn_twin`).

Views (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout) not feeding a
fully connected layer are listed in ``layout`` as zero-cost, folded constant
nodes in ``folded``. Everything else -- grouped, even, asymmetric or dilated
convs, broadcast arithmetic, Transpose, Split, Slice, Pad, Resize, LRN,
LayerNormalization, Gelu, Softmax, token-wise MatMul, any op on a tensor
whose leading dimension is not 1 -- becomes an :class:`UnknownKernel` (name,
op type, shapes) that carries a standalone one-node model of itself, so the
caller can measure it on the device. Identical nodes (op, shapes, attributes,
constant shapes and small integer constants) share one key and one model, so
they are measured once. Nothing is dropped silently: every node of the file is
in exactly one item's sources, ``layout`` or ``folded``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from edgelat.errors import BadInput, CorruptModel
from edgelat.predictors.fusion import FusionRules
from edgelat.profiler.ops import KernelSpec, same_out, se_channels

VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"})


# --------------------------------------------------------------------------- the neutral graph
@dataclass
class Prim:
    """One primitive node. ``kind``: conv, dwconv, bn, act, add, mul, addc, mulc,
    concat, maxpool, avgpool, gap, fc, view, other."""

    kind: str
    name: str
    op_type: str  # the file's own op name
    inputs: list[str]  # non-constant tensor inputs
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Graph:
    fmt: str
    prims: list[Prim]
    shapes: dict[str, tuple[int, ...]]  # NHWC for 4-D tensors
    outputs: set[str]
    extract: Any  # callable(prim) -> bytes of a one-node model
    signature: Any = None  # callable(prim) -> what decides its latency (key of an unknown kernel)
    folded: list[dict[str, str]] = field(default_factory=list)  # nodes folded into constants

    def consumers(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, p in enumerate(self.prims):
            for t in p.inputs:
                out.setdefault(t, []).append(i)
        for t in self.outputs:
            out.setdefault(t, []).append(-1)  # a graph output is a consumer nobody can fuse away
        return out


@dataclass
class UnknownKernel:
    """A node outside the catalog, with what is needed to measure it on a device."""

    name: str
    op_type: str
    fmt: str
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    signature: dict[str, Any]
    model: bytes = field(repr=False, default=b"")

    @property
    def key(self) -> str:
        """Stable key of this op at this shape (weights do not matter to latency)."""
        digest = hashlib.sha256(json.dumps(self.signature, sort_keys=True, default=str).encode()).hexdigest()
        return f"graph:{self.fmt}:{self.op_type}:{digest[:16]}"

    @property
    def type(self) -> str:
        return f"graph:{self.op_type}"

    def params(self) -> int:
        """Elements of its floating-point constant inputs (a MatMul's weight matrix): what a
        whole model streams from memory for it when the model's weights do not stay cached.
        0 where the reader records no constants (TFLite)."""
        return sum(int(np.prod(c["shape"])) for c in self.signature.get("consts", ()) if c.get("type") in _FLOAT_TYPES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "op_type": self.op_type,
            "format": self.fmt,
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
        }


Item = Union[KernelSpec, UnknownKernel]
GRAPH_EDGE = -1  # in Split.links: a model input or output
VIEW_EDGE = -2  # in Split.links: a view (Reshape, Flatten, ...) between two items


@dataclass
class Split:
    """A model as kernels in execution order."""

    fmt: str
    items: list[Item]
    sources: list[list[str]]  # node names behind each item
    layout: list[dict[str, str]] = field(default_factory=list)  # zero-cost views: {name, op_type}
    notes: list[str] = field(default_factory=list)  # approximations made, one line each
    folded: list[dict[str, str]] = field(default_factory=list)  # constant nodes folded at load: {name, op_type}
    # per item, the items it reads from and the items that read it: an index into ``items``, or
    # GRAPH_EDGE (a model input or output) or VIEW_EDGE (a zero-cost view in between). Empty when
    # the split did not come from a graph.
    links: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def kernels(self) -> list[KernelSpec]:
        return [k for k in self.items if isinstance(k, KernelSpec)]

    @property
    def unknown(self) -> list[UnknownKernel]:
        return [k for k in self.items if isinstance(k, UnknownKernel)]


def canonical_expand(cin: int, mid: int) -> float:
    """The shortest decimal expand ratio that gives ``mid`` channels from ``cin``.

    Several ratios name the same block (24 x 2.3 and 24 x 2.2917 both give 55
    channels); a file only holds the channel counts, so the splitter -- and the
    sampler, so table keys match -- spell the ratio the shortest way (2.3).
    """
    for digits in range(0, 7):
        e = round(mid / cin, digits)
        if e > 0 and int(math.floor(cin * e + 0.5)) == mid:
            return float(e)
    return mid / cin


def bn_twin(spec: KernelSpec) -> KernelSpec | None:
    """The same conv with the batch-norm flag flipped: the identical computation once folded."""
    if spec.op not in ("conv2d", "dwconv2d"):
        return None
    return KernelSpec(**{**spec.to_dict(), "bn": not spec.bn})


# --------------------------------------------------------------------------- ONNX reader
_ONNX_ACTS = {"Relu": "relu", "HardSwish": "hswish", "Sigmoid": "sigmoid"}


def _nhwc(shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _scalar(value: Any) -> float | None:
    """The one number a constant holds, else None."""
    if value is None or np.asarray(value).size != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def _read_onnx(data: bytes, notes: list[str]) -> _Graph:
    """Classify the live nodes of the folded, shaped graph (:mod:`.onnx_reader`) into primitives.

    A node becomes a catalog primitive only when what it computes is exactly what the
    catalog's kernel computes: 2-D convolutions with a square odd kernel, equal strides,
    no dilation, and either no groups or one group per channel; square pools; batch-1
    tensors throughout. Everything else (grouped, even, asymmetric or dilated convs,
    broadcast arithmetic, transformer ops...) is ``other`` and is measured as itself.
    """
    import onnx

    from edgelat.predictors.onnx_reader import read_onnx

    og = read_onnx(data)
    notes += og.notes
    consts, raw = og.consts, og.shapes

    def batch1(t: str) -> bool:
        s = raw.get(t)
        return s is not None and (len(s) < 2 or s[0] == 1)

    prims: list[Prim] = []
    by_name: dict[str, Any] = {}
    for node, name in zip(og.nodes, og.names):
        at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        live = [i for i in node.input if i and i not in consts]
        outs = [o for o in node.output if o]
        by_name[name] = node
        op = node.op_type
        kind, attrs = "other", {}
        const_in = lambda k: node.input[k] if len(node.input) > k and node.input[k] in consts else None  # noqa: E731
        known = all(t in raw for t in live + outs)
        computes = known and all(batch1(t) for t in live + outs)
        rank = len(raw[live[0]]) if live and known else -1
        if op in VIEW_OPS and node.domain in ("", "ai.onnx") and len(live) == 1:
            kind = "view"
        elif node.domain not in ("", "ai.onnx") or not computes:
            pass
        elif op == "Conv" and len(live) == 1 and rank == 4 and const_in(1):
            wshape = consts.shape(node.input[1])
            ks = list(at.get("kernel_shape", wshape[2:]))
            st = list(at.get("strides", [1, 1]))
            dil = list(at.get("dilations", [1, 1]))
            group = int(at.get("group", 1))
            cout, cin = int(wshape[0]), int(wshape[1]) * group
            square = len(ks) == 2 and ks[0] == ks[1] and ks[0] % 2 == 1 and st[0] == st[1] and dil == [1, 1]
            if square and (group == 1 or group == cin == cout):
                kind = "conv" if group == 1 else "dwconv"
                attrs = {"kernel": int(ks[0]), "stride": int(st[0]), "cin": cin, "cout": cout,
                         "bias": len(node.input) > 2 and bool(node.input[2])}
        elif op == "BatchNormalization" and len(live) == 1 and rank == 4:
            kind = "bn"
        elif op in _ONNX_ACTS and len(live) == 1:
            kind, attrs = "act", {"act": _ONNX_ACTS[op]}
        elif op == "Clip" and len(live) == 1:
            lo = consts.get(node.input[1]) if const_in(1) else at.get("min")
            hi = consts.get(node.input[2]) if const_in(2) else at.get("max")
            if _scalar(lo) == 0.0 and _scalar(hi) == 6.0:
                kind, attrs = "act", {"act": "relu6"}
        elif op == "Swish" and len(live) == 1 and abs(float(at.get("alpha", 1.0)) - 1.0) < 1e-6:  # opset 24: x*sigmoid(x)
            kind, attrs = "act", {"act": "swish"}
        elif op == "HardSigmoid" and len(live) == 1:
            if abs(at.get("alpha", 0.2) - 1 / 6) < 1e-4 and abs(at.get("beta", 0.5) - 0.5) < 1e-6:
                kind, attrs = "act", {"act": "hsigmoid"}
        elif op in ("Add", "Mul", "Div", "Sub") and len(node.input) == 2:
            if len(live) == 2 and op in ("Add", "Mul"):
                kind = op.lower()
            elif len(live) == 1:
                other = node.input[1] if node.input[0] in live else node.input[0]
                value = _scalar(consts.get(other))
                if value is not None:
                    if op == "Div" and node.input[0] in live and value != 0:
                        kind, attrs = "mulc", {"value": 1.0 / value}
                    elif op in ("Add", "Mul"):
                        kind, attrs = ("addc" if op == "Add" else "mulc"), {"value": value}
                elif op == "Add" and len(consts.shape(other)) == 1:
                    kind, attrs = "addc", {"value": None, "bias": True}
        elif op == "Concat" and len(live) == len(node.input) == 2:
            if len(raw[outs[0]]) == 4 and int(at.get("axis", 1)) in (1, -3):
                kind = "concat"
        elif op in ("MaxPool", "AveragePool") and len(live) == 1 and rank == 4 and len(outs) == 1:
            ks, st = list(at.get("kernel_shape", [])), list(at.get("strides", [1, 1]))
            if len(ks) == 2 and ks[0] == ks[1] and st[0] == st[1] and list(at.get("dilations", [1, 1])) == [1, 1]:
                kind = "maxpool" if op == "MaxPool" else "avgpool"
                attrs = {"kernel": int(ks[0]), "stride": int(st[0])}
        elif op == "GlobalAveragePool" and len(live) == 1 and rank == 4:
            kind = "gap"
        elif op == "ReduceMean" and len(live) == 1 and rank == 4:
            axes = at.get("axes")
            if axes is None and const_in(1):
                axes = np.asarray(consts.get(node.input[1])).reshape(-1).tolist()
            if axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]:
                kind = "gap"  # keepdims or not: the same reduction
        elif op == "Gemm" and len(live) == 1 and const_in(1) and not at.get("transA", 0) and rank == 2:
            wshape = consts.shape(node.input[1])
            cout = int(wshape[0] if at.get("transB", 0) else wshape[1])
            kind, attrs = "fc", {"cin": int(np.prod(wshape)) // cout, "cout": cout}
        elif op == "MatMul" and len(live) == 1 and node.input[0] in live and const_in(1) and len(consts.shape(node.input[1])) == 2:
            wshape = consts.shape(node.input[1])
            kind, attrs = "fc", {"cin": int(wshape[0]), "cout": int(wshape[1]), "matmul": True}
        prims.append(Prim(kind, name, op, live, outs, attrs))

    shapes = {t: _nhwc(s) for t, s in raw.items()}

    def extract(p: Prim) -> bytes:
        return og.one_node(by_name[p.name])

    def signature(p: Prim) -> dict[str, Any]:
        return _onnx_signature(by_name[p.name], og)

    return _Graph("onnx", prims, shapes, set(og.outputs), extract, signature, og.folded)


def _onnx_signature(node, og) -> dict[str, Any]:
    """What decides a node's latency: op, live shapes and types, attributes, constant inputs
    (their shapes, and the values of small integer ones: axes, pads, indices, sizes)."""
    import onnx

    consts = og.consts
    ins, cins = [], []
    for pos, t in enumerate(node.input):
        if not t:
            continue
        if t in consts:
            entry: dict[str, Any] = {"pos": pos, "shape": list(consts.shape(t)), "type": consts.elem_type(t)}
            if consts.size(t) <= 64 and consts.elem_type(t) in _INT_TYPES:
                v = consts.get(t)
                if v is not None:
                    entry["value"] = np.asarray(v).reshape(-1).tolist()
            cins.append(entry)
        else:
            ins.append([list(og.shapes.get(t, ())), og.types.get(t, 0)])
    attrs = sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute)
    return {
        "op": node.op_type,
        "domain": node.domain,
        "in": ins,
        "out": [list(og.shapes.get(t, ())) for t in node.output if t],
        "attrs": attrs,
        "consts": cins,
    }


_INT_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})  # uint8..int64, bool, uint32, uint64
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16


# --------------------------------------------------------------------------- TFLite reader
_TFL_FUSED = {0: "none", 1: "relu", 3: "relu6"}


def _read_tflite(data: bytes, notes: list[str]) -> _Graph:
    import ai_edge_litert.schema_py_generated as schema

    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("missing the TFL3 file identifier")
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:
        raise CorruptModel(f"not a readable TFLite model: {exc}") from None
    if not model.subgraphs:
        raise CorruptModel("TFLite model has no subgraph")
    if len(model.subgraphs) > 1:
        notes.append(f"TFLite model has {len(model.subgraphs)} subgraphs; only the main one is split")
    sg = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def opname(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        c = max(code.builtinCode, code.deprecatedBuiltinCode)
        return names.get(c, f"BUILTIN_{c}") if c != schema.BuiltinOperator.CUSTOM else f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"

    def tname(i: int) -> str:
        return f"t{i}"

    consts: dict[int, np.ndarray] = {}
    for i, t in enumerate(sg.tensors):
        buf = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            dtype = {0: np.float32, 2: np.int32, 4: np.int64, 9: np.int8, 3: np.uint8, 1: np.float16}.get(t.type, np.uint8)
            arr = np.frombuffer(bytes(bytearray(buf.data)), dtype=dtype)
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            consts[i] = arr.reshape(shape) if shape and int(np.prod(shape)) == arr.size else arr
    shapes: dict[str, tuple[int, ...]] = {}
    graph_inputs = {int(i) for i in (sg.inputs if sg.inputs is not None else [])}
    for i, t in enumerate(sg.tensors):
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        # only the graph inputs say what the batch is (a reshape to [49, ...] inside is no batch)
        if i in graph_inputs and len(shape) >= 2 and shape[0] not in (1, -1) and i not in consts:
            raise BadInput(f"input {(t.name or b'').decode(errors='replace')} has batch {shape[0]}; the kernel predictor covers batch 1 models")
        shapes[tname(i)] = tuple(1 if d == -1 else d for d in shape)

    def batch1(i: int) -> bool:
        s = shapes[tname(i)]
        return len(s) < 2 or s[0] == 1

    prims: list[Prim] = []
    for idx, op in enumerate(sg.operators):
        on = opname(op)
        ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        live = [tname(i) for i in ins if i >= 0 and i not in consts]
        opts = op.builtinOptions
        kind, attrs, fused = "other", {}, "none"
        first_out = sg.tensors[outs[0]] if outs else None
        name = (first_out.name.decode(errors="replace") if first_out is not None and first_out.name else f"{on}_{idx}")
        if on in VIEW_OPS:
            kind = "view"
        elif not all(batch1(i) for i in ins + outs if i >= 0 and i not in consts):
            pass  # a tensor folded into a batch (windows, heads): measured as it is
        elif on in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(live) == 1 and ins[1] in consts:
            w = consts[ins[1]]
            fa = getattr(opts, "fusedActivationFunction", 0)
            dil = (getattr(opts, "dilationHFactor", 1), getattr(opts, "dilationWFactor", 1))
            square = w.ndim == 4 and w.shape[1] == w.shape[2] and w.shape[1] % 2 == 1
            if fa in _TFL_FUSED and opts.strideH == opts.strideW and dil == (1, 1) and square:
                fused = _TFL_FUSED[fa]
                bias = len(ins) > 2 and ins[2] >= 0
                if on == "CONV_2D":  # OHWI
                    attrs = {"kernel": int(w.shape[1]), "stride": int(opts.strideH), "cin": int(w.shape[3]), "cout": int(w.shape[0]), "bias": bias}
                    kind = "conv" if shapes[live[0]][-1] == w.shape[3] else "other"
                else:  # 1HWC
                    cin = shapes[live[0]][-1]
                    if w.shape[3] == cin and getattr(opts, "depthMultiplier", 1) in (0, 1):
                        attrs = {"kernel": int(w.shape[1]), "stride": int(opts.strideH), "cin": cin, "cout": cin, "bias": bias}
                        kind = "dwconv"
        elif on == "FULLY_CONNECTED" and len(live) == 1 and ins[1] in consts:
            fa = getattr(opts, "fusedActivationFunction", 0)
            if fa in _TFL_FUSED:
                w = consts[ins[1]]
                kind, attrs, fused = "fc", {"cin": int(w.shape[1]), "cout": int(w.shape[0])}, _TFL_FUSED[fa]
        elif on in ("RELU", "RELU6", "HARD_SWISH", "LOGISTIC") and len(live) == 1:
            kind, attrs = "act", {"act": {"RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hswish", "LOGISTIC": "sigmoid"}[on]}
        elif on in ("ADD", "MUL", "DIV", "SUB"):
            fa = getattr(opts, "fusedActivationFunction", 0) if opts is not None else 0
            if fa in _TFL_FUSED:
                fused = _TFL_FUSED[fa]
                if len(live) == 2 and on in ("ADD", "MUL"):
                    kind = on.lower()
                elif len(live) == 1 and len(ins) == 2:
                    c = consts.get(ins[1] if tname(ins[0]) in live else ins[0])
                    if c is not None and c.size == 1:
                        value = float(c.reshape(-1)[0])
                        if on == "DIV" and tname(ins[0]) in live and value != 0:
                            kind, attrs = "mulc", {"value": 1.0 / value}
                        elif on in ("ADD", "MUL"):
                            kind, attrs = ("addc" if on == "ADD" else "mulc"), {"value": value}
        elif on == "CONCATENATION" and len(live) == len(ins) == 2:
            fa = getattr(opts, "fusedActivationFunction", 0)
            rank = len(shapes[tname(outs[0])])
            if rank == 4 and opts.axis in (3, -1) and fa == 0:
                kind = "concat"
        elif on in ("MAX_POOL_2D", "AVERAGE_POOL_2D") and len(live) == 1:
            fa = getattr(opts, "fusedActivationFunction", 0)
            if opts.filterHeight == opts.filterWidth and opts.strideH == opts.strideW and fa in _TFL_FUSED:
                kind = "maxpool" if on == "MAX_POOL_2D" else "avgpool"
                attrs, fused = {"kernel": int(opts.filterHeight), "stride": int(opts.strideH)}, _TFL_FUSED[fa]
        elif on == "MEAN" and len(live) == 1 and ins[1] in consts:
            axes = sorted(int(a) % 4 for a in consts[ins[1]].reshape(-1))
            if len(shapes[live[0]]) == 4 and axes == [1, 2]:
                kind = "gap"
        out_names = [tname(i) for i in outs]
        if fused != "none":
            mid = f"{out_names[0]}:pre-act"
            shapes[mid] = shapes[out_names[0]]
            prims.append(Prim(kind, name, on, live, [mid], attrs))
            prims.append(Prim("act", f"{name}:fused-{fused}", on, [mid], out_names, {"act": fused, "locked": True}))
        else:
            prims.append(Prim(kind, name, on, live, out_names, attrs))
        prims[-1].attrs.setdefault("_index", idx)
        if fused != "none":
            prims[-2].attrs["_index"] = idx

    def extract(p: Prim) -> bytes:
        return _tflite_one_op(model, sg, p.attrs["_index"], consts)

    return _Graph("tflite", prims, shapes, {tname(i) for i in sg.outputs}, extract)


def _tflite_one_op(model, sg, index: int, consts: dict[int, np.ndarray]) -> bytes:
    """A standalone TFLite model of one operator (its constant buffers copied)."""
    import copy

    import ai_edge_litert.schema_py_generated as schema
    import flatbuffers

    op = copy.deepcopy(sg.operators[index])
    new = schema.ModelT()
    new.version = model.version
    new.buffers = [schema.BufferT()]
    code = copy.deepcopy(model.operatorCodes[op.opcodeIndex])
    new.operatorCodes = [code]
    tensors, remap = [], {}
    for old in [int(i) for i in op.inputs] + [int(i) for i in op.outputs]:
        if old < 0 or old in remap:
            continue
        t = copy.deepcopy(sg.tensors[old])
        if old in consts:
            buf = schema.BufferT()
            buf.data = copy.deepcopy(model.buffers[sg.tensors[old].buffer].data)
            new.buffers.append(buf)
            t.buffer = len(new.buffers) - 1
        else:
            t.buffer = 0
        remap[old] = len(tensors)
        tensors.append(t)
    op.opcodeIndex = 0
    op.inputs = [remap.get(int(i), -1) if int(i) >= 0 else -1 for i in op.inputs]
    op.outputs = [remap[int(i)] for i in op.outputs]
    g = schema.SubGraphT()
    g.tensors = tensors
    g.operators = [op]
    g.inputs = [remap[int(i)] for i in sg.operators[index].inputs if int(i) >= 0 and int(i) not in consts]
    g.outputs = list(op.outputs)
    g.name = b"edgelat-op"
    new.subgraphs = [g]
    new.description = b"edgelat one-op extract"
    builder = flatbuffers.Builder(1024)
    builder.Finish(new.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --------------------------------------------------------------------------- matching
class _Matcher:
    def __init__(self, graph: _Graph, rules: FusionRules) -> None:
        self.g = graph
        self.p = graph.prims
        self.rules = rules
        self.cons = graph.consumers()
        self.used = [False] * len(self.p)
        self.producer = {t: i for i, p in enumerate(self.p) for t in p.outputs}
        self.resized: set[str] = set()  # outputs of convs/pools not padded "same" (see sized)
        self.extracted: dict[str, bytes] = {}  # one-node model per unknown-kernel key
        self.taken: list[list[int]] = []  # the nodes behind each item, in emission order

    # helpers --------------------------------------------------------------
    def only(self, tensor: str) -> int | None:
        """The single consumer of ``tensor`` if it has exactly one and it is free."""
        c = self.cons.get(tensor, [])
        if len(c) == 1 and c[0] >= 0 and not self.used[c[0]]:
            return c[0]
        return None

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.g.shapes.get(tensor, ())

    def hwc(self, tensor: str) -> tuple[int, int, int]:
        s = self.shape(tensor)
        if len(s) == 4:
            return s[1], s[2], s[3]
        if len(s) == 2:
            return 1, 1, s[1]
        if len(s) == 1:
            return 1, 1, s[0]
        raise BadInput(f"tensor {tensor} has shape {s}; cannot map it to a batch-1 image or vector")

    def act_after(self, tensor: str) -> tuple[str, list[int], str, bool]:
        """(activation, nodes it takes, output tensor, locked) of an activation applied to ``tensor``."""
        c = [i for i in self.cons.get(tensor, []) if i >= 0]
        if len(self.cons.get(tensor, [])) == 1 and c and not self.used[c[0]]:
            j = c[0]
            q = self.p[j]
            if q.kind == "act":
                return q.attrs["act"], [j], q.outputs[0], bool(q.attrs.get("locked"))
            hs = self.hsigmoid_chain(j, tensor)
            if hs is not None:
                return "hsigmoid", hs[0], hs[1], False
        if len(c) == 2 and len(self.cons[tensor]) == 2 and not any(self.used[i] for i in c):
            gate = [i for i in c if self.p[i].kind in ("act", "addc")]
            mul = [i for i in c if self.p[i].kind == "mul"]
            if len(gate) == 1 and len(mul) == 1:
                gi, mi = gate[0], mul[0]
                if self.p[gi].kind == "act" and self.p[gi].attrs["act"] in ("sigmoid", "hsigmoid"):
                    nodes, gout = [gi], self.p[gi].outputs[0]
                    act = self.p[gi].attrs["act"]
                else:
                    hs = self.hsigmoid_chain(gi, tensor)
                    if hs is None:
                        return "none", [], tensor, False
                    nodes, gout, act = hs[0], hs[1], "hsigmoid"
                if self.only(gout) == mi and set(self.p[mi].inputs) == {tensor, gout}:
                    return ("swish" if act == "sigmoid" else "hswish"), nodes + [mi], self.p[mi].outputs[0], False
        return "none", [], tensor, False

    def hsigmoid_chain(self, j: int, tensor: str) -> tuple[list[int], str] | None:
        """relu6(x + 3) / 6 written out (TFLite, some exporters) starting at node ``j``."""
        a = self.p[j]
        if a.kind != "addc" or a.attrs.get("value") is None or abs(a.attrs["value"] - 3.0) > 1e-6 or a.inputs != [tensor]:
            return None
        k = self.only(a.outputs[0])
        if k is None or self.p[k].kind != "act" or self.p[k].attrs["act"] != "relu6":
            return None
        m = self.only(self.p[k].outputs[0])
        if m is None or self.p[m].kind != "mulc" or abs(self.p[m].attrs["value"] - 1 / 6) > 1e-6:
            return None
        return [j, k, m], self.p[m].outputs[0]

    def conv_chain(self, i: int) -> dict[str, Any] | None:
        """A conv/dwconv with its batch-norm and activation: spec fields and nodes, not yet taken."""
        c = self.p[i]
        if c.kind not in ("conv", "dwconv") or self.used[i]:
            return None
        nodes, out, bn = [i], c.outputs[0], bool(c.attrs.get("bias"))
        j = self.only(out)
        if j is not None and self.p[j].kind == "bn":
            nodes.append(j)
            out, bn = self.p[j].outputs[0], True
        act, an, aout, locked = self.act_after(out)
        h, w, same = self.sized(c.inputs[0], c.outputs[0], c.attrs["stride"])
        return {
            "op": "conv2d" if c.kind == "conv" else "dwconv2d",
            "h": h, "w": w, "cin": c.attrs["cin"], "cout": c.attrs["cout"],
            "kernel": c.attrs["kernel"], "stride": c.attrs["stride"], "bn": bn,
            "nodes": nodes, "out": out, "act": act, "act_nodes": an, "act_out": aout, "locked": locked,
            "same": same,
        }

    def sized(self, x: str, y: str, stride: int) -> tuple[int, int, bool]:
        """(h, w, same) of a windowed kernel from ``x`` to ``y``.

        The catalog's convs and pools pad "same" (output side ``ceil(in / stride)``). One
        padded otherwise (valid, explicit pads, ceil mode) is priced as the catalog kernel
        with the same output and the same work: input side ``out * stride``.
        """
        h, w, _ = self.hwc(x)
        out = self.shape(y)
        if len(out) != 4 or (out[1], out[2]) == (same_out(h, stride), same_out(w, stride)):
            return h, w, True
        self.resized.add(y)
        return out[1] * stride, out[2] * stride, False

    def take(self, nodes: list[int]) -> list[str]:
        for n in nodes:
            self.used[n] = True
        self.taken.append(list(nodes))
        return [self.p[n].name for n in nodes]

    def links(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Producers and consumers of each emitted item (see :attr:`Split.links`)."""
        owner = {n: k for k, nodes in enumerate(self.taken) for n in nodes}
        out = []
        for nodes in self.taken:
            inside = set(nodes)
            prods: set[int] = set()
            cons: set[int] = set()
            for n in nodes:
                for t in self.p[n].inputs:
                    j = self.producer.get(t)
                    if j is None:
                        prods.add(GRAPH_EDGE)
                    elif j not in inside:
                        prods.add(owner.get(j, VIEW_EDGE))
                for t in self.p[n].outputs:
                    for c in self.cons.get(t, []):
                        if c < 0:
                            cons.add(GRAPH_EDGE)
                        elif c not in inside:
                            cons.add(owner.get(c, VIEW_EDGE))
            out.append((tuple(sorted(prods)), tuple(sorted(cons))))
        return out

    # patterns -------------------------------------------------------------
    def se_at(self, g: int) -> tuple[list[int], str] | None:
        """The catalog SE block starting at global pool ``g``: (nodes, output)."""
        p = self.p
        if p[g].kind != "gap" or self.used[g]:
            return None
        x = p[g].inputs[0]
        if len(self.shape(x)) != 4:
            return None
        _, _, c = self.hwc(x)
        r = se_channels(c)
        j = self.only(p[g].outputs[0])
        c1 = self.conv_chain(j) if j is not None else None
        if not c1 or c1["op"] != "conv2d" or c1["kernel"] != 1 or c1["cout"] != r or c1["act"] != "relu":
            return None
        k = self.only(c1["act_out"])
        c2 = self.conv_chain(k) if k is not None else None
        if not c2 or c2["op"] != "conv2d" or c2["kernel"] != 1 or c2["cout"] != c or c2["act"] != "hsigmoid":
            return None
        m = self.only(c2["act_out"])
        if m is None or p[m].kind != "mul" or set(p[m].inputs) != {x, c2["act_out"]}:
            return None
        return [g] + c1["nodes"] + c1["act_nodes"] + c2["nodes"] + c2["act_nodes"] + [m], p[m].outputs[0]

    def mbconv_at(self, i: int) -> tuple[KernelSpec, list[int]] | None:
        first = self.conv_chain(i)
        if first is None:
            return None
        x = self.p[i].inputs[0]
        if len(self.shape(x)) != 4:
            return None
        h, w, cin = self.hwc(x)
        nodes: list[int] = []
        if first["op"] == "conv2d":
            if first["kernel"] != 1 or first["stride"] != 1 or first["act"] == "none":
                return None
            act, mid = first["act"], first["cout"]
            nodes += first["nodes"] + first["act_nodes"]
            j = self.only(first["act_out"])
            dw = self.conv_chain(j) if j is not None else None
        else:
            act, mid, dw = first["act"], cin, first
        if not dw or dw["op"] != "dwconv2d" or dw["cin"] != mid or dw["act"] != act or not (dw["same"] and first["same"]):
            return None
        nodes += dw["nodes"] + dw["act_nodes"]
        y = dw["act_out"]
        se = False
        cons = [c for c in self.cons.get(y, [])]
        gaps = [c for c in cons if c >= 0 and self.p[c].kind == "gap"]
        if len(cons) == 2 and len(gaps) == 1:
            se_match = self.se_at(gaps[0])
            if se_match is None:
                return None
            nodes += se_match[0]
            y, se = se_match[1], True
        j = self.only(y)
        proj = self.conv_chain(j) if j is not None else None
        if not proj or proj["op"] != "conv2d" or proj["kernel"] != 1 or proj["stride"] != 1 or proj["act"] != "none" or not proj["same"]:
            return None
        nodes += proj["nodes"]
        cout, out = proj["cout"], proj["out"]
        j = self.only(out)
        residual = j is not None and self.p[j].kind == "add" and set(self.p[j].inputs) == {out, x}
        if residual:
            nodes.append(j)
        expand = 1.0 if first["op"] == "dwconv2d" else canonical_expand(cin, mid)
        try:
            spec = KernelSpec("mbconv", h, w, cin, cout, kernel=dw["kernel"], stride=dw["stride"], expand=expand, se=se, act=act)
        except BadInput:
            return None
        if spec.mid_channels != mid or spec.has_residual != residual or (expand == 1.0 and first["op"] == "conv2d"):
            return None
        return spec, nodes

    # the walk -------------------------------------------------------------
    def run(self) -> Split:
        items: list[Item] = []
        sources: list[list[str]] = []
        layout: list[dict[str, str]] = []

        def emit(item: Item, nodes: list[int]) -> None:
            items.append(item)
            sources.append(self.take(nodes))

        for i, prim in enumerate(self.p):
            if self.used[i]:
                continue
            kind = prim.kind
            if kind in ("conv", "dwconv"):
                block = self.mbconv_at(i)
                if block is not None:
                    emit(block[0], block[1])
                    continue
                c = self.conv_chain(i)
                fields = {k: c[k] for k in ("op", "h", "w", "cin", "cout", "kernel", "stride", "bn")}
                if c["op"] == "dwconv2d":
                    fields["cout"] = 0
                act = c["act"]
                if act != "none" and (c["locked"] or self.rules.fuses(c["op"], act)):
                    emit(KernelSpec(**fields, act=act), c["nodes"] + c["act_nodes"])
                else:
                    spec = KernelSpec(**fields)
                    _, ho, wo, co = spec.output_shape()
                    emit(spec, c["nodes"])
                    if act != "none":
                        emit(KernelSpec(act, ho, wo, co), c["act_nodes"])
                continue
            if kind == "gap":
                se = self.se_at(i)
                if se is not None:
                    h, w, c = self.hwc(prim.inputs[0])
                    emit(KernelSpec("se", h, w, c), se[0])
                    continue
                h, w, c = self.hwc(prim.inputs[0])
                emit(KernelSpec("global-avgpool", h, w, c), [i])
                continue
            if kind == "view":
                j = self.only(prim.outputs[0])
                if j is not None and self.p[j].kind == "fc":
                    self.p[j].attrs.setdefault("views", []).append(i)
                    continue
                layout.append({"name": prim.name, "op_type": prim.op_type})
                self.used[i] = True
                continue
            if kind == "fc":
                cin, cout = prim.attrs["cin"], prim.attrs["cout"]
                if int(np.prod(self.shape(prim.inputs[0]) or (cin,))) != cin:  # a token-wise linear layer
                    for v in prim.attrs.pop("views", []):
                        layout.append({"name": self.p[v].name, "op_type": self.p[v].op_type})
                        self.used[v] = True
                    self.unknown(i, items, sources)
                    continue
                nodes = prim.attrs.get("views", []) + [i]
                out = prim.outputs[0]
                if prim.attrs.get("matmul"):
                    j = self.only(out)
                    if j is not None and self.p[j].kind == "addc" and self.p[j].attrs.get("bias"):
                        nodes.append(j)
                        out = self.p[j].outputs[0]
                act, an, _, locked = self.act_after(out)
                if act != "none" and (locked or self.rules.fuses("fc", act)):
                    emit(KernelSpec("fc", 1, 1, cin, cout, act=act), nodes + an)
                else:
                    emit(KernelSpec("fc", 1, 1, cin, cout), nodes)
                    if act != "none":
                        emit(KernelSpec(act, 1, 1, cout), an)
                continue
            if kind in ("maxpool", "avgpool") and len(self.shape(prim.inputs[0])) == 4:
                h, w, _ = self.sized(prim.inputs[0], prim.outputs[0], prim.attrs["stride"])
                c = self.hwc(prim.inputs[0])[2]
                emit(KernelSpec(kind, h, w, c, kernel=prim.attrs["kernel"], stride=prim.attrs["stride"]), [i])
                self.trailing_act(i, items, sources)
                continue
            if kind in ("add", "mul") and len(self.shape(prim.inputs[0])) == 4 and self.shape(prim.inputs[0]) == self.shape(prim.inputs[1]):
                h, w, c = self.hwc(prim.inputs[0])
                emit(KernelSpec(kind, h, w, c), [i])
                self.trailing_act(i, items, sources)
                continue
            if kind == "concat":
                a, b = self.shape(prim.inputs[0]), self.shape(prim.inputs[1])
                if len(a) == 4 and a[:3] == b[:3]:
                    emit(KernelSpec("concat", a[1], a[2], a[3], b[3]), [i])
                    continue
            if kind in ("act", "addc") and len(self.shape(prim.inputs[0])) in (1, 2, 4):
                # a standalone activation, possibly written out (x*sigmoid(x), relu6(x+3)/6, ...)
                x = prim.inputs[0]
                act, nodes, _, _ = self.act_after(x)
                if act != "none" and i in nodes:
                    h, w, c = self.hwc(x)
                    emit(KernelSpec(act, h, w, c), nodes)
                    continue
                if kind == "act":
                    h, w, c = self.hwc(x)
                    emit(KernelSpec(prim.attrs["act"], h, w, c), [i])
                    continue
            self.unknown(i, items, sources)
        notes = []
        if self.resized:
            notes.append(f"{len(self.resized)} conv/pool node(s) are not padded 'same'; each is priced as the catalog "
                         "kernel with its output size and work (input side = output side x stride)")
        return Split(self.g.fmt, items, sources, layout, notes, list(self.g.folded), self.links())

    def trailing_act(self, i: int, items: list, sources: list) -> None:
        """An activation fused into a TFLite pool/add op becomes its own kernel."""
        j = self.only(self.p[i].outputs[0])
        if j is not None and self.p[j].kind == "act" and self.p[j].attrs.get("locked"):
            h, w, c = self.hwc(self.p[j].inputs[0])
            items.append(KernelSpec(self.p[j].attrs["act"], h, w, c))
            sources.append(self.take([j]))

    def unknown(self, i: int, items: list, sources: list) -> None:
        """Node ``i`` as itself, with a one-node model to measure; identical nodes share one
        key (and one extracted model)."""
        prim = self.p[i]
        ins = [self.shape(t) for t in prim.inputs]
        outs = [self.shape(t) for t in prim.outputs]
        if self.g.signature is not None:
            sig = self.g.signature(prim)
        else:
            sig = {"op": prim.op_type, "in": ins, "out": outs, "attrs": {k: v for k, v in prim.attrs.items() if not k.startswith("_")}}
        kernel = UnknownKernel(prim.name, prim.op_type, self.g.fmt, ins, outs, sig)
        if kernel.key not in self.extracted:
            try:
                self.extracted[kernel.key] = self.g.extract(prim)
            except Exception as exc:  # a node we cannot cut out stays listed, just not measurable
                self.extracted[kernel.key] = b""
                prim.attrs["extract_error"] = f"{type(exc).__name__}: {exc}"
        kernel.model = self.extracted[kernel.key]
        items.append(kernel)
        sources.append(self.take([i]))


def detect_format(data: bytes, path: str | Path | None = None) -> str:
    """"onnx" or "tflite", from the content (file identifier), else the file suffix."""
    if len(data) >= 8 and data[4:8] == b"TFL3":
        return "tflite"
    suffix = Path(path).suffix.lower() if path is not None else ""
    if suffix == ".tflite":
        return "tflite"
    return "onnx"


def split_model(data: bytes, fmt: str | None = None, rules: FusionRules | None = None) -> Split:
    """Split a serialized ONNX or TFLite model into kernels (see the module docstring)."""
    fmt = fmt or detect_format(data)
    if fmt not in ("onnx", "tflite"):
        raise BadInput(f"unknown model format {fmt!r} (onnx or tflite)")
    notes: list[str] = []
    graph = _read_onnx(data, notes) if fmt == "onnx" else _read_tflite(data, notes)
    split = _Matcher(graph, rules or FusionRules()).run()
    split.notes = notes + split.notes
    return split


def split_file(path: str | Path, rules: FusionRules | None = None) -> Split:
    """Split a model file; BadInput if it cannot be read."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read model file {p}: {exc.strerror or exc}") from None
    return split_model(data, detect_format(data, p), rules)
