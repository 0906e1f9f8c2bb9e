"""Batch latency of search-space architectures on a device: what search calls.

:func:`latency_model` picks the best source the device has for the space and
returns a :class:`LatencyModel` whose ``predict(pop)`` answers a whole
population at once:

1. ``"arch-predictor"``: an architecture-level predictor fitted for this
   (space, device, config) with ``edgelat predictor fit``;
2. ``"table"``: the device's kernel table priced per architecture, one gather
   and one sum (``table_ms[space.kernel_ids(pop)]``), mapped to whole-model
   latency by the device's calibration when ``predictor build`` fitted one (the
   map ``edgelat predict`` applies to a model file); kernels the table lacks
   are filled by the device's kernel-level predictor when one is fitted
   (listed in ``missing``), never by a zero;
3. ``"imported"``: exact imported measurements, for spaces small enough to be
   measured whole (NAS-Bench-201); an architecture that was never measured is
   an error, not a guess.

Otherwise :class:`~edgelat.errors.BadInput` says what is missing and what to run. Whatever the
source, architectures the device has measured (imported or profiled) answer with their
measurement (kind ``measured+<source>``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import sqlite_utils

from edgelat.errors import BadInput
from edgelat.lut.archs_store import measured_archs
from edgelat.predictors.arch import config_key_for, load_predictor
from edgelat.predictors.ridge import LinearLogModel, single_blas_thread

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.spaces.space import SearchSpace
    from edgelat.values import RuntimeConfig

CHUNK = 8192  # rows per block: keeps the gathers in cache (faster than one big block)
DENSE_LIMIT = 4_000_000  # spaces with at most this many architectures get a dense measured-value array


def _blas_context(n: int) -> Any:
    """One BLAS thread for big batches (spaces may compute kernel ids or encodings
    with a matrix product, which a second OpenBLAS thread on a busy host slows
    down). Small batches skip it: setting the limit has a fixed cost of its own.
    Figures: docs/measurements.md."""
    return single_blas_thread() if n > CHUNK else contextlib.nullcontext()


class LatencyModel(ABC):
    """Latency (ms) of a population of one space on one device + runtime config."""

    kind: str = ""

    def __init__(self, space: "SearchSpace", device: str, config_key: str) -> None:
        self.space = space
        self.device = device
        self.config_key = config_key
        self.missing: list[str] = []

    @abstractmethod
    def predict(self, pop: np.ndarray) -> np.ndarray:
        """float64 ``(n,)`` latencies in ms for genotypes ``pop`` of shape ``(n, dim)``."""

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "device": self.device, "space": self.space.name,
                "config_key": self.config_key, "missing": len(self.missing)}


class TableLatency(LatencyModel):
    """Sum of the device's per-kernel medians over each architecture's kernels, calibrated.

    ``table_ms[i]`` prices ``space.kernel_vocabulary()[i]``; ``missing`` lists the
    vocabulary keys that were not measured (their prices came from the kernel
    predictor). With the device's ``calibration``
    (:class:`~edgelat.predictors.calibration.Calibration`) the sum is mapped to the
    whole-model latency exactly as ``edgelat predict`` maps a model file's kernel
    sum, so search and predict give one number for one network.
    """

    kind = "table"

    def __init__(self, space: "SearchSpace", device: str, config_key: str, table_ms: np.ndarray,
                 missing: Sequence[str] = (), calibration: Any = None) -> None:
        super().__init__(space, device, config_key)
        table_ms = np.asarray(table_ms, dtype=np.float64)
        vocab = space.kernel_vocabulary()
        if table_ms.shape != (len(vocab),):
            raise ValueError(f"table has {table_ms.shape} values, the vocabulary {len(vocab)}")
        if not np.all(np.isfinite(table_ms)):
            raise ValueError("table has non-finite prices")
        self.table_ = np.append(table_ms, 0.0)  # slot -1 (absent kernel) costs nothing
        self.missing = list(missing)
        self.calibration = None if calibration is None or calibration.is_identity else calibration
        #: a :class:`~edgelat.predictors.speed.SpeedCheck` (set by the caller that made one): with a
        #: factor, each architecture's figure is scaled to the device's speed now, as predict scales
        self.speed: Any = None
        from edgelat.predictors.calibration import GROUPS, kernel_group

        # per-group prices (one column per calibration group), slot -1 zero
        groups = np.zeros((len(vocab) + 1, len(GROUPS)))
        groups[np.arange(len(vocab)), [kernel_group(k) for k in vocab]] = table_ms
        self.group_table_ = groups
        self.kernel_group_ = np.array([kernel_group(k) for k in vocab] + [0])
        #: the layout conversions taken off before the calibration, as predict takes them off a
        #: model file's kernels (each architecture is a chain of its kernels)
        self.layout_ = None
        if self.calibration is not None and getattr(self.calibration, "layout_", None) is not None:
            from edgelat.predictors.layout import ChainLayout

            self.layout_ = ChainLayout(vocab, self.calibration.layout_)
        if self.calibration is not None:
            # each kernel's weights as the spill term counts them (up to the knot), so that a sum
            # over an architecture's kernels is what predict computes from the kernel list
            self.params_ = self.calibration.counted_weights(np.array([k.params() for k in vocab] + [0], dtype=np.float64))

    def _priced(self, ids: np.ndarray) -> np.ndarray:
        if self.layout_ is None:
            parts = np.take(self.group_table_, ids, axis=0).sum(axis=1)
        else:
            ordered, prices = self.layout_.prices(ids, self.table_)
            groups = np.take(self.kernel_group_, ordered)
            parts = np.stack([np.where(groups == g, prices, 0.0).sum(axis=1) for g in range(self.group_table_.shape[1])], axis=1)
        if self.calibration is None:
            out = parts.sum(axis=1)
        else:
            counts = (ids >= 0).sum(axis=1)
            weights = np.take(self.params_, ids).sum(axis=1)
            out = self.calibration.predict(parts, counts, weights)
        if self.speed is not None and self.speed.factor is not None:
            from edgelat.predictors.speed import block_share

            out = out * self.speed.factor_for(block_share(parts))
        return out

    def predict(self, pop: np.ndarray) -> np.ndarray:
        pop = self.space.check(pop)
        out = np.empty(pop.shape[0], dtype=np.float64)
        with _blas_context(pop.shape[0]):
            for i in range(0, pop.shape[0], CHUNK):
                ids = self.space.kernel_ids(pop[i : i + CHUNK])
                if self.calibration is None and (self.speed is None or self.speed.factor is None):
                    out[i : i + CHUNK] = np.take(self.table_, ids).sum(axis=1)
                else:
                    out[i : i + CHUNK] = self._priced(ids)
        return out

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "calibrated": self.calibration is not None,
                "calibration": None if self.calibration is None else self.calibration.form_,
                "layout_per_element_ms": None if self.layout_ is None else self.calibration.layout_.per_element_ms}


class ArchModelLatency(LatencyModel):
    """A fitted architecture-level predictor (ridge or few-shot) on the space's encoding."""

    kind = "arch-predictor"

    def __init__(self, space: "SearchSpace", device: str, config_key: str, model: LinearLogModel,
                 meta: dict | None = None) -> None:
        super().__init__(space, device, config_key)
        self.model = model
        self.meta = meta or {}

    def predict(self, pop: np.ndarray) -> np.ndarray:
        pop = self.space.check(pop)
        out = np.empty(pop.shape[0], dtype=np.float64)
        with _blas_context(pop.shape[0]):
            for i in range(0, pop.shape[0], CHUNK):
                out[i : i + CHUNK] = self.model.predict(self.space.encode(pop[i : i + CHUNK]))
        return out


