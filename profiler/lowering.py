"""Kernel specs -> a small format-neutral graph with concrete weights.

Both model builders (ONNX and TFLite) emit this same graph, so the two formats
hold bit-identical float32 weights for a given seed and compute the same
function. Batch-norm is folded into the convolution here, once, for both.

Tensors are named strings; shapes are NHWC (or ``(1, C)`` after a fully
connected layer). Weights use the layouts: conv ``(kh, kw, cin, cout)``,
depthwise ``(kh, kw, c)``, dense ``(cin, cout)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgelat.errors import BadInput
from edgelat.profiler.ops import ACTIVATION_OPS, BINARY_OPS, KernelSpec, same_pads, se_channels

FUSABLE_ACTS = ("none", "relu", "relu6")  # both TFLite and a Conv->Relu/Clip pair express these
SHORTCUT_OPS = ("add",)  # binary ops a chain may hold after its first kernel (see :func:`lower`)
BN_EPS = 1e-5
OUTPUT = "output"


@dataclass
class Node:
    """One primitive op. ``kind`` is conv, dwconv, dense, maxpool, avgpool, gap,
    add, mul, concat, act, reshape."""

    kind: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    inputs: list[str]
    output: str
    shapes: dict[str, tuple[int, ...]]
    nodes: list[Node]


def as_spec_list(specs: KernelSpec | Sequence[KernelSpec]) -> list[KernelSpec]:
    """Validate a kernel or a sequential chain of kernels."""
    if isinstance(specs, KernelSpec):
        return [specs]
    specs = list(specs)
    if not specs:
        raise BadInput("cannot build a model from an empty kernel list")
    for s in specs:
        if not isinstance(s, KernelSpec):
            raise BadInput(f"expected KernelSpec entries, got {type(s).__name__}")
    if len(specs) > 1:
        for i, s in enumerate(specs):
            if s.op in BINARY_OPS and not (i and s.op in SHORTCUT_OPS):
                raise BadInput(f"kernel {i} ({s.key}) takes two inputs and cannot be part of a chain"
                               + (" (add may follow other kernels, as a shortcut)" if not i else ""))
            if i and s.input_shapes()[0] != specs[i - 1].output_shape() and not _flattens(specs[i - 1], s):
                raise BadInput(
                    f"kernel {i} ({s.key}) expects input {s.input_shapes()[0]} but kernel {i - 1} "
                    f"({specs[i - 1].key}) gives {specs[i - 1].output_shape()}"
                )
    return specs


def _flattens(prev: KernelSpec, spec: KernelSpec) -> bool:
    """A fully connected layer reading a whole feature map, flattened (VGG's and AlexNet's heads)."""
    _, h, w, c = prev.output_shape()
    return spec.op == "fc" and spec.h == spec.w == 1 and spec.cin == h * w * c


class _Lowerer:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._n = 0

    # -- plumbing
    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def _add(self, kind: str, inputs: list[str], shape: tuple[int, ...], stem: str, **kw: Any) -> str:
        out = self._name(stem)
        self.shapes[out] = tuple(int(d) for d in shape)
        self.nodes.append(Node(kind, inputs, out, kw.pop("attrs", {}), kw.pop("consts", {})))
        return out

    def _to4d(self, x: str) -> str:
        shape = self.shapes[x]
        if len(shape) == 4:
            return x
        return self._add("reshape", [x], (1, 1, 1, shape[1]), "reshape")

    # -- weights: small, variance-preserving, float32 after folding
    def _weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """Float32 weights with variance ``1 / fan_in``, uniform on ``+-sqrt(3 / fan_in)``.

        Drawn as float32 uniforms in place: a preset's kernels hold tens of megabytes of
        weights, and float64 normal draws were most of the time spent building them. A
        kernel's latency does not depend on the values, only on their being ordinary floats."""
        w = self.rng.random(shape, dtype=np.float32)
        bound = np.float32(np.sqrt(3.0 / fan_in))
        w *= 2 * bound
        w -= bound
        return w

    def _conv_weights(self, k: int, cin: int, cout: int, depthwise: bool, bn: bool) -> tuple[np.ndarray, np.ndarray]:
        fan_in = k * k * (1 if depthwise else cin)
        w = self._weights((k, k, cout) if depthwise else (k, k, cin, cout), fan_in)
        b = self.rng.standard_normal(cout) * 0.1
        if bn:
            gamma = self.rng.uniform(0.5, 1.5, cout)
            beta = self.rng.standard_normal(cout) * 0.1
            mean = self.rng.standard_normal(cout) * 0.1
            var = self.rng.uniform(0.5, 1.5, cout)
            scale = gamma / np.sqrt(var + BN_EPS)
            w *= scale.astype(np.float32)  # broadcasts over the last (output-channel) axis
            b = (b - mean) * scale + beta
        return w, b.astype(np.float32)

    # -- primitives
    def act(self, x: str, act: str) -> str:
        if act == "none":
            return x
        return self._add("act", [x], self.shapes[x], act, attrs={"act": act})

    def conv(self, x: str, cout: int, k: int, s: int, act: str, bn: bool, depthwise: bool = False) -> str:
        x = self._to4d(x)
        _, h, w, cin = self.shapes[x]
        if depthwise:
            cout = cin
        weight, bias = self._conv_weights(k, cin, cout, depthwise, bn)
        pads = (*same_pads(h, k, s), *same_pads(w, k, s))  # top, bottom, left, right
        fused = act if act in FUSABLE_ACTS else "none"
        shape = (1, -(-h // s), -(-w // s), cout)
        y = self._add(
            "dwconv" if depthwise else "conv",
            [x],
            shape,
            "dwconv" if depthwise else "conv",
            attrs={"kernel": k, "stride": s, "pads": pads, "fused": fused},
            consts={"weight": weight, "bias": bias},
        )
        return y if fused == act else self.act(y, act)

    def dense(self, x: str, cout: int, act: str) -> str:
        shape = self.shapes[x]
        # a feature map is flattened (both formats' dense ops read it as one row of h*w*c)
        cin = int(np.prod(shape[1:]))
        w = self._weights((cin, cout), cin)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        fused = act if act in FUSABLE_ACTS else "none"
        y = self._add("dense", [x], (1, cout), "fc", attrs={"fused": fused}, consts={"weight": w, "bias": b})
        return y if fused == act else self.act(y, act)

    def pool(self, x: str, kind: str, k: int, s: int) -> str:
        x = self._to4d(x)
        _, h, w, c = self.shapes[x]
        pads = (*same_pads(h, k, s), *same_pads(w, k, s))
        attrs = {"kernel": k, "stride": s, "pads": pads}
        return self._add(kind, [x], (1, -(-h // s), -(-w // s), c), kind, attrs=attrs)

    def gap(self, x: str) -> str:
        x = self._to4d(x)
        return self._add("gap", [x], (1, 1, 1, self.shapes[x][3]), "gap")

    def binary(self, kind: str, a: str, b: str) -> str:
        sa, sb = self.shapes[a], self.shapes[b]
        if kind == "concat":
            shape = (*sa[:-1], sa[-1] + sb[-1])
        else:
            shape = tuple(max(p, q) for p, q in zip(sa, sb))
        return self._add(kind, [a, b], shape, kind)

    def se(self, x: str) -> str:
        c = self.shapes[x][3]
        r = se_channels(c)
        g = self.gap(x)
        g = self.conv(g, r, 1, 1, "relu", bn=False)
        g = self.conv(g, c, 1, 1, "hsigmoid", bn=False)
        return self.binary("mul", x, g)

    # -- kernels
    def kernel(self, spec: KernelSpec, x: str, x2: str | None) -> str:
        op = spec.op
        if op == "conv2d":
            return self.conv(x, spec.cout, spec.kernel, spec.stride, spec.act, spec.bn)
        if op == "dwconv2d":
            return self.conv(x, 0, spec.kernel, spec.stride, spec.act, spec.bn, depthwise=True)
        if op == "fc":
            return self.dense(x, spec.cout, spec.act)
        if op in ("maxpool", "avgpool"):
            return self.pool(x, op, spec.kernel, spec.stride)
        if op == "global-avgpool":
            return self.gap(x)
        if op in BINARY_OPS:
            assert x2 is not None
            return self.binary(op, x, x2)
        if op in ACTIVATION_OPS:
            return self.act(x, op)
        if op == "se":
            return self.se(self._to4d(x))
        if op == "mbconv":
            y = self._to4d(x)
            if spec.expand != 1.0:
                y = self.conv(y, spec.mid_channels, 1, 1, spec.act, bn=True)
            y = self.conv(y, 0, spec.kernel, spec.stride, spec.act, bn=True, depthwise=True)
            if spec.se:
                y = self.se(y)
            y = self.conv(y, spec.cout, 1, 1, "none", bn=True)
            return self.binary("add", y, self._to4d(x)) if spec.has_residual else y
        raise BadInput(f"no lowering for op {op!r}")  # unreachable: KernelSpec validates op


def _shortcut(lw: "_Lowerer", block: list[str], x: str) -> str:
    """The second operand of an add inside a chain: a residual shortcut.

    It is the earliest tensor of ``x``'s shape since the chain's start or its last
    shortcut op, i.e. the block's input where the block kept its shape (a ResNet's
    identity shortcut). Where the block changed the shape, a real network projects
    its input (a 1x1 conv), which a chain cannot hold; the block's earliest tensor of
    ``x``'s shape stands in (``x`` itself at worst): the add's work and memory traffic,
    not the projection's.
    """
    return next((t for t in block if lw.shapes[t] == lw.shapes[x]), x)


def lower(specs: KernelSpec | Sequence[KernelSpec], seed: int = 0) -> Graph:
    """Lower one kernel or a sequential chain into a :class:`Graph` with weights from ``seed``.

    An add after the chain's first kernel takes its second operand from a shortcut
    (see :func:`_shortcut`), so a chain can hold residual blocks as exported ResNets have them.
    """
    chain = as_spec_list(specs)
    lw = _Lowerer(seed)
    inputs = ["input"] + (["input2"] if chain[0].op in BINARY_OPS else [])
    for name, shape in zip(inputs, chain[0].input_shapes()):
        lw.shapes[name] = shape
    x = inputs[0]
    block = [x]  # tensors since the chain's start or its last shortcut op; block[0] is the block's input
    for i, spec in enumerate(chain):
        if i and spec.op in SHORTCUT_OPS:
            x = lw.kernel(spec, x, _shortcut(lw, block, x))
            block = [x]
            continue
        x = lw.kernel(spec, x, inputs[1] if len(inputs) > 1 else None)
        # an activation right after a shortcut op closes that block: its output opens the next
        block = [x] if spec.op in ACTIVATION_OPS and len(block) == 1 and i else block + [x]
    # the last tensor is only produced, never consumed: give it a stable name
    lw.nodes[-1].output = OUTPUT
    lw.shapes[OUTPUT] = lw.shapes.pop(x)
    return Graph(inputs=inputs, output=OUTPUT, shapes=lw.shapes, nodes=lw.nodes)
