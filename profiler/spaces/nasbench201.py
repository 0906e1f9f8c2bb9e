"""NAS-Bench-201 (Dong & Yang, ICLR 2020): one cell of 6 edges x 5 ops, CIFAR skeleton.

Cell: 4 nodes; node j sums ``op(node i)`` over its incoming edges i < j. Edge
order (the genotype and the string): 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. Ops:
``none`` (zero), ``skip_connect`` (identity), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU -> conv -> BN), ``avg_pool_3x3`` (stride 1, padding
not counted).

Skeleton (NAS-Bench-201's ``TinyNetwork``, CIFAR-10, input 32x32): stem conv
3x3 3->16 + BN; 5 cells at 16 channels; a residual reduction block 16->32
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, shortcut avgpool 2x2/2 + conv 1x1, add);
5 cells at 32; reduction 32->64; 5 cells at 64; BN + ReLU; global average
pool; fc 64->10. All 15 cells share the genotype.

Kernel decomposition: each conv edge is a ``relu`` kernel plus a ``conv2d``
(bn) kernel, a pool edge one ``avgpool`` kernel, ``skip_connect`` nothing, and
a node summing m non-``none`` inputs m-1 ``add`` kernels. ``none`` edges are
dropped (the reference code multiplies by zero and adds; a node whose inputs
are all ``none`` is a zero tensor, made and priced as one ``mul`` by zero).
Edges leaving such a zero node still compute, as in the reference network:
the HELP/HW-NAS-Bench measurements show them costing as much as live ones.
The final BN + ReLU is priced as a ``relu`` kernel (the catalog has no
standalone batch-norm). The exported ONNX model holds exactly these kernels.

Figures (FLOPs = 2 x MACs): all-``nor_conv_3x3`` cell 1,527,946 parameters and
441.6 MFLOPs (NAS-Bench-201 lists 1.53 MB and 220 M "FLOPs", which are MACs);
all-``none`` 73,066 parameters.

Export: ONNX only (the cells are a DAG, not a chain); TFLite raises BadInput.

Strings: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, the NAS-Bench-201 format used
by the HELP measurements (``tests/data/help/nasbench201_latency_ms.csv.xz``).
"""

from __future__ import annotations

import re
from functools import cached_property

import numpy as np

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.spaces.space import KernelVocabulary, SearchSpace, check_format

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from) in genotype order
NONE, SKIP, CONV1, CONV3, POOL = range(5)
STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, feature size)
CELLS_PER_STAGE = 5
RESOLUTION, CLASSES = 32, 10
_STR = re.compile(r"^\|([a-z0-9_]+)~0\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|([a-z0-9_]+)~2\|$")


def in_degrees(pop: np.ndarray) -> np.ndarray:
    """int (n, 3): number of non-``none`` inputs of nodes 1, 2, 3."""
    notnone = (np.asarray(pop) != NONE).astype(np.int64)
    return np.stack([notnone[:, 0], notnone[:, 1] + notnone[:, 2], notnone[:, 3:].sum(axis=1)], axis=1)