class MeasuredLatency(LatencyModel):
    """Exact measured latencies by genotype; an unmeasured architecture is an error."""

    kind = "imported"

    def __init__(self, space: "SearchSpace", device: str, config_key: str, measured: dict[str, float]) -> None:
        super().__init__(space, device, config_key)
        self.lookup = GenotypeLookup(space, measured)

    def predict(self, pop: np.ndarray) -> np.ndarray:
        out = self.lookup.get(pop)
        bad = np.isnan(out)
        if bad.any():
            raise BadInput(
                f"{int(bad.sum())} of {out.size} {self.space.name} architectures were never measured on "
                f"{self.device!r}; fit a predictor with 'edgelat predictor fit --space {self.space.name} "
                f"--device {self.device}'"
            )
        return out


class MeasuredFirst(LatencyModel):
    """The device's exact measurements where it has them, another source for the rest: a search
    over a space the device measured (in part) prices those architectures as measured."""

    def __init__(self, inner: LatencyModel, lookup: "GenotypeLookup") -> None:
        super().__init__(inner.space, inner.device, inner.config_key)
        self.inner = inner
        self.lookup = lookup
        self.kind = f"measured+{inner.kind}"
        self.missing = inner.missing
        self.calibration = getattr(inner, "calibration", None)

    def predict(self, pop: np.ndarray) -> np.ndarray:
        out = self.lookup.get(pop)
        todo = np.flatnonzero(np.isnan(out))
        if len(todo):
            out[todo] = self.inner.predict(self.space.check(pop)[todo])
        return out

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "kind": self.kind, "measured": len(self.lookup)}


