"""Stage-based MobileNet spaces (OFA-MBv3, ProxylessNAS, YAML spaces) in one class.

A :class:`MobileStageSpace` is a stem conv, an optional fixed first block, a
list of stages of inverted-residual (``mbconv``) blocks and a head. Each stage
chooses a depth, optionally a width, and each block position a kernel size and
an expand ratio; the whole network chooses an input resolution.

Genotype layout (gene indices, see :mod:`edgelat.profiler.spaces.space`)::

    ks[B]  e[B]  d[S]  (w[S] when any stage has several widths)  r

``B`` is the sum of the stages' largest depths. Blocks past a stage's depth are
inactive: their ``ks``/``e`` genes stay in the genotype (so strings match the
OFA dataset format) but contribute no kernel.

Strings are JSON objects, ``{"ks": [...], "e": [...], "d": [...], "r": 224}`` (plus
``"w": [...]`` for spaces with width choices), so ``json.loads`` reads an architecture a
command printed; the OFA dataset's Python dict literals (``{'ks': ...}``) are read too.

Kernel decomposition: stem ``conv2d`` (bn + act), each block one ``mbconv``
kernel (expand 1x1 + depthwise kxk + optional SE + project 1x1, residual add
when stride 1 and cin == cout), then the head layers (``conv2d`` 1x1 with bn,
``global-avgpool``, ``fc``). This is the granularity of the ``mobilenet``
preset, so ``edgelat profile ops --preset mobilenet`` fills the table that prices
these spaces at 224.
"""

from __future__ import annotations

import ast
import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.spaces.space import KernelVocabulary, SearchSpace


def _num(x: Any) -> int | float:
    """An int when integral (so strings print ``3`` not ``3.0``), else a float."""
    f = float(x)
    return int(f) if f.is_integer() else f


def _value(x: Any) -> int | float | None:
    """A number from an architecture string as :func:`_num` gives it; None when it is not a
    number (bools, strings) or too large for a float (``10**400``)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        return _num(x)
    except OverflowError:
        return None


def same_out(h: int, stride: int) -> int:
    """Output size of a "same"-padded conv/pool (``ceil(h / stride)``), as in OFA."""
    return -(-h // stride)


@dataclass(frozen=True)
class Stage:
    """One stage: blocks share width, activation and SE; the first block strides."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int | float, ...]
    stride: int = 1
    se: bool = False
    act: str = "relu"

    @property
    def max_depth(self) -> int:
        return max(self.depths)


@dataclass(frozen=True)
class HeadLayer:
    """A layer after the last stage: ``conv`` (1x1 + bn), ``gap`` or ``fc``."""

    op: str
    cout: int = 0
    act: str = "none"