class NASBench201(SearchSpace):
    """The NAS-Bench-201 space (see the module docstring)."""

    name = "nasbench201"
    choices = tuple(OPS for _ in EDGES)

    # --------------------------------------------------------------- strings
    def to_string(self, g: np.ndarray) -> str:
        o = self.values(g)
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    def from_string(self, s: str) -> np.ndarray:
        m = _STR.match((s or "").strip())
        if not m:
            raise BadInput(
                f"nasbench201: malformed architecture {str(s)[:80]!r}: expected "
                "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops " + ", ".join(OPS)
            )
        return np.array([self.index_of(i, op, f"edge {i}") for i, op in enumerate(m.groups())], dtype=np.int16)

    # -------------------------------------------------------------- features
    def encode(self, pop: np.ndarray) -> np.ndarray:
        """One-hot of each edge's op (6 x 5) plus, per node, whether it is all zero (3)."""
        pop = self.check(pop).astype(np.int64)
        n = pop.shape[0]
        out = np.zeros((n, 33), dtype=np.float32)
        out[np.arange(n)[:, None], np.arange(6)[None, :] * 5 + pop] = 1.0
        out[:, 30:] = in_degrees(pop) == 0
        return out

    # --------------------------------------------------------------- kernels
    @cached_property
    def _tables(self) -> tuple[list[KernelSpec], np.ndarray, np.ndarray, list[np.ndarray]]:
        """Vocabulary; per stage LUT (edge, op) -> 2 slot ids; per stage (add id, mul id); fixed parts."""
        vocab = KernelVocabulary()
        vid = vocab.id

        edge_lut = np.full((len(STAGES), len(OPS), 2), -1, dtype=np.int32)
        add_ids = np.zeros(len(STAGES), dtype=np.int32)
        mul_ids = np.zeros(len(STAGES), dtype=np.int32)
        for s, (c, h) in enumerate(STAGES):
            relu = vid(KernelSpec("relu", h=h, w=h, cin=c))
            edge_lut[s, CONV1] = (relu, vid(KernelSpec("conv2d", h=h, w=h, cin=c, cout=c, kernel=1, bn=True)))
            edge_lut[s, CONV3] = (relu, vid(KernelSpec("conv2d", h=h, w=h, cin=c, cout=c, kernel=3, bn=True)))
            edge_lut[s, POOL, 0] = vid(KernelSpec("avgpool", h=h, w=h, cin=c, kernel=3, stride=1))
            add_ids[s] = vid(KernelSpec("add", h=h, w=h, cin=c))
            mul_ids[s] = vid(KernelSpec("mul", h=h, w=h, cin=c))
        fixed: list[np.ndarray] = [
            np.array([vid(KernelSpec("conv2d", h=32, w=32, cin=3, cout=16, kernel=3, bn=True))], dtype=np.int32)
        ]
        for (cin, h), (cout, ho) in zip(STAGES[:-1], STAGES[1:]):
            fixed.append(np.array([
                vid(KernelSpec("relu", h=h, w=h, cin=cin)),
                vid(KernelSpec("conv2d", h=h, w=h, cin=cin, cout=cout, kernel=3, stride=2, bn=True)),
                vid(KernelSpec("relu", h=ho, w=ho, cin=cout)),
                vid(KernelSpec("conv2d", h=ho, w=ho, cin=cout, cout=cout, kernel=3, bn=True)),
                vid(KernelSpec("avgpool", h=h, w=h, cin=cin, kernel=2, stride=2)),
                vid(KernelSpec("conv2d", h=ho, w=ho, cin=cin, cout=cout, kernel=1)),
                vid(KernelSpec("add", h=ho, w=ho, cin=cout)),
            ], dtype=np.int32))
        c, h = STAGES[-1]
        fixed.append(np.array([
            vid(KernelSpec("relu", h=h, w=h, cin=c)),
            vid(KernelSpec("global-avgpool", h=h, w=h, cin=c)),
            vid(KernelSpec("fc", h=1, w=1, cin=c, cout=CLASSES)),
        ], dtype=np.int32))
        return vocab.specs, edge_lut, np.stack([add_ids, mul_ids], axis=1), fixed

    def kernel_vocabulary(self) -> list[KernelSpec]:
        return self._tables[0]

    def _cell_ids(self, pop: np.ndarray, stage: int) -> np.ndarray:
        """(n, 16) kernel ids of one cell at ``stage``, in execution order."""
        _, edge_lut, addmul, _ = self._tables
        add, mul = int(addmul[stage, 0]), int(addmul[stage, 1])
        e = edge_lut[stage][pop]  # (n, 6, 2); none edges are already -1
        deg = in_degrees(pop)
        zero = np.where(deg == 0, mul, -1)  # (n, 3): a node with no input is a mul by 0
        node2 = np.where(deg[:, 1] == 2, add, zero[:, 1])[:, None]
        node3 = np.where(np.arange(2)[None, :] < (deg[:, 2] - 1)[:, None], add, -1)
        node3[:, 0] = np.where(deg[:, 2] == 0, mul, node3[:, 0])
        return np.concatenate(
            [e[:, 0], zero[:, :1], e[:, 1], e[:, 2], node2, e[:, 3], e[:, 4], e[:, 5], node3], axis=1
        )

    def kernel_ids(self, pop: np.ndarray) -> np.ndarray:
        pop = self.check(pop).astype(np.intp)
        n = pop.shape[0]
        _, _, _, fixed = self._tables
        parts = [np.broadcast_to(fixed[0], (n, fixed[0].size))]
        for s in range(len(STAGES)):
            parts.append(np.tile(self._cell_ids(pop, s), (1, CELLS_PER_STAGE)))
            parts.append(np.broadcast_to(fixed[s + 1], (n, fixed[s + 1].size)))
        return np.concatenate(parts, axis=1).astype(np.int32)

    # ---------------------------------------------------------------- export
    def export(self, g: np.ndarray, fmt: str, seed: int = 0) -> bytes:
        """ONNX graph of the full network; TFLite is not supported for this DAG space."""
        if check_format(fmt) != "onnx":
            raise BadInput("tflite export is not supported for the nasbench201 space (cells are a DAG); use .onnx")
        from edgelat.profiler.spaces.onnx_graph import OnnxGraph

        ops = [int(v) for v in self.check(g)[0]]
        gr = OnnxGraph(seed, name="nasbench201")
        x = gr.conv(gr.input(3, RESOLUTION, RESOLUTION), 3, 16, 3)
        for s, (c, h) in enumerate(STAGES):
            if s > 0:
                cin = STAGES[s - 1][0]
                a = gr.conv(gr.relu(x), cin, c, 3, stride=2)
                a = gr.conv(gr.relu(a), c, c, 3)
                b = gr.conv(gr.avgpool(x, 2, 2, 0), cin, c, 1)
                x = gr.add(b, a)
            for _ in range(CELLS_PER_STAGE):
                nodes = [x]
                for j in (1, 2, 3):
                    acc: str | None = None
                    for e, (to, frm) in enumerate(EDGES):
                        op = ops[e]
                        if to != j or op == NONE:
                            continue
                        src = nodes[frm]
                        if op == SKIP:
                            y = src
                        elif op == POOL:
                            y = gr.avgpool(src, 3, 1, 1)
                        else:
                            y = gr.conv(gr.relu(src), c, c, 1 if op == CONV1 else 3)
                        acc = y if acc is None else gr.add(acc, y)
                    nodes.append(acc if acc is not None else gr.zeros_like(x))
                x = nodes[3]
        return gr.finish(gr.gap_fc(gr.relu(x), STAGES[-1][0], CLASSES), [1, CLASSES])