class GenotypeLookup:
    """Measured values by genotype: a dense array for small spaces, a dict of row bytes otherwise."""

    def __init__(self, space: "SearchSpace", measured: dict[str, float]) -> None:
        self.space = space
        archs = list(measured)
        pop = space.from_strings(archs) if archs else np.zeros((0, space.dim), dtype=np.int16)
        vals = np.array([measured[a] for a in archs], dtype=np.float64)
        self.cards = np.asarray(space.cardinalities, dtype=np.int64)
        self.dense: np.ndarray | None = None
        total = float(np.prod(self.cards.astype(np.float64)))
        if total <= DENSE_LIMIT:
            self.dense = np.full(int(total), np.nan)
            if len(pop):
                self.dense[np.ravel_multi_index(pop.astype(np.int64).T, self.cards)] = vals
        else:
            self.table = {row.tobytes(): v for row, v in zip(np.ascontiguousarray(pop, dtype=np.int16), vals)}

    def __len__(self) -> int:
        return int(np.isfinite(self.dense).sum()) if self.dense is not None else len(self.table)

    def get(self, pop: np.ndarray) -> np.ndarray:
        """Measured ms per row of ``pop``, nan where that architecture was not measured."""
        pop = self.space.check(pop)
        if self.dense is not None:
            return self.dense[np.ravel_multi_index(pop.astype(np.int64).T, self.cards)]
        rows = np.ascontiguousarray(pop, dtype=np.int16)
        return np.array([self.table.get(r.tobytes(), np.nan) for r in rows], dtype=np.float64)


def _kernel_predictor(db: sqlite_utils.Database, device: str, config: "RuntimeConfig") -> object | None:
    """The device's kernel-level predictor, or None (also when that module is not installed yet)."""
    try:
        from edgelat.predictors.kernel import KernelPredictor
    except ImportError:
        return None
    return KernelPredictor.load(db, device, config)


def table_prices(
    db: sqlite_utils.Database, device: str, config: "RuntimeConfig", space: "SearchSpace"
) -> tuple[np.ndarray, list[str]]:
    """Measured median ms per vocabulary kernel (nan where absent) and the absent keys."""
    from edgelat.lut.store import kernel_rows

    medians = {r["kernel_key"]: r["median_ms"] for r in kernel_rows(db, device, config) if r["median_ms"] is not None}
    vocab = space.kernel_vocabulary()
    prices = np.array([medians.get(k.key, np.nan) for k in vocab], dtype=np.float64)
    missing = [k.key for k, p in zip(vocab, prices) if np.isnan(p)]
    return prices, missing


def latency_model(
    db: sqlite_utils.Database, device: str, config: "RuntimeConfig", space: "SearchSpace"
) -> LatencyModel:
    """The best latency source ``device`` has for ``space`` under ``config`` (see the module docstring);
    architectures the device measured answer with their measurement (:class:`MeasuredFirst`)."""
    model = _source(db, device, config, space)
    if isinstance(model, MeasuredLatency):
        return model
    measured = measured_archs(db, space.name, device, model.config_key)
    return MeasuredFirst(model, GenotypeLookup(space, measured)) if measured else model


def _source(
    db: sqlite_utils.Database, device: str, config: "RuntimeConfig", space: "SearchSpace"
) -> LatencyModel:
    ck = config_key_for(db, device, config)  # raises UnknownDevice
    loaded = load_predictor(db, space.name, device, ck)
    if loaded is not None:
        model, meta = loaded
        if model.coef_.shape[0] != space.encode(space.sample(np.random.default_rng(0), 1)).shape[1]:
            raise BadInput(
                f"the stored {space.name} predictor of {device!r} does not match the space's encoding "
                f"(the space changed); refit it with 'edgelat predictor fit --space {space.name} --device {device}'"
            )
        return ArchModelLatency(space, device, ck, model, meta)

    prices, missing = table_prices(db, device, config, space)
    n_vocab = len(prices)
    from edgelat.predictors.calibration import Calibration

    calibration = Calibration.load(db, device, config)
    if not missing:
        return TableLatency(space, device, ck, prices, calibration=calibration)
    kp = _kernel_predictor(db, device, config)
    if kp is not None:
        vocab = space.kernel_vocabulary()
        idx = np.flatnonzero(np.isnan(prices))
        filled = np.asarray(kp.predict_specs([vocab[i] for i in idx]), dtype=np.float64)  # type: ignore[attr-defined]
        if filled.shape != idx.shape or not np.all(np.isfinite(filled)):
            raise BadInput(
                f"the kernel predictor of {device!r} could not price {len(idx)} {space.name} kernels; "
                f"rebuild it with 'edgelat predictor build --device {device}'"
            )
        prices = prices.copy()
        prices[idx] = filled
        return TableLatency(space, device, ck, prices, missing, calibration=calibration)

    measured = measured_archs(db, space.name, device, ck)
    if measured:
        return MeasuredLatency(space, device, ck, measured)

    have = n_vocab - len(missing)
    raise BadInput(
        f"no latency source for {space.name} on {device!r} ({config.key()}): its table has {have} of the "
        f"space's {n_vocab} kernels ({len(missing)} missing) and no predictor is fitted; run "
        f"'edgelat profile ops --device {device} --space {space.name}' (the table), "
        f"'edgelat predictor build --device {device}' (kernel predictor) or 'edgelat predictor fit "
        f"--space {space.name} --device {device}' (needs measured architectures)"
    )


def measured_lookup(
    db: sqlite_utils.Database, device: str, config: "RuntimeConfig", space: "SearchSpace"
) -> GenotypeLookup:
    """The device's exact measured latencies in the space (imported, or profiled under ``config``)."""
    ck = config_key_for(db, device, config)
    return GenotypeLookup(space, measured_archs(db, space.name, device, ck))
