"""Layout conversions a kernel's alone price holds and its place in a whole model does not.

onnxruntime's CPU provider on x86 runs convolutions and pools in a blocked channel layout
(NCHWc) and converts to and from it (``ReorderInput`` / ``ReorderOutput`` nodes) where a run of
such ops meets anything else: the model's input and output, a view, an op without a blocked
kernel (a broadcast ``Mul`` of a squeeze-excite gate, a ``Transpose``, a ``ReduceMean``). A kernel
timed alone pays a conversion on each side; inside a model two blocked ops side by side pay none.
A network of small convs and pools on large maps (SqueezeNet's fire modules) pays in its
kernels' prices for many conversions its whole run never makes.

:func:`saved_conversions` finds, per item of a model, the conversions its alone price holds
that the model does not make; :class:`LayoutCost` is the device's price of one (measured by
:mod:`edgelat.predictors.layout_probe`); :func:`in_model_prices` takes them off. The rules
follow onnxruntime's optimized graphs of the exported real models (``tests/test_layout.py``
compares them); other runtimes (LiteRT keeps one layout throughout) convert nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgelat.profiler.ops import KernelSpec
from edgelat.values import RuntimeConfig

BLOCK = 16  # channels per block on the machine these rules were read on (AVX-512; 8 with AVX2)
BLOCKED_OPS = frozenset({"conv2d", "dwconv2d", "mbconv", "maxpool", "avgpool"})
# ops that run in whichever layout their inputs arrive in (a residual add, a channel concat, an
# activation the runtime folds into the conv before it)
PASSING_OPS = frozenset({"add", "concat", "relu", "relu6"})
# activations a blocked conv applies in place; after any other (swish, hard swish) the output
# leaves the blocked layout
KEPT_ACTS = frozenset({"none", "relu", "relu6"})
# a conv with fewer input channels than one block reads the plain layout itself: alone it
# converts only its output (seen with 3 to 12 channels on `local`), and in a model the op
# before it converts its output back (MNASNet's 8-channel projection)
MIN_CONVERTED_CIN = BLOCK
RUNTIMES = frozenset({"onnxruntime", "ort-perf-test"})
MIN_SHARE = 0.2  # an item keeps at least this share of its alone price


def converts(config: RuntimeConfig) -> bool:
    """Whether ``config`` runs a blocked layout that a kernel alone converts to and from."""
    return config.runtime in RUNTIMES and config.provider == "cpu"


def chain_links(n: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Links of ``n`` kernels run as one chain (how the builder lowers a kernel list; a
    shortcut's source is a blocked op of the chain as well, so it is left out)."""
    return [((i - 1 if i else -1,), (i + 1 if i < n - 1 else -1,)) for i in range(n)]


@dataclass(frozen=True)
class _Role:
    kind: str  # "blocked", "passing" or "" (runs in the plain layout)
    keeps: bool = True  # a blocked item's output stays blocked (no activation that leaves it)
    cin: int = 0
    in_elements: float = 0.0
    out_elements: float = 0.0


