"""FBNet (Wu et al., CVPR 2019): 22 searchable layers x 9 candidate blocks, input 224.

Macro skeleton (FBNet paper, Table 1): stem conv 3x3 3->16 stride 2 (bn, relu);
22 layers with output channels / strides::

    16/1 | 24/2 24 24 24 | 32/2 32 32 32 | 64/2 64 64 64 | 112/1 112 112 112 | 184/2 184 184 184 | 352/1

then 1x1 conv 352->1984 (bn, relu), global average pool, fc 1984->1000 (the
paper's table prints 1984 for the conv and 1504 for the fc input; the conv's
width is what the fc sees, so we use 1984 for both).

Blocks (``k{3,5}_e{1,3,6}[_g2]`` and ``skip``), as FBNet's ``IRFBlock``:
1x1 "pw" conv cin -> cin*e (bn, relu; grouped when ``_g2``, then a channel
shuffle), kxk depthwise conv with the layer's stride (bn, relu), 1x1 "pwl" conv
-> cout (bn; grouped when ``_g2``), identity residual when stride 1 and
cin == cout. The pw conv is present even for e1 (that is what makes ``e1_g2``
differ from ``e1``). ``skip`` is the identity, or a 1x1 conv (bn, relu) with
the layer's stride where the shape changes (FBNet's ``Identity`` block).

Kernel decomposition (documented approximation): the catalog has no grouped
convolution, so a 1x1 conv with 2 groups is priced as **two dense 1x1 convs
on half the channels each** (``conv2d`` cin/2 -> cout/2, twice): FLOPs and
parameters are exact, the channel split/concat and the shuffle are not
priced. The exported ONNX model has the real grouped convs and the shuffle.
TFLite export is not supported for this space (grouped convs and residuals
are not a chain); use ONNX.

Strings: the 22 block names separated by spaces, as in
the HELP measurements (``tests/data/help/fbnet_latency_ms.csv.xz``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.spaces.space import KernelVocabulary, SearchSpace, check_format

BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
LAYERS: tuple[tuple[int, int], ...] = (
    ((16, 1),)
    + ((24, 2),) + ((24, 1),) * 3
    + ((32, 2),) + ((32, 1),) * 3
    + ((64, 2),) + ((64, 1),) * 3
    + ((112, 1),) + ((112, 1),) * 3
    + ((184, 2),) + ((184, 1),) * 3
    + ((352, 1),)
)
RESOLUTION = 224
STEM, HEAD, CLASSES = 16, 1984, 1000
SLOTS_PER_LAYER = 6  # pw (x2 when grouped), dw, pwl (x2), add


def parse_block(name: str) -> tuple[int, int, int]:
    """``k5_e1_g2`` -> (kernel 5, expand 1, groups 2); ``skip`` -> (0, 0, 1)."""
    if name == "skip":
        return 0, 0, 1
    parts = name.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), (int(parts[2][1:]) if len(parts) > 2 else 1)


def _same(h: int, s: int) -> int:
    return -(-h // s)


class FBNetSpace(SearchSpace):
    """The FBNet space (see the module docstring)."""

    name = "fbnet"
    choices = tuple(BLOCKS for _ in LAYERS)

    # --------------------------------------------------------------- strings
    def to_string(self, g: np.ndarray) -> str:
        return " ".join(self.values(g))

    def from_string(self, s: str) -> np.ndarray:
        names = (s or "").split()
        if len(names) != len(LAYERS):
            raise BadInput(
                f"fbnet: an architecture is {len(LAYERS)} block names separated by spaces, got {len(names)} "
                f"(blocks: {', '.join(BLOCKS)})"
            )
        return np.array([self.index_of(i, n, f"layer {i}") for i, n in enumerate(names)], dtype=np.int16)

    # -------------------------------------------------------------- features
    def encode(self, pop: np.ndarray) -> np.ndarray:
        """One-hot of each layer's block (22 x 9)."""
        pop = self.check(pop).astype(np.int64)
        n = pop.shape[0]
        out = np.zeros((n, len(LAYERS) * len(BLOCKS)), dtype=np.float32)
        out[np.arange(n)[:, None], np.arange(len(LAYERS))[None, :] * len(BLOCKS) + pop] = 1.0
        return out

    # --------------------------------------------------------------- kernels
    @staticmethod
    def block_kernels(h: int, cin: int, cout: int, stride: int, block: str) -> list[KernelSpec]:
        """The kernels of one block (grouped 1x1 convs as two half-width convs)."""
        k, e, groups = parse_block(block)
        if k == 0:
            if stride == 1 and cin == cout:
                return []
            return [KernelSpec("conv2d", h=h, w=h, cin=cin, cout=cout, kernel=1, stride=stride, act="relu", bn=True)]
        mid, ho = cin * e, _same(h, stride)
        pw = [KernelSpec("conv2d", h=h, w=h, cin=cin // groups, cout=mid // groups, act="relu", bn=True)] * groups
        dw = [KernelSpec("dwconv2d", h=h, w=h, cin=mid, kernel=k, stride=stride, act="relu", bn=True)]
        pwl = [KernelSpec("conv2d", h=ho, w=ho, cin=mid // groups, cout=cout // groups, bn=True)] * groups
        add = [KernelSpec("add", h=ho, w=ho, cin=cout)] if stride == 1 and cin == cout else []
        return pw + dw + pwl + add

    @cached_property
    def _tables(self) -> tuple[list[KernelSpec], np.ndarray, np.ndarray, np.ndarray]:
        vocab = KernelVocabulary()
        vid = vocab.id

        stem = vid(KernelSpec("conv2d", h=RESOLUTION, w=RESOLUTION, cin=3, cout=STEM, kernel=3, stride=2, act="relu", bn=True))
        lut = np.full((len(LAYERS), len(BLOCKS), SLOTS_PER_LAYER), -1, dtype=np.int32)
        h, cin = _same(RESOLUTION, 2), STEM
        for i, (cout, stride) in enumerate(LAYERS):
            for b, block in enumerate(BLOCKS):
                ids = [vid(s) for s in self.block_kernels(h, cin, cout, stride, block)]
                lut[i, b, : len(ids)] = ids
            h, cin = _same(h, stride), cout
        head = np.array([
            vid(KernelSpec("conv2d", h=h, w=h, cin=cin, cout=HEAD, kernel=1, act="relu", bn=True)),
            vid(KernelSpec("global-avgpool", h=h, w=h, cin=HEAD)),
            vid(KernelSpec("fc", h=1, w=1, cin=HEAD, cout=CLASSES)),
        ], dtype=np.int32)
        return vocab.specs, lut, np.array([stem], dtype=np.int32), head

    def kernel_vocabulary(self) -> list[KernelSpec]:
        return self._tables[0]

    def kernel_ids(self, pop: np.ndarray) -> np.ndarray:
        pop = self.check(pop).astype(np.intp)
        _, lut, stem, head = self._tables
        n = pop.shape[0]
        body = lut[np.arange(len(LAYERS))[None, :], pop].reshape(n, -1)
        return np.concatenate([np.broadcast_to(stem, (n, 1)), body, np.broadcast_to(head, (n, 3))], axis=1)

    # ---------------------------------------------------------------- export
    def export(self, g: np.ndarray, fmt: str, seed: int = 0) -> bytes:
        """ONNX with real grouped convs and channel shuffles; TFLite is not supported."""
        if check_format(fmt) != "onnx":
            raise BadInput("tflite export is not supported for the fbnet space (grouped convs, residuals); use .onnx")
        from edgelat.profiler.spaces.onnx_graph import OnnxGraph

        gr = OnnxGraph(seed, name="fbnet")
        x = gr.conv(gr.input(3, RESOLUTION, RESOLUTION), 3, STEM, 3, stride=2, act="relu")
        h, cin = _same(RESOLUTION, 2), STEM
        for (cout, stride), block in zip(LAYERS, self.values(g)):
            k, e, groups = parse_block(block)
            if k == 0:
                if not (stride == 1 and cin == cout):
                    x = gr.conv(x, cin, cout, 1, stride=stride, act="relu")
            else:
                mid = cin * e
                y = gr.conv(x, cin, mid, 1, group=groups, act="relu")
                if groups > 1:
                    y = gr.shuffle(y, mid, h, h, groups)
                y = gr.conv(y, mid, mid, k, stride=stride, group=mid, act="relu")
                y = gr.conv(y, mid, cout, 1, group=groups)
                x = gr.add(y, x) if stride == 1 and cin == cout else y
            h, cin = _same(h, stride), cout
        x = gr.conv(x, cin, HEAD, 1, act="relu")
        return gr.finish(gr.gap_fc(x, HEAD, CLASSES), [1, CLASSES])
