"""Kernel-level latency predictor: one regressor per kernel type, trained on a device's table.

For every op type with enough rows in the device's ``kernel_measurements``
(one runtime config) three candidates are cross-validated and the one with the
lowest out-of-fold MAPE is kept:

- ``linear``: latency = a non-negative price per unit of each kind of work the
  kernel does (:func:`components`: 1x1/dense/depthwise conv FLOPs, elements
  moved, activations by cost class, SE passes, dispatched nodes), fitted on
  relative error. A roofline per primitive: it extrapolates sanely.
- ``forest``: a random forest on log features -> log latency. Good inside the
  sampled region, flat outside it.
- ``boosted``: the linear model times exp(gradient boosting on log features ->
  log(measured / linear)). Follows the fine structure (cache and tiling
  effects) and falls back to the linear trend where data is thin.

Exact table hits are used as they are: a kernel whose key (or its batch-norm
twin, see :func:`edgelat.predictors.graph.bn_twin`) is in the table is answered
with its measured median, never with a model.

The out-of-fold predictions of the chosen candidate are kept in ``cv_pred_``:
they are what ``predictor report`` calls held out, and what adaptive sampling
uses to find where the predictor is worst.

Persistence: one row per device + config in the ``kernel_predictors`` table
of the same database, as data only: the state as JSON and the regressors as an
``.npz`` of numeric arrays (linear coefficients; the trees' node arrays, see
:mod:`edgelat.predictors.trees`), read back with ``allow_pickle=False``. Loading
a stored predictor never runs code; a row of the old pickle format is refused
with one line that says to rebuild it.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any, Sequence

import numpy as np
import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput
from edgelat.lut import predictors_store
from edgelat.predictors.trees import TreeEnsemble
from edgelat.profiler.ops import FEATURE_NAMES, OP_TYPES, KernelSpec

#: how a predictor row is stored (the ``format`` column); rows without it are old pickles
FORMAT = "edgelat-kernel-predictor/npz-2"  # npz-2: channel alignment features
CANDIDATES = ("linear", "forest", "boosted")
_CHEAP_ACTS = ("relu", "relu6")
# Work a kernel does, split by the kind of primitive that does it (each runs at its own speed).
COMPONENT_NAMES: tuple[str, ...] = (
    "one",  # fixed cost of a kernel
    "gemm_flops",  # 1x1 convs, fc, the SE's small convs
    "kxk_flops",  # dense convs with k > 1
    "dw_flops",  # depthwise convs
    "in_elems",
    "out_elems",
    "mid_elems",  # intermediate tensors inside a block (written and read once each)
    "params",
    "cheap_act_elems",  # relu, relu6
    "exp_act_elems",  # hswish, hsigmoid, sigmoid, swish
    "se_elems",  # SE pooling and gating passes
    "eltwise_elems",  # add, mul, pools, standalone activations, concat copies
    "nodes",  # primitive nodes the runtime dispatches
)
_SCALE = np.array([1, 1e6, 1e6, 1e6, 1e5, 1e5, 1e5, 1e5, 1e5, 1e5, 1e5, 1e5, 1.0])
_NF = len(FEATURE_NAMES)
# numeric columns the tree models see (log1p); one-hot op columns are constant within a type
_TREE_COLS = [i for i, n in enumerate(FEATURE_NAMES) if not n.startswith("op_")] + list(range(_NF + 1, _NF + len(COMPONENT_NAMES)))


def components(spec: KernelSpec) -> np.ndarray:
    """The kernel's work per primitive kind (:data:`COMPONENT_NAMES`): what a linear
    latency model can price unit by unit (a roofline per kind of primitive)."""
    v = np.zeros(len(COMPONENT_NAMES))
    v[0] = 1.0
    h, w, cin, cout, k = spec.h, spec.w, spec.cin, spec.cout, spec.kernel
    _, ho, wo, _ = spec.output_shape()
    v[4] = sum(int(np.prod(x)) for x in spec.input_shapes())
    v[5] = int(np.prod(spec.output_shape()))
    v[7] = spec.params()

    def act(elems: int, a: str) -> None:
        if a != "none":
            v[8 if a in _CHEAP_ACTS else 9] += elems
            v[12] += 1

    def se(hh: int, ww: int, c: int) -> None:
        from edgelat.profiler.ops import se_channels

        v[10] += 2 * hh * ww * c
        v[1] += 4 * c * se_channels(c)
        v[12] += 6

    op = spec.op
    if op == "conv2d":
        v[1 if k == 1 else 2] += 2 * ho * wo * k * k * cin * cout
        v[12] += 1
        act(ho * wo * cout, spec.act)
    elif op == "dwconv2d":
        v[3] += 2 * ho * wo * k * k * cin
        v[12] += 1
        act(ho * wo * cin, spec.act)
    elif op == "fc":
        v[1] += 2 * cin * cout
        v[12] += 1
        act(cout, spec.act)
    elif op == "mbconv":
        mid = spec.mid_channels
        if spec.expand != 1.0:
            v[1] += 2 * h * w * cin * mid
            v[6] += h * w * mid
            v[12] += 1
            act(h * w * mid, spec.act)
        v[3] += 2 * ho * wo * k * k * mid
        v[6] += ho * wo * mid
        v[12] += 1
        act(ho * wo * mid, spec.act)
        if spec.se:
            se(ho, wo, mid)
        v[1] += 2 * ho * wo * mid * cout
        v[12] += 1
        if spec.has_residual:
            v[11] += ho * wo * cout
            v[12] += 1
    elif op == "se":
        se(h, w, cin)
    else:
        v[11] += v[5] if op == "concat" else spec.flops()
        v[12] += 1
    return v


def feature_matrix(specs: Sequence[KernelSpec]) -> np.ndarray:
    """One row per kernel: the catalog's features, then :func:`components`."""
    return np.stack([np.concatenate([s.features(), components(s)]) for s in specs])


