"""The search-space contract: what search, predictors and export agree on.

A genotype is a row of small integers, one per gene, each the *index* of the
chosen value in that gene's choice list (``space.choices[i]``). Indices rather
than values keep sampling, mutation and crossover generic and vectorised: a
population is just an ``(n, dim)`` integer array.

Every space decomposes an architecture into kernels of the operator catalog
(:class:`edgelat.profiler.ops.KernelSpec`). ``kernel_vocabulary()`` lists every
distinct kernel any architecture can contain (at every resolution) and
``kernel_ids(pop)`` maps a whole population to indices into it, one slot per
kernel position in execution order and ``-1`` for absent slots. A device's
table-based latency for a batch is then one gather and one sum::

    table = np.append(table_ms, 0.0)           # table_ms[i] measures vocabulary[i]
    latency = table[space.kernel_ids(pop)].sum(axis=1)

FLOPs, parameters and the activation-memory estimate are computed the same way
from the vocabulary's per-kernel figures, so they are exact sums of what the
kernels (and the exported model) contain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgelat.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.ops import KernelSpec

GENE_DTYPE = np.int16
FORMATS = ("onnx", "tflite")


class KernelVocabulary:
    """The distinct kernels of a space, each with a stable id (its index), interned by canonical key
    while a space builds its lookup tables."""

    def __init__(self) -> None:
        self.specs: list[KernelSpec] = []
        self._index: dict[str, int] = {}

    def id(self, spec: KernelSpec) -> int:
        """The id of ``spec``, adding it the first time it is seen."""
        key = spec.key
        if key not in self._index:
            self._index[key] = len(self.specs)
            self.specs.append(spec)
        return self._index[key]


class SearchSpace(ABC):
    """A family of architectures with a fixed-length integer genotype.

    Subclasses set ``name`` and ``choices`` (one tuple of allowed values per gene)
    and implement strings, encoding and the kernel decomposition; sampling,
    mutation, crossover, FLOPs, params, memory and chain-shaped export come from
    here.
    """

    name: str = ""
    choices: tuple[tuple[Any, ...], ...] = ()

    # ----------------------------------------------------------------- genes
    @property
    def dim(self) -> int:
        """Genotype length."""
        return len(self.choices)

    @cached_property
    def cardinalities(self) -> np.ndarray:
        """Number of choices of each gene, shape ``(dim,)``."""
        return np.array([len(c) for c in self.choices], dtype=np.int64)

    @cached_property
    def _cards16(self) -> np.ndarray:
        return self.cardinalities.astype(np.uint16)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniformly random genotypes, shape ``(n, dim)``."""
        return (rng.random((int(n), self.dim)) * self.cardinalities).astype(GENE_DTYPE)

    def mutate(self, rng: np.random.Generator, pop: np.ndarray, prob: float) -> np.ndarray:
        """A copy of ``pop`` where each gene is resampled with probability ``prob``
        (OFA's mutation: a resampled gene may draw its old value again)."""
        pop = self.check(pop)
        u = rng.random(pop.shape)
        mask = u < prob
        # given u < prob, u / prob is uniform on [0, 1): one draw decides both
        fresh = np.minimum(u * (self.cardinalities / max(prob, 1e-12)), self.cardinalities - 1)
        return np.where(mask, fresh.astype(GENE_DTYPE), pop)

    def crossover(self, rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Uniform crossover: each gene from ``a`` or ``b`` with equal chance (row-wise pairs)."""
        a, b = self.check(a), self.check(b)
        if a.shape != b.shape:
            raise ValueError(f"crossover parents differ in shape: {a.shape} vs {b.shape}")
        return np.where(rng.random(a.shape) < 0.5, a, b)

    def check(self, pop: np.ndarray) -> np.ndarray:
        """``pop`` as an ``(n, dim)`` int16 genotype array; BadInput when out of range."""
        arr = np.asarray(pop)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise BadInput(f"{self.name}: a genotype has {self.dim} genes, got shape {np.shape(pop)}")
        if arr.dtype != GENE_DTYPE:
            if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(GENE_DTYPE).max):
                raise BadInput(f"{self.name}: genotype gene index out of range")
            arr = arr.astype(GENE_DTYPE)
        # negatives wrap to large values as uint16: one comparison checks both ends
        if (arr.view(np.uint16) >= self._cards16).any():
            raise BadInput(f"{self.name}: genotype gene index out of range")
        return arr

    def canonical(self, pop: np.ndarray) -> np.ndarray:
        """One genotype per network: genes that change nothing in the built network (a block
        the depth switches off) set to their first choice. Identity unless a space overrides it."""
        return self.check(pop)

    def values(self, g: np.ndarray) -> list[Any]:
        """The chosen values of one genotype (gene indices mapped through ``choices``)."""
        g = self.check(g)[0]
        return [self.choices[i][int(v)] for i, v in enumerate(g)]

    def index_of(self, gene: int, value: Any, what: str) -> int:
        """The index of ``value`` in gene ``gene``'s choices, or BadInput naming ``what``."""
        try:
            return self.choices[gene].index(value)
        except ValueError:
            allowed = ", ".join(str(c) for c in self.choices[gene])
            raise BadInput(f"{self.name}: {what} = {value!r} is not allowed (choose from {allowed})") from None

    # --------------------------------------------------------------- strings
    @abstractmethod
    def to_string(self, g: np.ndarray) -> str:
        """The architecture string (the HELP measurements' format where they cover the space)."""

    @abstractmethod
    def from_string(self, s: str) -> np.ndarray:
        """Parse an architecture string into a genotype of shape ``(dim,)``; BadInput if malformed."""

    def to_strings(self, pop: np.ndarray) -> list[str]:
        return [self.to_string(g) for g in self.check(pop)]

    def from_strings(self, strings: Sequence[str]) -> np.ndarray:
        if not strings:
            return np.zeros((0, self.dim), dtype=GENE_DTYPE)
        return np.stack([self.from_string(s) for s in strings]).astype(GENE_DTYPE)

    # -------------------------------------------------------------- features
    @abstractmethod
    def encode(self, pop: np.ndarray) -> np.ndarray:
        """float32 ``(n, F)`` features for architecture-level predictors."""

    # --------------------------------------------------------------- kernels
    @abstractmethod
    def kernel_vocabulary(self) -> list["KernelSpec"]:
        """Every distinct kernel any architecture of the space can contain (cached by subclasses)."""

    @abstractmethod
    def kernel_ids(self, pop: np.ndarray) -> np.ndarray:
        """int32 ``(n, max_slots)`` indices into :meth:`kernel_vocabulary`, ``-1`` where absent."""

    def kernels(self, g: np.ndarray) -> list["KernelSpec"]:
        """The architecture's kernels in execution order."""
        vocab = self.kernel_vocabulary()
        return [vocab[i] for i in self.kernel_ids(self.check(g)[:1])[0] if i >= 0]

    @cached_property
    def _vocab_figures(self) -> dict[str, np.ndarray]:
        """Per-kernel FLOPs, params and activation bytes, each with a trailing 0 for slot -1."""
        vocab = self.kernel_vocabulary()
        flops = np.array([k.flops() for k in vocab] + [0], dtype=np.float64)
        params = np.array([k.params() for k in vocab] + [0], dtype=np.float64)
        act = []
        for k in vocab:
            elems = sum(int(np.prod(s)) for s in k.input_shapes()) + int(np.prod(k.output_shape()))
            act.append(4 * elems)
        return {"flops": flops, "params": params, "act_bytes": np.array(act + [0], dtype=np.float64)}

    def gather(self, table: np.ndarray, pop: np.ndarray) -> np.ndarray:
        """Sum a per-vocabulary-kernel figure over each architecture's kernels.

        ``table`` has one value per vocabulary kernel (a trailing 0 is appended
        here when missing). This is the table-based latency of a batch.
        """
        table = np.asarray(table, dtype=np.float64)
        n_vocab = len(self.kernel_vocabulary())
        if table.shape[0] == n_vocab:
            table = np.append(table, 0.0)
        elif table.shape[0] != n_vocab + 1:
            raise ValueError(f"table has {table.shape[0]} values, the vocabulary {n_vocab}")
        return table[self.kernel_ids(pop)].sum(axis=1)

    def figures(self, pop: np.ndarray) -> dict[str, np.ndarray]:
        """FLOPs, params and the memory estimate of each architecture, from one
        :meth:`kernel_ids` call (what search needs every generation)."""
        ids = self.kernel_ids(pop)
        fig = self._vocab_figures
        params = fig["params"][ids].sum(axis=1)
        return {
            "flops": fig["flops"][ids].sum(axis=1),
            "params": params,
            "memory_bytes": 4 * params + fig["act_bytes"][ids].max(axis=1),
        }

    def flops(self, pop: np.ndarray) -> np.ndarray:
        """FLOPs of each architecture (sum of its kernels' ``KernelSpec.flops()``:
        2 x multiply-accumulates for convs and fc, see :mod:`edgelat.profiler.ops`)."""
        return self.gather(self._vocab_figures["flops"], pop)

    def params(self, pop: np.ndarray) -> np.ndarray:
        """Parameters (weights + biases, batch-norm folded) of each architecture."""
        return self.gather(self._vocab_figures["params"], pop)

    def memory(self, pop: np.ndarray) -> np.ndarray:
        """Estimated inference memory in bytes (fp32): all weights plus the largest
        single kernel's input+output activations. An estimate from shapes, not a
        measurement; outputs label it as such."""
        return self.figures(pop)["memory_bytes"]

    # ---------------------------------------------------------------- export
    def export(self, g: np.ndarray, fmt: str, seed: int = 0) -> bytes:
        """The architecture as an ONNX or TFLite model with random weights.

        Chain-shaped spaces reuse the profiler's builders on :meth:`kernels`, so
        the exported model holds exactly the kernels the table prices.
        """
        fmt = check_format(fmt)
        from edgelat.profiler.builders import build_model

        return build_model(self.kernels(g), fmt, seed)


def check_format(fmt: str) -> str:
    """``fmt`` normalised to "onnx" or "tflite"; BadInput otherwise."""
    f = (fmt or "").lower().lstrip(".")
    if f not in FORMATS:
        raise BadInput(f"unknown model format {fmt!r} (use onnx or tflite)")
    return f


def format_for_path(path: str) -> str:
    """The model format implied by a file name (``.onnx`` / ``.tflite``)."""
    lower = str(path).lower()
    for fmt in FORMATS:
        if lower.endswith("." + fmt):
            return fmt
    raise BadInput(f"cannot tell the model format of {path!r}: name it *.onnx or *.tflite")
