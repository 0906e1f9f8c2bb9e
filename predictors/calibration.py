"""Per-device calibration: the sum of a model's kernels -> the measured whole model.

Summing kernels measured one model at a time misses what happens between
kernels in a real run (one model-run overhead instead of one per kernel,
caches warm from the previous kernel, the memory planner). A small linear map
fitted on whole models measured on the same device + config corrects it.

Candidate forms (``s`` = sum of kernel predictions, ``n`` = number of kernels,
``s_g`` = the part of ``s`` in kernel group ``g``, see :data:`GROUPS`, ``W`` =
the model's weights, see :func:`model_weights`):
``identity`` (s), ``overhead`` (s - (n-1)*o, nothing fitted: each kernel was
measured as its own model and so carries the fixed cost ``o`` of one model run,
which a whole model pays once; ``o`` is measured on the device, see
:func:`run_overhead_ms`), ``ratio`` (a*s), ``affine`` (a*s + b), ``ratio+count``
(a*s + c*n: a fitted per-kernel correction), ``ratio+count+spill``
(a*s + c*n + e*max(0, W(W0) - W0)), ``groups`` (sum of a_g*s_g),
``groups+count`` (sum of a_g*s_g + c*n) and ``groups+count+spill`` (both).

Why the gap is not one ratio: measured alone, a kernel's weights stay in cache
from one run to the next, and so do a whole model's when they all fit. When they
do not, every run fetches the weights beyond what the cache keeps from memory,
which none of the kernels paid alone. ``spill`` is that term: ``W0`` (the weights
the device keeps cached across runs, chosen among the calibration models' own
sizes, the fitted knot of a hinge) and ``e`` (ms per weight fetched) are fitted.
``W(W0)`` counts each kernel's weights up to ``W0`` only: a kernel larger than
the cache (a VGG's or AlexNet's classifier) streamed its weights from memory when
measured alone too, so its own measurement already holds that cost.
Before any form, each kernel's alone price loses the layout conversions it made alone and
does not make inside the model (:mod:`edgelat.predictors.layout`, at the price per element the
build measured on the device, ``layout_``), for the calibration models as for a user's model.
What these came to on one machine, and the commands that reproduce them:
``docs/calibration.md``. The fit describes the device as it was when the models
were measured: the build measures them after running them unmeasured for a while,
because the first minute or two of sustained whole-model load can run faster than
the load goes on at (see ``MODEL_SETTLE_S`` in :mod:`edgelat.predictors.sampling`).
The group forms model the same cache effect by
kernel kind (weight-heavy squeeze-excite blocks cost more inside a model than
alone); each group factor is pulled toward the ``ratio`` coefficient (a group no
calibration model has gets it exactly). The form kept is the one that best predicts
calibration models it was not fitted on -- identity unless a fitted form beats it out of
sample. A build judges each form on whole families left out (:func:`model_family`: the
MobileNets, the ResNets, ... each in turn, each family weighing the same), since a user's
model is as often of a family the build never measured; a form that is right only
inside the families it saw (a per-kernel term fitted on MobileNets of twenty kernels,
extrapolated to a network of two hundred) loses there. Those out-of-sample predictions
are kept (``loo_pred_``), so the report can show calibrated accuracy on models the
calibration did not see.

Which whole models calibrate is recorded in ``predictor_models`` (the model's
kernels as split from its file, and a role: ``calibration`` models are fitted
on, ``holdout`` models are only reported on).

One calibration per device state (:mod:`edgelat.profiler.states`): the build measures
its whole models warm and then sustained, and fits a map to each; ``predict`` answers
in the state asked for (warm by default, what ``profile model`` measures). The row of
``kernel_calibrations`` holds the warm map in its columns (what readers that know no
states use) and every state's map in ``meta_json["states"]``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import numpy as np
import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.lut import predictors_store
from edgelat.predictors.layout import LayoutCost, in_model_prices
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.states import DEFAULT_STATE, check_state, state_ref

ROLES = ("calibration", "holdout")
FORMS = ("identity", "overhead", "ratio", "affine", "ratio+count", "ratio+count+spill", "groups", "groups+count",
         "groups+count+spill")
#: kernel groups of the group forms: inverted-residual blocks with and without
#: squeeze-excite, and every other kernel (including ops outside the catalog)
GROUPS = ("block-se", "block", "other")
#: weight, in models, of the pull of each group factor toward the plain ratio (see _solve)
GROUP_PRIOR = 0.3


def kernel_group(item: Any) -> int:
    """Index in :data:`GROUPS` of a kernel (a :class:`KernelSpec`, or any other graph item)."""
    if isinstance(item, KernelSpec) and item.op == "mbconv":
        return 0 if item.se else 1
    return 2


def group_sums(items: Sequence[Any], ms: Sequence[float]) -> np.ndarray:
    """The per-group sums of a model's kernel latencies (length ``len(GROUPS)``)."""
    out = np.zeros(len(GROUPS))
    for item, v in zip(items, ms):
        out[kernel_group(item)] += float(v)
    return out