def _linear_design(X: np.ndarray) -> np.ndarray:
    return X[:, _NF:] / _SCALE


def _tree_features(X: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(X[:, _TREE_COLS], 0.0))


class _Linear:
    """Non-negative least squares on relative error."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Linear":
        from scipy.optimize import nnls

        A = _linear_design(X)
        self.coef_, _ = nnls(A / y[:, None], np.ones(len(y)))
        if not np.any(self.coef_ > 0):  # degenerate: fall back to the mean
            self.coef_ = np.zeros(len(COMPONENT_NAMES))
            self.coef_[0] = float(np.mean(y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(_linear_design(X) @ self.coef_, 1e-6)

    def to_data(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": "linear"}, {prefix + "coef": np.asarray(self.coef_, dtype=np.float64)}

    @classmethod
    def from_data(cls, state: dict[str, Any], arrays: Any, prefix: str) -> "_Linear":
        model = cls()
        model.coef_ = np.asarray(arrays[prefix + "coef"], dtype=np.float64)
        if model.coef_.shape != (len(COMPONENT_NAMES),):
            raise ValueError("linear coefficients of the wrong length")
        return model


class _Forest:
    """A random forest on log features -> log latency. Fitted with scikit-learn; a
    loaded one predicts from its stored node arrays (:class:`TreeEnsemble`)."""

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Forest":
        from sklearn.ensemble import RandomForestRegressor

        self.model_ = RandomForestRegressor(
            n_estimators=100, min_samples_leaf=1, max_features=0.5, random_state=self.random_state, n_jobs=1
        ).fit(_tree_features(X), np.log(y))
        return self

    def _log_predict(self, F: np.ndarray) -> np.ndarray:
        if hasattr(self, "model_"):
            return self.model_.predict(F)
        return self.trees_.predict(F)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self._log_predict(_tree_features(X)))

    def ensemble(self) -> TreeEnsemble:
        if hasattr(self, "trees_"):
            return self.trees_
        return TreeEnsemble.from_sklearn(list(self.model_.estimators_), mean=True)

    def to_data(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        trees = self.ensemble()
        return {"kind": "forest", "trees": trees.scalars()}, trees.arrays(prefix + "trees/")

    @classmethod
    def from_data(cls, state: dict[str, Any], arrays: Any, prefix: str) -> "_Forest":
        model = cls(random_state=0)
        model.trees_ = TreeEnsemble.from_arrays(arrays, prefix + "trees/", state["trees"])
        return model


class _Boosted:
    """The linear model times exp(gradient boosting on log features -> log(measured / linear));
    a loaded one predicts from its stored node arrays."""

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Boosted":
        from sklearn.ensemble import GradientBoostingRegressor

        self.base_ = _Linear().fit(X, y)
        resid = np.log(y) - np.log(self.base_.predict(X))
        self.model_ = GradientBoostingRegressor(
            n_estimators=100, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=self.random_state
        ).fit(_tree_features(X), resid)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        F = _tree_features(X)
        resid = self.model_.predict(F) if hasattr(self, "model_") else self.trees_.predict(F)
        return self.base_.predict(X) * np.exp(resid)

    def ensemble(self) -> TreeEnsemble:
        if hasattr(self, "trees_"):
            return self.trees_
        m = self.model_
        # squared-error boosting: the initial estimate is a constant (the mean), then
        # each stage adds learning_rate times its tree's leaf value
        base = float(m.init_.predict(np.zeros((1, m.n_features_in_)))[0])
        return TreeEnsemble.from_sklearn([e[0] for e in m.estimators_], base=base, scale=m.learning_rate)

    def to_data(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        trees = self.ensemble()
        _, lin = self.base_.to_data(prefix + "base/")
        return {"kind": "boosted", "trees": trees.scalars()}, {**lin, **trees.arrays(prefix + "trees/")}

    @classmethod
    def from_data(cls, state: dict[str, Any], arrays: Any, prefix: str) -> "_Boosted":
        model = cls(random_state=0)
        model.base_ = _Linear.from_data({}, arrays, prefix + "base/")
        model.trees_ = TreeEnsemble.from_arrays(arrays, prefix + "trees/", state["trees"])
        return model


_KINDS = {"linear": _Linear, "forest": _Forest, "boosted": _Boosted}


def _make(name: str, random_state: int):
    if name == "linear":
        return _Linear()
    if name == "forest":
        return _Forest(random_state)
    if name == "boosted":
        return _Boosted(random_state)
    raise ValueError(f"unknown candidate {name!r}")


def _one_thread():
    """Run any OpenMP/BLAS loop on one thread: on small tables, threads spinning on a
    machine busy measuring (or running anything else) are 20-50x slower than one thread,
    which also leaves the other cores to the device being measured."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y) / y))