def _role(item: Any) -> _Role:
    if isinstance(item, KernelSpec):
        if item.op in BLOCKED_OPS:
            _, ho, wo, co = item.output_shape()
            return _Role("blocked", item.op == "mbconv" or item.act in KEPT_ACTS, item.cin,
                         float(item.h * item.w * item.cin), float(ho * wo * co))
        if item.op in PASSING_OPS:
            return _Role("passing", out_elements=float(np.prod(item.output_shape())))
        return _Role("")
    op = getattr(item, "op_type", "")
    if op in ("Concat", "BatchNormalization", "Relu", "Add", "Sum"):
        out = getattr(item, "output_shapes", [])
        return _Role("passing", out_elements=float(np.prod(out[0])) if out else 0.0)
    shapes_in, shapes_out = getattr(item, "input_shapes", []), getattr(item, "output_shapes", [])
    if op in ("Conv", "MaxPool", "AveragePool") and shapes_in and len(shapes_in[0]) == 4 and shapes_out and len(shapes_out[0]) == 4:
        cin = int(shapes_in[0][3])
        attrs = dict(item.signature.get("attrs", ())) if isinstance(getattr(item, "signature", None), dict) else {}
        group = int(attrs.get("group", 1))
        if group > 1 and group != cin and (cin // group) % BLOCK:
            return _Role("")  # narrow groups: the runtime keeps the plain layout (ResNeXt's first stages)
        return _Role("blocked", True, cin, float(np.prod(shapes_in[0])), float(np.prod(shapes_out[0])))
    return _Role("")


def alone_conversions(items: Sequence[Any]) -> list[int]:
    """Per item, the conversions it makes timed alone (0 to 2)."""
    return [(r.cin >= MIN_CONVERTED_CIN) + 1 if r.kind == "blocked" else 0 for r in map(_role, items)]


def saved_conversions(items: Sequence[Any], links: Sequence[tuple[Sequence[int], Sequence[int]]] | None
                      ) -> list[tuple[int, float]]:
    """Per item, (conversions, elements converted) its alone price holds and the model does
    not make; negative for an op that runs in either layout where a blocked run ends after
    it (the model converts there, the ops alone did not). ``links``: per item, producer and consumer indices (negative: a model edge or a
    view), as :attr:`edgelat.predictors.graph.Split.links`; None or empty: a chain."""
    n = len(items)
    links = links or chain_links(n)
    if len(links) != n:
        raise ValueError(f"{n} items but {len(links)} links")
    roles = [_role(it) for it in items]
    out_blocked = [False] * n
    for i, r in enumerate(roles):  # items come in execution order: producers first
        prods = links[i][0]
        if r.kind == "blocked":
            out_blocked[i] = r.keeps
        elif r.kind == "passing":
            out_blocked[i] = bool(prods) and all(p >= 0 and out_blocked[p] for p in prods)
    reads_blocked = [(r.kind == "blocked" and r.cin >= MIN_CONVERTED_CIN) or (r.kind == "passing" and out_blocked[i])
                     for i, r in enumerate(roles)]
    saved = []
    for i, r in enumerate(roles):
        count, elements = 0, 0.0
        if r.kind == "blocked":
            prods, cons = links[i]
            if r.cin >= MIN_CONVERTED_CIN and prods and all(p >= 0 and out_blocked[p] for p in prods):
                count, elements = 1, r.in_elements
            if out_blocked[i] and cons and all(c >= 0 and reads_blocked[c] for c in cons):
                count, elements = count + 1, elements + r.out_elements
        elif r.kind == "passing" and out_blocked[i]:
            cons = links[i][1]
            if not (cons and all(c >= 0 and reads_blocked[c] for c in cons)):
                # a blocked run ends here: the model converts this output back, which no kernel
                # paid alone (the conv before it saved its own conversion by passing it on)
                count, elements = -1, -r.out_elements
        saved.append((count, elements))
    return saved


@dataclass(frozen=True)
class LayoutCost:
    """The device's price of converting one element between the layouts (ms), measured by
    :mod:`edgelat.predictors.layout_probe`. What a conversion costs regardless of its size is
    left to the calibration's per-kernel term, which already holds a kernel's fixed costs alone."""

    per_element_ms: float

    def saved_ms(self, conversions: Sequence[tuple[int, float]]) -> np.ndarray:
        return np.asarray([e for _, e in conversions], dtype=np.float64) * self.per_element_ms

    def to_dict(self) -> dict[str, float]:
        return {"per_element_ms": self.per_element_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "LayoutCost | None":
        return None if not d else cls(float(d["per_element_ms"]))


def in_model_prices(items: Sequence[Any], links: Sequence[tuple[Sequence[int], Sequence[int]]] | None,
                    ms: Sequence[float], cost: LayoutCost | None) -> list[float]:
    """Each item's alone price less the conversions it does not make inside the model (at
    least :data:`MIN_SHARE` of it); unchanged without a cost. ``links`` None: a chain."""
    if cost is None or not len(items):
        return [float(m) for m in ms]
    saved = cost.saved_ms(saved_conversions(items, links))
    m = np.asarray(ms, dtype=np.float64)
    return [float(v) for v in np.maximum(m - saved, MIN_SHARE * m)]


class ChainLayout:
    """:func:`in_model_prices` for batches of chains over one kernel vocabulary (what search
    prices): ``ids`` ``(n, slots)`` index the vocabulary in execution order, -1 where absent."""

    def __init__(self, vocab: Sequence[Any], cost: LayoutCost) -> None:
        roles = [_role(k) for k in vocab] + [_Role("")]  # slot -1: absent
        self.blocked = np.array([r.kind == "blocked" for r in roles])
        self.passing = np.array([r.kind == "passing" for r in roles])
        self.keeps = np.array([r.keeps for r in roles])
        self.cin_ok = np.array([r.cin >= MIN_CONVERTED_CIN for r in roles])
        self.in_ms = np.array([r.in_elements for r in roles]) * cost.per_element_ms
        self.out_ms = np.array([r.out_elements for r in roles]) * cost.per_element_ms

    def prices(self, ids: np.ndarray, table_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kernel ids with the absent slots moved last, their in-model prices), both ``(n, slots)``;
        ``table_ms`` prices the vocabulary with a trailing 0 for slot -1."""
        ids = np.asarray(ids)
        c = np.take_along_axis(ids, np.argsort(ids < 0, axis=1, kind="stable"), axis=1)
        present = c >= 0
        out_blocked = np.zeros(c.shape, dtype=bool)
        prev = np.zeros(c.shape[0], dtype=bool)  # the first kernel reads the model's input
        for j in range(c.shape[1]):
            k = c[:, j]
            prev = present[:, j] & np.where(self.blocked[k], self.keeps[k], self.passing[k] & prev)
            out_blocked[:, j] = prev
        reads = (self.blocked[c] & self.cin_ok[c]) | (self.passing[c] & out_blocked)
        link = present[:, :-1] & present[:, 1:]
        saved = np.zeros(c.shape)
        nxt, cur = c[:, 1:], c[:, :-1]
        saved[:, 1:] += (link & out_blocked[:, :-1] & self.blocked[nxt] & self.cin_ok[nxt]) * self.in_ms[nxt]
        saved[:, :-1] += (link & out_blocked[:, :-1] & self.blocked[cur] & reads[:, 1:]) * self.out_ms[cur]
        read_next = np.concatenate([link & reads[:, 1:], np.zeros((c.shape[0], 1), dtype=bool)], axis=1)
        saved -= (self.passing[c] & out_blocked & ~read_next) * self.out_ms[c]
        price = np.take(table_ms, c)
        return c, np.maximum(price - saved, MIN_SHARE * price)  # as in_model_prices