def model_parts(items: Sequence[Any], ms: Sequence[float], layout: LayoutCost | None,
                links: Sequence[Any] | None = None) -> np.ndarray:
    """What a calibration maps: the per-group sums (:func:`group_sums`) of a model's kernel
    prices less the layout conversions the model does not make (``layout``: the device's
    price, None for none; ``links``: the model's graph, see :attr:`~edgelat.predictors.graph.Split.links`;
    None for a chain of kernels as the builder lowers it)."""
    return group_sums(items, in_model_prices(items, links, ms, layout))


def model_weights(items: Sequence[Any]) -> float:
    """A model's weights (parameters) in its catalog kernels; nodes outside the catalog
    count none (their weights are not known to the split)."""
    return float(sum(kernel_weights(items)))


def kernel_weights(items: Sequence[Any]) -> list[float]:
    """Per kernel, its weights (what the spill form needs to tell the weights a kernel
    kept cached when measured alone from those it streamed from memory even then): a
    catalog kernel's, and a graph kernel's floating-point constants (a measured MatMul's
    weight matrix); anything else (a bare key) counts nothing."""
    return [float(k.params()) for k in items if hasattr(k, "params")]


def cached_weights(weights: Sequence[Any], w0: float) -> np.ndarray:
    """Per model, the weights that stayed cached while its kernels were measured alone: each
    kernel's weights up to the knot ``w0`` (a kernel larger than the cache streamed them then
    too, so a whole model pays nothing extra for it). An entry given as one number (a model's
    total, without its kernels) counts whole."""
    return np.array([float(w) if np.ndim(w) == 0 else float(np.minimum(np.asarray(w, dtype=np.float64), w0).sum())
                     for w in weights])


def _totals(weights: Sequence[Any]) -> np.ndarray:
    return np.array([float(w) if np.ndim(w) == 0 else float(np.sum(w)) for w in weights])