class KernelPredictor:
    """Per-op-type latency regressors for one device + runtime config (scikit-learn style).

    ``min_rows``: an op type with fewer measured rows gets no regressor (its
    kernels must be exact table hits or be measured). ``tree_min_rows``: below
    it only the linear candidate is tried (trees on a handful of rows overfit).
    ``choice``: {op: candidate} to cross-validate only that candidate for that
    op (adaptive sampling refits often and re-selects only at the end).
    """

    def __init__(
        self,
        min_rows: int = 5,
        tree_min_rows: int = 20,
        n_folds: int = 5,
        candidates: Sequence[str] = CANDIDATES,
        choice: dict[str, str] | None = None,
        random_state: int = 0,
    ) -> None:
        self.min_rows = min_rows
        self.tree_min_rows = tree_min_rows
        self.n_folds = n_folds
        self.candidates = candidates
        self.choice = choice
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, specs: Sequence[KernelSpec], y_ms: Sequence[float]) -> "KernelPredictor":
        """Fit one regressor per op type; remember the measured values as the exact table."""
        with _one_thread():
            return self._fit(specs, y_ms)

    def _fit(self, specs: Sequence[KernelSpec], y_ms: Sequence[float]) -> "KernelPredictor":
        from sklearn.model_selection import KFold

        specs = list(specs)
        y = np.asarray(y_ms, dtype=np.float64)
        if len(specs) != len(y):
            raise ValueError(f"{len(specs)} specs but {len(y)} latencies")
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("latencies must be positive and finite")
        self.table_: dict[str, float] = {s.key: float(v) for s, v in zip(specs, y)}
        self.models_: dict[str, Any] = {}
        self.choice_: dict[str, str] = {}
        self.cv_: dict[str, dict[str, float]] = {}  # op -> candidate -> out-of-fold MAPE
        self.cv_pred_: dict[str, float] = {}  # kernel key -> out-of-fold prediction (chosen candidate)
        self.n_rows_: dict[str, int] = {}
        by_op: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            by_op.setdefault(s.op, []).append(i)
        for op, idx in sorted(by_op.items()):
            self.n_rows_[op] = len(idx)
            if len(idx) < self.min_rows:
                continue
            X = feature_matrix([specs[i] for i in idx])
            yy = y[idx]
            names = [c for c in self.candidates if c == "linear" or len(idx) >= self.tree_min_rows]
            fixed = (self.choice or {}).get(op)
            if fixed in names:
                names = [fixed]
            folds = min(self.n_folds, len(idx))
            kf = KFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            oof = {c: np.empty(len(idx)) for c in names}
            for train, test in kf.split(X):
                for c in names:
                    oof[c][test] = _make(c, self.random_state).fit(X[train], yy[train]).predict(X[test])
            scores = {c: _mape(yy, oof[c]) for c in names}
            best = min(names, key=lambda c: scores[c])
            self.cv_[op] = scores
            self.choice_[op] = best
            self.models_[op] = _make(best, self.random_state).fit(X, yy)
            for j, i in enumerate(idx):
                self.cv_pred_[specs[i].key] = float(oof[best][j])
        self.fitted_at_ = time.time()
        return self

    # ------------------------------------------------------------------ prediction
    @property
    def ops_(self) -> list[str]:
        """Op types that have a regressor."""
        return sorted(self.models_)

    def table_hit(self, spec: KernelSpec) -> float | None:
        """The measured median of ``spec`` (or of its batch-norm twin), if in the table."""
        from edgelat.predictors.graph import bn_twin

        if spec.key in self.table_:
            return self.table_[spec.key]
        twin = bn_twin(spec)
        if twin is not None and twin.key in self.table_:
            return self.table_[twin.key]
        return None

    def missing(self, specs: Sequence[KernelSpec]) -> list[KernelSpec]:
        """Kernels that are neither exact table hits nor of a type with a regressor."""
        return [s for s in specs if s.op not in self.models_ and self.table_hit(s) is None]

    def predict_regressors(self, specs: Sequence[KernelSpec]) -> np.ndarray:
        """What the regressors say, ignoring table hits (BadInput for types without one)."""
        specs = list(specs)
        out = np.empty(len(specs))
        by_op: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            by_op.setdefault(s.op, []).append(i)
        lacking = sorted(op for op in by_op if op not in self.models_)
        if lacking:
            raise BadInput(f"no regressor for kernel type(s) {', '.join(lacking)} on this device")
        with _one_thread():
            for op, idx in by_op.items():
                out[idx] = self.models_[op].predict(feature_matrix([specs[i] for i in idx]))
        return out

    def predict_specs(self, specs: Sequence[KernelSpec]) -> np.ndarray:
        """Latency (ms) of each kernel: the measured median where the table has it, else the regressor.

        Raises BadInput naming the kernels that have neither (never a silent zero).
        """
        specs = list(specs)
        missing = self.missing(specs)
        if missing:
            names = ", ".join(sorted({s.key for s in missing})[:5]) + (" ..." if len({s.key for s in missing}) > 5 else "")
            raise BadInput(
                f"{len(missing)} kernel(s) have no measurement and no regressor for their type: {names}; "
                "measure them on the device (edgelat profile ops) or run 'edgelat predictor build'"
            )
        out = np.empty(len(specs))
        rest = []
        for i, s in enumerate(specs):
            hit = self.table_hit(s)
            if hit is None:
                rest.append(i)
            else:
                out[i] = hit
        if rest:
            out[rest] = self.predict_regressors([specs[i] for i in rest])
        return out

    def hits(self, specs: Sequence[KernelSpec]) -> np.ndarray:
        """Boolean mask: which kernels are exact table hits."""
        return np.array([self.table_hit(s) is not None for s in specs], dtype=bool)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_table(cls, db: sqlite_utils.Database, device: str, config: RuntimeConfig, **params: Any) -> "KernelPredictor":
        """Fit on the device's kernel rows for ``config`` (catalog kernels only)."""
        specs, y = table_specs(db, device, config)
        if not specs:
            raise BadInput(
                f"device {device!r} has no kernel measurements for {config.key()}; "
                f"run 'edgelat predictor build --device {device}' first"
            )
        return cls(**params).fit(specs, y)

    def save(self, db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> None:
        """Store the predictor as data: JSON for the small state, an ``.npz`` of plain
        numeric arrays for the regressors (see :data:`FORMAT`; nothing is pickled)."""
        import sklearn

        meta = {
            "ops": self.ops_,
            "choice": self.choice_,
            "cv_mape": self.cv_,
            "n_rows": self.n_rows_,
            "params": {k: getattr(self, k) for k in ("min_rows", "tree_min_rows", "n_folds", "candidates", "random_state")},
        }
        models: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for i, (op, model) in enumerate(sorted(self.models_.items())):
            state, data = model.to_data(f"m{i}/")
            models[op] = {**state, "prefix": f"m{i}/"}
            arrays.update(data)
        meta["state"] = {"models": models, "cv_pred": self.cv_pred_, "fitted_at": self.fitted_at_}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        predictors_store.save_kernel_predictor(db, {
            "device": device,
            "config_key": config.key(),
            "n_rows": len(self.table_),
            "fitted_at": self.fitted_at_,
            "sklearn_version": sklearn.__version__,
            "meta_json": json.dumps(meta, sort_keys=True),
            "blob": buf.getvalue(),
            "format": FORMAT,
        })

    @classmethod
    def load(cls, db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> "KernelPredictor | None":
        """The stored predictor of a device + config, or None if none was built.

        Only data is read (``np.load(allow_pickle=False)`` and JSON): a row of the
        old pickle format is refused with one line, never unpickled. Its exact
        table is refreshed from the live table, so kernels measured after the fit
        (e.g. on demand by ``predict``) are used as they are.
        """
        from edgelat.errors import StoreCorrupt, StoreSchema

        row = predictors_store.kernel_predictor_row(db, device, config)
        if row is None:
            return None
        rebuild = f"rebuild it with 'edgelat predictor build --device {device}'"
        if str(row.get("format") or "").startswith("edgelat-kernel-predictor/") and row["format"] != FORMAT:
            raise StoreSchema(
                f"the kernel predictor of {device!r} ({config.key()}) was saved by another version of edgelat "
                f"({row['format']}, this one reads {FORMAT}): {rebuild}"
            )
        if row.get("format") != FORMAT:
            raise StoreSchema(
                f"the kernel predictor of {device!r} ({config.key()}) was saved in an old format (a pickle), "
                f"which is never loaded because loading it could run code: {rebuild}"
            )
        try:
            model = cls._from_data(json.loads(row["meta_json"]), row["blob"])
        except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as exc:
            raise StoreCorrupt(
                f"the stored kernel predictor of {device!r} ({config.key()}) is damaged ({exc}): {rebuild}"
            ) from None
        specs, y = table_specs(db, device, config)
        model.table_ = {s.key: float(v) for s, v in zip(specs, y)}
        return model

    @classmethod
    def _from_data(cls, meta: dict[str, Any], blob: bytes) -> "KernelPredictor":
        params = meta.get("params", {})
        model = cls(**{k: params[k] for k in ("min_rows", "tree_min_rows", "n_folds", "random_state") if k in params})
        if "candidates" in params:
            model.candidates = tuple(params["candidates"])
        state = meta["state"]
        model.choice_ = dict(meta["choice"])
        model.cv_ = dict(meta["cv_mape"])
        model.n_rows_ = dict(meta["n_rows"])
        model.cv_pred_ = {str(k): float(v) for k, v in state["cv_pred"].items()}
        model.fitted_at_ = float(state["fitted_at"])
        model.models_ = {}
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            for op, m in state["models"].items():
                model.models_[op] = _KINDS[m["kind"]].from_data(m, arrays, m["prefix"])
        return model


def table_specs(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> tuple[list[KernelSpec], np.ndarray]:
    """The catalog kernels measured on a device + config and their medians (ms).

    The raw median, unless the row was measured under large drift (its sentinel
    level off the device's reference state by more than
    :data:`~edgelat.lut.table.LARGE_DRIFT`): then the median normalized to the
    reference state (``median_norm_ms``, see :mod:`edgelat.profiler.sentinel`),
    so the regressors learn one state of the device rather than its drift. Small
    levels are left alone: the sentinel's own run-to-run spread is of that size
    (docs/measurements.md), and dividing by it would add noise, not remove it.
    Rows of graph nodes outside the catalog (op ``graph:...``) and rows without a
    median are left out.
    """
    from edgelat.lut.store import kernel_rows
    from edgelat.lut.table import LARGE_DRIFT

    specs, y = [], []
    for r in kernel_rows(db, device, config):
        level = r.get("sentinel_level")
        drifted = level is not None and abs(level - 1.0) > LARGE_DRIFT and r.get("median_norm_ms") is not None
        value = r["median_norm_ms"] if drifted else r["median_ms"]
        if r["op"] not in OP_TYPES or value is None or not value > 0:
            continue
        specs.append(KernelSpec.from_key(r["kernel_key"]))
        y.append(value)
    return specs, np.asarray(y, dtype=np.float64)