class MobileStageSpace(SearchSpace):
    """A stage-based inverted-residual space; see the module docstring."""

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        resolutions: Sequence[int],
        stem_width: int,
        stem_act: str,
        head: Sequence[HeadLayer],
        first_block: tuple[int, str] | None = None,
        in_channels: int = 3,
        stem_stride: int = 2,
    ) -> None:
        if not stages:
            raise BadInput(f"space {name!r} has no stages")
        self.name = name
        self.stages = tuple(stages)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.stem_width = int(stem_width)
        self.stem_act = stem_act
        self.stem_stride = int(stem_stride)
        self.head = tuple(head)
        self.first_block = first_block
        self.in_channels = int(in_channels)
        self.has_width = any(len(s.widths) > 1 for s in self.stages)

        # block b belongs to stage blk_stage[b] at position blk_pos[b]
        self.blk_stage = np.array([s for s, st in enumerate(self.stages) for _ in range(st.max_depth)], dtype=np.int64)
        self.blk_pos = np.array([p for st in self.stages for p in range(st.max_depth)], dtype=np.int64)
        nb, ns = len(self.blk_stage), len(self.stages)
        self.n_blocks = nb
        choices: list[tuple[Any, ...]] = []
        choices += [tuple(self.stages[s].kernels) for s in self.blk_stage]
        choices += [tuple(_num(e) for e in self.stages[s].expands) for s in self.blk_stage]
        choices += [tuple(st.depths) for st in self.stages]
        if self.has_width:
            choices += [tuple(st.widths) for st in self.stages]
        choices.append(self.resolutions)
        self.choices = tuple(choices)
        self.ks_genes = np.arange(0, nb)
        self.e_genes = np.arange(nb, 2 * nb)
        self.d_genes = np.arange(2 * nb, 2 * nb + ns)
        self.w_genes = np.arange(2 * nb + ns, 2 * nb + 2 * ns) if self.has_width else None
        self.r_gene = len(choices) - 1

    # --------------------------------------------------------------- strings
    def decode(self, g: np.ndarray) -> dict[str, Any]:
        """The genotype as the dict of values the string format prints."""
        v = self.values(g)
        nb, ns = self.n_blocks, len(self.stages)
        out: dict[str, Any] = {"ks": v[:nb], "e": v[nb : 2 * nb], "d": v[2 * nb : 2 * nb + ns]}
        if self.has_width:
            out["w"] = v[2 * nb + ns : 2 * nb + 2 * ns]
        out["r"] = v[-1]
        return out

    def to_string(self, g: np.ndarray) -> str:
        return json.dumps(self.decode(g))

    def from_string(self, s: str) -> np.ndarray:
        text = (s or "").strip()
        try:
            with warnings.catch_warnings():  # "1e" would print a SyntaxWarning before the one-line error
                warnings.simplefilter("ignore")
                d = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[]: 1}
            raise BadInput(
                f"{self.name}: malformed architecture {text[:60]!r}: expected a dict like "
                f"{{'ks': [...], 'e': [...], 'd': [...], 'r': ...}}"
            ) from None
        if not isinstance(d, dict):
            raise BadInput(f"{self.name}: an architecture is a dict with keys ks, e, d, r; got {type(d).__name__}")
        expected = {"ks", "e", "d", "r"} | ({"w"} if self.has_width else set())
        if "r" not in d and len(self.resolutions) == 1:
            d = {**d, "r": self.resolutions[0]}
        if set(d) != expected:
            got = sorted(repr(k) for k in d)  # keys may be of mixed types: {1: 2, 'ks': 3}
            raise BadInput(f"{self.name}: architecture keys must be {sorted(expected)}, got [{', '.join(got)}]")
        nb, ns = self.n_blocks, len(self.stages)
        lengths = {"ks": nb, "e": nb, "d": ns, "w": ns}
        genes: list[int] = []
        for key in ("ks", "e", "d", "w"):
            if key not in expected:
                continue
            vals = d[key]
            if not isinstance(vals, (list, tuple)) or len(vals) != lengths[key]:
                raise BadInput(f"{self.name}: '{key}' must be a list of {lengths[key]} values")
            base = {"ks": self.ks_genes, "e": self.e_genes, "d": self.d_genes, "w": self.w_genes}[key]
            for i, val in enumerate(vals):
                num = _value(val)
                if num is None:
                    raise BadInput(f"{self.name}: {key}[{i}] = {str(val)[:40]!r} is not a usable number")
                genes.append(self.index_of(int(base[i]), num, f"{key}[{i}]"))
        r = _value(d["r"])
        if r is None:
            raise BadInput(f"{self.name}: r = {str(d['r'])[:40]!r} is not a usable number")
        genes.append(self.index_of(self.r_gene, r, "r"))
        return np.array(genes, dtype=np.int16)

    # --------------------------------------------------------- helper arrays
    @cached_property
    def _depth_table(self) -> np.ndarray:
        """(S+1, Dmax) depth values by stage and gene index; row S is "always active"."""
        ns = len(self.stages)
        dmax = max(len(st.depths) for st in self.stages)
        tab = np.full((ns + 1, dmax), 10**6, dtype=np.int64)
        for s, st in enumerate(self.stages):
            tab[s, : len(st.depths)] = st.depths
        return tab

    def active_blocks(self, pop: np.ndarray) -> np.ndarray:
        """bool (n, B): which block positions each architecture uses."""
        pop = self.check(pop).astype(np.int64)
        dvals = self._depth_table[self.blk_stage[None, :], pop[:, self.d_genes][:, self.blk_stage]]
        return self.blk_pos[None, :] < dvals

    def canonical(self, pop: np.ndarray) -> np.ndarray:
        """Kernel size and expand genes of blocks past their stage's depth set to index 0."""
        pop = self.check(pop).copy()
        off = ~self.active_blocks(pop)
        pop[:, self.ks_genes] = np.where(off, 0, pop[:, self.ks_genes])
        pop[:, self.e_genes] = np.where(off, 0, pop[:, self.e_genes])
        return pop

    # --------------------------------------------------------------- kernels
    def _width(self, s: int, wi: int) -> int:
        st = self.stages[s]
        return st.widths[wi] if wi < len(st.widths) else -1

    def _stage_input(self) -> int:
        return self.first_block[0] if self.first_block else self.stem_width

    def _sizes(self, r: int) -> list[int]:
        """Input size (h) of each stage at resolution ``r``."""
        h = same_out(r, self.stem_stride)
        sizes = []
        for st in self.stages:
            sizes.append(h)
            h = same_out(h, st.stride)
        return sizes + [h]

    def _head_specs(self, h: int, cin: int) -> list[KernelSpec]:
        specs: list[KernelSpec] = []
        c = cin
        for layer in self.head:
            if layer.op == "conv":
                specs.append(KernelSpec("conv2d", h=h, w=h, cin=c, cout=layer.cout, kernel=1, stride=1, act=layer.act, bn=True))
                c = layer.cout
            elif layer.op == "gap":
                specs.append(KernelSpec("global-avgpool", h=h, w=h, cin=c))
                h = 1
            elif layer.op == "fc":
                specs.append(KernelSpec("fc", h=1, w=1, cin=c, cout=layer.cout, act=layer.act))
                c = layer.cout
            else:  # validated by the YAML loader; built-ins are fixed
                raise BadInput(f"{self.name}: unknown head layer {layer.op!r}")
        return specs

    @cached_property
    def _tables(self) -> tuple[list[KernelSpec], np.ndarray, np.ndarray]:
        """The vocabulary, the LUT (slot, r, win, wout, k, e) -> id, and per-slot gene columns."""
        vocab = KernelVocabulary()
        vid = vocab.id

        ns = len(self.stages)
        wmax = max(len(st.widths) for st in self.stages)
        kmax = max(len(st.kernels) for st in self.stages)
        emax = max(len(st.expands) for st in self.stages)
        n_pre = 1 + (1 if self.first_block else 0)
        n_slots = n_pre + self.n_blocks + len(self.head)
        lut = np.full((n_slots, len(self.resolutions), wmax, wmax, kmax, emax), -1, dtype=np.int32)
        zero = self.dim  # index of the all-zero column appended to the population
        # columns per slot: r, win, wout, k, e, depth gene ; plus stage/pos for activity
        cols = np.full((n_slots, 6), zero, dtype=np.int64)
        cols[:, 0] = self.r_gene
        w_gene = (lambda s: int(self.w_genes[s])) if self.has_width else (lambda s: zero)
        for ri, r in enumerate(self.resolutions):
            sizes = self._sizes(r)
            h0 = same_out(r, self.stem_stride)
            lut[0, ri] = vid(
                KernelSpec("conv2d", h=r, w=r, cin=self.in_channels, cout=self.stem_width, kernel=3,
                           stride=self.stem_stride, act=self.stem_act, bn=True)
            )
            if self.first_block:
                fw, fact = self.first_block
                lut[1, ri] = vid(
                    KernelSpec("mbconv", h=h0, w=h0, cin=self.stem_width, cout=fw, kernel=3, stride=1,
                               expand=1.0, act=fact)
                )
            slot = n_pre
            for s, st in enumerate(self.stages):
                prev_widths = self.stages[s - 1].widths if s > 0 else (self._stage_input(),)
                for p in range(st.max_depth):
                    for wi, wout in enumerate(st.widths):
                        for pi, win in enumerate(prev_widths):
                            cin, stride, h = (win, st.stride, sizes[s]) if p == 0 else (wout, 1, same_out(sizes[s], st.stride))
                            for ki, k in enumerate(st.kernels):
                                for ei, e in enumerate(st.expands):
                                    lut[slot + p, ri, pi, wi, ki, ei] = vid(
                                        KernelSpec("mbconv", h=h, w=h, cin=cin, cout=wout, kernel=int(k),
                                                   stride=stride, expand=float(e), se=st.se, act=st.act)
                                    )
                slot += st.max_depth
            for wi, wlast in enumerate(self.stages[-1].widths):
                for j, spec in enumerate(self._head_specs(sizes[-1], wlast)):
                    lut[slot + j, ri, wi] = vid(spec)
        slot = n_pre
        for b in range(self.n_blocks):
            s = int(self.blk_stage[b])
            cols[slot + b, 1] = w_gene(s - 1) if s > 0 else zero
            cols[slot + b, 2] = w_gene(s)
            cols[slot + b, 3] = self.ks_genes[b]
            cols[slot + b, 4] = self.e_genes[b]
            cols[slot + b, 5] = self.d_genes[s]
        cols[n_pre + self.n_blocks :, 1] = w_gene(ns - 1)
        return vocab.specs, lut, cols

    @cached_property
    def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The LUT with depth folded in, flattened, and the linear map genotype -> flat index.

        ``flat_index = pop @ weights + offsets`` (one small BLAS matmul), then
        one gather: the whole population's kernel ids in two numpy calls.
        """
        _, lut, cols = self._tables
        n_pre = 1 + (1 if self.first_block else 0)
        n_slots = lut.shape[0]
        stage = np.full(n_slots, len(self.stages), dtype=np.int64)
        pos = np.full(n_slots, -1, dtype=np.int64)
        stage[n_pre : n_pre + self.n_blocks] = self.blk_stage
        pos[n_pre : n_pre + self.n_blocks] = self.blk_pos
        dtab = self._depth_table
        active = pos[:, None] < dtab[stage]  # (slots, Dmax)
        full = np.where(active[:, None, None, None, None, None, :], lut[..., None], -1).astype(np.int32)
        strides = np.array(full.strides[1:], dtype=np.int64) // full.itemsize  # r, win, wout, k, e, d
        weights = np.zeros((self.dim + 1, n_slots), dtype=np.float64)
        for slot in range(n_slots):
            for j in range(6):
                weights[cols[slot, j], slot] += strides[j]
        weights = weights[: self.dim]  # the appended zero column contributes nothing
        offsets = np.arange(n_slots, dtype=np.float64) * (full.strides[0] // full.itemsize)
        return np.append(full.ravel(), -1).astype(np.int32), weights, offsets

    def kernel_vocabulary(self) -> list[KernelSpec]:
        return self._tables[0]

    def kernel_ids(self, pop: np.ndarray) -> np.ndarray:
        pop = self.check(pop)
        flat, weights, offsets = self._flat
        idx = pop.astype(np.float64) @ weights + offsets
        return flat[idx.astype(np.intp)]

    # -------------------------------------------------------------- features
    @cached_property
    def _encoding(self) -> tuple[np.ndarray, int]:
        """Column offset of each gene's one-hot block, and the feature count."""
        offsets = np.concatenate([[0], np.cumsum(self.cardinalities)[:-1]])
        return offsets.astype(np.int64), int(self.cardinalities.sum()) + 1

    def encode(self, pop: np.ndarray) -> np.ndarray:
        """One-hot of every gene (ks/e one-hots zeroed for inactive blocks) plus
        the resolution scaled to (0, 1]."""
        pop = self.check(pop).astype(np.int64)
        offsets, n_feat = self._encoding
        n = pop.shape[0]
        out = np.zeros((n, n_feat), dtype=np.float32)
        vals = np.ones(pop.shape, dtype=np.float32)
        act = self.active_blocks(pop).astype(np.float32)
        vals[:, self.ks_genes] = act
        vals[:, self.e_genes] = act
        out[np.arange(n)[:, None], offsets[None, :] + pop] = vals
        res = np.asarray(self.resolutions, dtype=np.float32)
        out[:, -1] = res[pop[:, self.r_gene]] / res.max()
        return out