def record_model(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig,
    model_ref: str,
    name: str,
    role: str,
    fmt: str,
    kernels: Sequence[KernelSpec],
) -> None:
    """Remember which kernels a measured whole model splits into, and its role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    predictors_store.record_model(db, {
        "device": device,
        "config_key": config.key(),
        "model_ref": model_ref,
        "name": name,
        "role": role,
        "fmt": fmt,
        "kernels_json": json.dumps([k.key for k in kernels]),
        "n_kernels": len(kernels),
        "recorded_at": time.time(),
    })


def measured_models(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, role: str | None = None,
    state: str = DEFAULT_STATE,
) -> list[dict[str, Any]]:
    """Recorded models that have a whole-model measurement in ``state``: name, role, kernels,
    measured_ms."""
    suffix = state_ref("", state)  # "" for the default state, "@<state>" otherwise
    out = []
    for ref, name, r, kernels, ms in predictors_store.measured_models(db, device, config, role, suffix):
        out.append(
            {
                "model_ref": ref,
                "name": name,
                "role": r,
                "kernels": [KernelSpec.from_key(k) for k in json.loads(kernels)],
                "measured_ms": float(ms),
            }
        )
    return out


def run_overhead_ms(predictor) -> float | None:
    """The device's fixed cost of one model run: the measured latency of a one-op model
    on 8 numbers (:data:`~edgelat.predictors.fusion.OVERHEAD_SPEC`, which every build
    profiles first); None when it was never measured (then the ``overhead`` form is
    not a candidate)."""
    from edgelat.predictors.fusion import OVERHEAD_SPEC

    hit = predictor.table_hit(OVERHEAD_SPEC)
    return None if hit is None else float(hit)


def _design(form: str, parts: np.ndarray, n: np.ndarray, w: Sequence[Any] | None = None, w0: float = 0.0) -> np.ndarray | None:
    s = parts.sum(axis=1)
    if form == "ratio+count+spill":
        return np.column_stack([s, n, np.maximum(cached_weights(w, w0) - w0, 0.0)])
    if form == "groups+count+spill":
        return np.column_stack([parts, n, np.maximum(cached_weights(w, w0) - w0, 0.0)])
    if form == "ratio":
        return s[:, None]
    if form == "affine":
        return np.column_stack([s, np.ones_like(s)])
    if form == "ratio+count":
        return np.column_stack([s, n])
    if form == "groups":
        return parts
    if form == "groups+count":
        return np.column_stack([parts, n])
    return None  # identity


def _lstsq_rel(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error (each model counts by its percentage error)."""
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def _solve_spill(form: str, parts: np.ndarray, n: np.ndarray, w: Sequence[Any], y: np.ndarray) -> np.ndarray:
    """The coefficients of a spill form, then its knot W0: the size, among the models' own
    (and 0), whose fit leaves the least squared relative error. The weights beyond it are
    the model's cached ones (:func:`cached_weights`) beyond it."""
    best: tuple[float, np.ndarray] | None = None
    for w0 in np.unique(np.concatenate([[0.0], _totals(w)])):
        A = _design(form, parts, n, w, w0)
        coef = _fit_linear(form, A, parts, n, y)
        err = float(np.sum((A @ coef / y - 1) ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, np.append(coef, w0))
    return best[1]


def _solve(form: str, parts: np.ndarray, n: np.ndarray, y: np.ndarray, overhead_ms: float | None,
           w: Sequence[Any] | None = None) -> np.ndarray:
    if form == "overhead":
        return np.array([overhead_ms])
    if form.endswith("spill"):
        return _solve_spill(form, parts, n, w, y)
    A = _design(form, parts, n)
    if A is None:
        return np.array([])
    return _fit_linear(form, A, parts, n, y)


def _fit_linear(form: str, A: np.ndarray, parts: np.ndarray, n: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients of ``A`` (the form's design matrix) on relative error; the group forms
    with their factors pulled toward the plain ratio."""
    if not form.startswith("groups"):
        return _lstsq_rel(A, y)
    # Each group's factor is pulled toward the plain ratio with the weight of GROUP_PRIOR
    # models: a group that is a small part of every calibration model (the stem and head
    # of a MobileNet are "other") is barely determined by them, and a free fit lets its
    # factor wander from build to build -- harmless on models like those, absurd on a model
    # made only of that group (figures: docs/calibration.md). A group no model has gets
    # the ratio exactly.
    ratio = _lstsq_rel(_design("ratio", parts, n), y)[0]
    k = A.shape[1]
    prior = np.zeros((len(GROUPS), k))
    prior[:, : len(GROUPS)] = np.sqrt(GROUP_PRIOR) * np.eye(len(GROUPS))
    rows = np.vstack([A / y[:, None], prior])
    target = np.concatenate([np.ones(len(y)), np.full(len(GROUPS), np.sqrt(GROUP_PRIOR) * ratio)])
    coef, *_ = np.linalg.lstsq(rows, target, rcond=None)
    return coef


def _apply(form: str, coef: np.ndarray, parts: np.ndarray, n: np.ndarray, w: Sequence[Any] | None = None) -> np.ndarray:
    if form == "overhead":
        return parts.sum(axis=1) - np.maximum(n - 1, 0) * coef[0]
    if form.endswith("spill"):
        return _design(form, parts, n, w, coef[-1]) @ coef[:-1]
    A = _design(form, parts, n)
    return parts.sum(axis=1) if A is None else A @ coef


def _as_parts(sums: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-model kernel sums as an (models x groups) array; plain totals go to "other"."""
    a = np.asarray(sums, dtype=np.float64)
    if a.ndim == 2:
        if a.shape[1] != len(GROUPS):
            raise ValueError(f"per-group sums need {len(GROUPS)} columns ({', '.join(GROUPS)})")
        return a
    out = np.zeros((len(a), len(GROUPS)))
    out[:, kernel_group(None)] = a
    return out


class Calibration:
    """Linear map from the kernel sum to the whole-model latency (scikit-learn style).

    Fitted: ``form_``, ``coef_`` (in the order of the form's formula above; for
    the spill forms the others, e, then the knot W0), ``loo_mape_`` (per candidate
    form), ``loo_pred_`` and ``n_models_``; ``state_``: the device state its whole
    models were measured in (None for a calibration stored before states were kept);
    ``range_``: the span of the calibration models (``sum_ms``, ``kernels``, ``weights``:
    [min, max] each) and ``ops_``, the kernel types they hold (set by
    :func:`fit_calibration`): outside them the map is extrapolated, and
    :mod:`edgelat.predictors.uncertainty` widens the interval. ``layout_``: the price per
    element of the layout conversions taken off the kernel prices before the map (see
    :func:`model_parts`), None when the build measured none; callers give the map the parts
    :func:`model_parts` makes with it.
    """

    state_: str | None = DEFAULT_STATE
    range_: dict[str, list[float]] | None = None
    ops_: list[str] | None = None
    layout_: LayoutCost | None = None  # the conversions taken off the kernel prices first (model_parts)

    # fewest calibration models each form needs before leave-one-out can judge it
    MIN_MODELS = {"identity": 0, "overhead": 1, "ratio": 2, "affine": 4, "ratio+count": 4, "ratio+count+spill": 8, "groups": 6, "groups+count": 8,
                  "groups+count+spill": 10}

    def __init__(self, forms: Sequence[str] = FORMS, overhead_ms: float | None = None) -> None:
        self.forms = forms
        self.overhead_ms = overhead_ms

    def fit(self, sums: Sequence[Any], counts: Sequence[int], measured: Sequence[float],
            weights: Sequence[Any] | None = None, families: Sequence[str] | None = None) -> "Calibration":
        """``sums``: per model, the kernel sum, or its per-group parts (see :func:`group_sums`);
        the group forms are candidates only when parts are given, the spill form only
        with ``weights`` (per model, its kernels' weights, see :func:`kernel_weights`, or
        their total, see :func:`model_weights`, which counts every weight as cached alone).

        ``families`` (per model, see :func:`model_family`): each form is then judged on every
        family it was not fitted on (all of a family's models left out at once, each family
        weighing the same), which is the question a user's model from another family asks;
        without them, on each model left out alone."""
        s = _as_parts(sums)
        with_groups = np.asarray(sums).ndim == 2
        n = np.asarray(counts, dtype=np.float64)
        w = None if weights is None else list(weights)
        y = np.asarray(measured, dtype=np.float64)
        self.n_models_ = len(y)
        self.loo_mape_: dict[str, float] = {}
        loo: dict[str, np.ndarray] = {}
        labels = np.asarray(list(families) if families is not None else range(len(y))).astype(str)
        if len(labels) != len(y):
            raise ValueError("one family per model")
        folds = [labels == f for f in dict.fromkeys(labels)]
        if len(folds) < 2:  # one family: nothing to leave out but single models
            folds = [np.arange(len(y)) == i for i in range(len(y))]
        for form in self.forms:
            if len(y) < max(self.MIN_MODELS[form], 1) or (form == "overhead" and not self.overhead_ms):
                continue
            if (form.startswith("groups") and not with_groups) or (form.endswith("spill") and w is None):
                continue
            pred = np.empty(len(y))
            for out in folds:
                keep = ~out
                if keep.sum() < max(self.MIN_MODELS[form], 1):
                    break
                wk = None if w is None else [v for j, v in enumerate(w) if keep[j]]
                coef = _solve(form, s[keep], n[keep], y[keep], self.overhead_ms, wk)
                pred[out] = _apply(form, coef, s[out], n[out], None if w is None else [v for j, v in enumerate(w) if out[j]])
            else:
                loo[form] = pred
                err = np.abs(pred - y) / y
                self.loo_mape_[form] = float(np.mean([err[out].mean() for out in folds]))
        self.form_ = min(self.loo_mape_, key=self.loo_mape_.get) if self.loo_mape_ else "identity"
        self.coef_ = _solve(self.form_, s, n, y, self.overhead_ms, w) if len(y) else np.array([])
        self.loo_pred_ = loo.get(self.form_, s.sum(axis=1))
        if len(y):
            spans = {"sum_ms": s.sum(axis=1), "kernels": n}
            if w is not None:
                spans["weights"] = _totals(w)
            self.range_ = {k: [float(v.min()), float(v.max())] for k, v in spans.items()}
        return self

    def predict(self, sums: Sequence[Any], counts: Sequence[int], weights: Sequence[Any] | None = None) -> np.ndarray:
        """Calibrated latencies; arguments as in :meth:`fit` (the group forms need
        per-group parts, the spill form ``weights``)."""
        if self.form_.startswith("groups") and np.asarray(sums).ndim != 2:
            raise ValueError(f"calibration form {self.form_!r} needs per-group kernel sums")
        if self.form_.endswith("spill") and weights is None:
            raise ValueError(f"calibration form {self.form_!r} needs the models' weights")
        s = _as_parts(sums)
        n = np.asarray(counts, dtype=np.float64)
        w = None if weights is None else list(weights)
        return np.maximum(_apply(self.form_, self.coef_, s, n, w), 1e-6)

    def counted_weights(self, kernel_weights: np.ndarray) -> np.ndarray:
        """Per kernel, the weights the fitted spill term counts (each up to the knot W0): their
        sum over a model's kernels, given as that model's one total, predicts as its kernel list
        does (what a batched caller sums once per architecture). Unchanged for other forms."""
        w = np.asarray(kernel_weights, dtype=np.float64)
        return np.minimum(w, self.coef_[-1]) if self.form_.endswith("spill") else w

    @property
    def is_identity(self) -> bool:
        return self.form_ == "identity"

    def _state_dict(self) -> dict[str, Any]:
        return {"form": self.form_, "coef": [float(c) for c in self.coef_], "n_models": self.n_models_,
                "loo_mape": self.loo_mape_, "range": self.range_, "ops": self.ops_,
                "layout": None if self.layout_ is None else self.layout_.to_dict()}

    def save(self, db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> None:
        """Store this calibration as the one of its state (``state_``), keeping the other states'."""
        state = check_state(self.state_ or DEFAULT_STATE)
        old = predictors_store.calibration_row(db, device, config)
        states: dict[str, Any] = {}
        if old is not None:
            states = dict(json.loads(old["meta_json"]).get("states") or {})
        states[state] = self._state_dict()
        main = states.get(DEFAULT_STATE, self._state_dict())
        row = {
            "device": device,
            "config_key": config.key(),
            "form": main["form"],
            "coef_json": json.dumps(main["coef"]),
            "meta_json": json.dumps({"n_models": main["n_models"], "loo_mape": main["loo_mape"],
                                     "state": DEFAULT_STATE if DEFAULT_STATE in states else state, "states": states}),
            "fitted_at": time.time(),
        }
        predictors_store.save_calibration(db, row)

    @classmethod
    def load(cls, db: sqlite_utils.Database, device: str, config: RuntimeConfig,
             state: str = DEFAULT_STATE) -> "Calibration | None":
        """The calibration of ``state``; None when the device has none for that state. A row
        stored before states were kept is returned for any state, with ``state_`` None."""
        check_state(state)
        row = predictors_store.calibration_row(db, device, config)
        if row is None:
            return None
        meta = json.loads(row["meta_json"])
        cal = cls()
        if "states" not in meta:  # stored before states: one map, of an unrecorded state
            d = {"form": row["form"], "coef": json.loads(row["coef_json"]), "n_models": meta["n_models"],
                 "loo_mape": meta["loo_mape"]}
            cal.state_ = None
        elif state in meta["states"]:
            d, cal.state_ = meta["states"][state], state
        else:
            return None
        cal.form_ = d["form"]
        cal.coef_ = np.asarray(d["coef"], dtype=np.float64)
        cal.n_models_ = d["n_models"]
        cal.loo_mape_ = d["loo_mape"]
        cal.range_, cal.ops_ = d.get("range"), d.get("ops")
        cal.layout_ = LayoutCost.from_dict(d.get("layout"))
        return cal

    @staticmethod
    def states(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> list[str]:
        """The states the device has a calibration for (empty: none, or one stored before states)."""
        row = predictors_store.calibration_row(db, device, config)
        return [] if row is None else sorted((json.loads(row["meta_json"]).get("states") or {}).keys())


def model_family(name: str) -> str:
    """The family of a calibration model, from its name: the first part, without the digits
    that end it (``mobilenetv2-224-1.0`` and ``mobilenetv3-large-96``: ``mobilenetv``;
    ``resnet-basic-128-1.5``: ``resnet``; ``vgg13-96-0.75``: ``vgg``)."""
    return name.split("-", 1)[0].rstrip("0123456789") or name


def fit_calibration(db: sqlite_utils.Database, device: str, config: RuntimeConfig, predictor,
                    state: str = DEFAULT_STATE, layout: LayoutCost | None = None) -> Calibration | None:
    """Fit and store the calibration of ``state`` from the device's ``calibration`` models measured
    in that state (None if it has none), on their kernel prices less the layout conversions
    ``layout`` prices (see :func:`model_parts`)."""
    models = measured_models(db, device, config, role="calibration", state=state)
    models = [m for m in models if not predictor.missing(m["kernels"])]
    if not models:
        return None
    prices = [predictor.predict_specs(m["kernels"]) for m in models]
    sums = [model_parts(m["kernels"], p, layout) for m, p in zip(models, prices)]
    cal = Calibration(overhead_ms=run_overhead_ms(predictor))
    cal.state_ = state
    cal.layout_ = layout
    cal.ops_ = sorted({k.op for m in models for k in m["kernels"]})
    cal.fit(
        sums, [len(m["kernels"]) for m in models], [m["measured_ms"] for m in models], [kernel_weights(m["kernels"]) for m in models],
        families=[model_family(m["name"]) for m in models],
    )
    if cal.range_ is not None:  # the span of the kernel sums as predict's interval reads them (before the conversions)
        cal.range_["sum_ms"] = [float(min(sum(p) for p in prices)), float(max(sum(p) for p in prices))]
    cal.save(db, device, config)
    return cal
