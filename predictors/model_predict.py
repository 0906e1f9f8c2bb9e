"""Predict a model file's latency on a device from its kernels (the predict side: no device, no registry).

The file is split into kernels with the device's fusion verdicts
(:mod:`edgelat.predictors.graph`), each kernel is answered from the device's
table (exact hit) or its type's regressor (:mod:`edgelat.predictors.kernel`),
the kernels are summed and the sum is calibrated to whole-model latency
(:mod:`edgelat.predictors.calibration`) when the device has a calibration.

Everything here reads tables and fitted predictors only. Kernels nothing can
answer -- a catalog type without a regressor, or a node outside the catalog --
are listed on the :class:`ModelQuery` (``missing``, ``unmeasured``); measuring
them on the device is the caller's option (:mod:`edgelat.on_demand` measures
them through the job runner, then asks again). Unanswered, :func:`answer`
raises BadInput naming them. Never a silent zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, CorruptModel
from edgelat.lut.store import kernel_medians, model_median
from edgelat.predictors.fusion import FusionRules
from edgelat.predictors.graph import Split, UnknownKernel, split_model
from edgelat.predictors.speed import SpeedCheck, block_share, scaled
from edgelat.predictors.uncertainty import coverage, interval, kernel_sd_ms, unsure_kernels
from edgelat.profiler.intake import ModelFile, model_ref_for, read_model
from edgelat.profiler.ops import KernelSpec


@dataclass
class ModelQuery:
    """A model file split for one device + config, with the predictor that prices its kernels."""

    device: str
    config: RuntimeConfig
    model: ModelFile
    split: Split
    rules: FusionRules
    predictor: Any  # KernelPredictor
    missing: list[str] = field(default_factory=list)  # catalog kernel keys no row and no regressor answers
    unmeasured: list[UnknownKernel] = field(default_factory=list)  # graph kernels outside the catalog, no row

    @property
    def unknown(self) -> list[UnknownKernel]:
        """The graph kernels outside the catalog, one per key."""
        return list({u.key: u for u in self.split.unknown}.values())

    def unanswered(self, why: str) -> BadInput:
        """The error naming the kernels nothing can answer, and ``why`` they were not measured."""
        names = self.missing + [f"{u.name} ({u.op_type})" for u in self.unmeasured]
        types = [k.partition(":")[0] for k in self.missing] + [u.type for u in self.unmeasured]
        return _unreachable(self.device, names, types, why)


def _graph_rows(db: sqlite_utils.Database, device: str, config: RuntimeConfig, keys: list[str]) -> dict[str, float]:
    """Measured medians of non-catalog graph kernels (stored with op ``graph:<OpType>``)."""
    return kernel_medians(db, device, config, keys)


def _price(split: Split, predictor: Any, graph_ms: dict[str, float], measured_now: list[str]) -> list[dict[str, Any]]:
    """One row per split item: key, type, predicted_ms, exact_table_hit, source, nodes."""
    kernel_ms = predictor.predict_specs(split.kernels) if split.kernels else []
    hits = predictor.hits(split.kernels) if split.kernels else []
    now = set(measured_now)
    rows, k = [], 0
    for item, nodes in zip(split.items, split.sources):
        if isinstance(item, KernelSpec):
            row = {"key": item.key, "type": item.op, "predicted_ms": float(kernel_ms[k]), "exact_table_hit": bool(hits[k])}
            k += 1
        else:
            row = {"key": item.key, "type": item.type, "predicted_ms": graph_ms[item.key], "exact_table_hit": True}
        row["source"] = "measured-now" if row["key"] in now else ("table" if row["exact_table_hit"] else "regressor")
        row["nodes"] = nodes
        rows.append(row)
    return rows


def _unreachable(device: str, names: list[str], types: list[str], why: str) -> BadInput:
    from collections import Counter

    counts = ", ".join(f"{t} x{n}" for t, n in Counter(types).items())
    shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    return BadInput(
        f"{len(names)} kernel(s) have no measurement and no regressor on {device} ({counts}: {shown}) "
        f"and the device cannot measure them now ({why})"
    )


def prepare(db: sqlite_utils.Database, device: str, config: RuntimeConfig, path: str | Path) -> ModelQuery:
    """Read and split a model file for ``device`` + ``config`` and find what the tables cannot answer."""
    from edgelat.predictors.fusion import load_rules
    from edgelat.predictors.kernel import KernelPredictor, table_specs

    model = read_model(path)  # every file it references, as the self-contained bytes a device would run
    rules = load_rules(db, device, config)
    try:
        split: Split = split_model(model.data, model.format, rules)
    except (BadInput, CorruptModel) as exc:  # the splitter sees bytes only: name the file
        raise type(exc)(f"{model.path}: {exc}") from None
    split.notes = model.notes + split.notes
    if not split.items:
        raise BadInput(f"{model.path}: the model has no operators to predict")
    predictor = KernelPredictor.load(db, device, config)
    if predictor is None:  # nothing built: use whatever the table holds, exact hits first
        specs, y = table_specs(db, device, config)
        predictor = KernelPredictor().fit(specs, y)
    query = ModelQuery(device, config, model, split, rules, predictor)
    _find_unanswered(db, query)
    return query


def _find_unanswered(db: sqlite_utils.Database, query: ModelQuery) -> None:
    query.missing = list(dict.fromkeys(s.key for s in query.predictor.missing(query.split.kernels)))
    unknown = query.unknown
    have = _graph_rows(db, query.device, query.config, [u.key for u in unknown])
    query.unmeasured = [u for u in unknown if u.key not in have]


def reload_table(db: sqlite_utils.Database, query: ModelQuery) -> None:
    """Read the device's table again (after the caller measured kernels) and update what is unanswered."""
    from edgelat.predictors.kernel import table_specs

    specs, y = table_specs(db, query.device, query.config)
    query.predictor.table_ = {s.key: float(v) for s, v in zip(specs, y)}
    _find_unanswered(db, query)


def kernel_rows(db: sqlite_utils.Database, query: ModelQuery, measured_now: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One priced row per split item (key, type, predicted_ms, exact_table_hit, source, nodes)."""
    graph_ms = _graph_rows(db, query.device, query.config, [u.key for u in query.unknown])
    return _price(query.split, query.predictor, graph_ms, list(measured_now))


def unsure_keys(db: sqlite_utils.Database, query: ModelQuery) -> list[str]:
    """The regressor-priced kernels that make the interval wide (what ``--measure-if-unsure`` measures)."""
    rows = kernel_rows(db, query)
    return unsure_kernels(rows, kernel_sd_ms(rows, query.predictor))


def answer(db: sqlite_utils.Database, query: ModelQuery, measured_now: Sequence[str] = (),
           why_unmeasured: str = "measuring on demand was turned off", state: str = "warm",
           speed: SpeedCheck | None = None) -> dict[str, Any]:
    """The prediction (see :func:`predict_model_file`); ``measured_now`` are the keys the caller
    measured for it. Kernels nothing answers raise BadInput with ``why_unmeasured``. ``state``
    (``warm``, what ``profile model`` measures, or ``sustained``, what ``profile model
    --sustained`` measures; :mod:`edgelat.profiler.states`) picks the calibration and the
    measured row compared; the answer's ``state`` says it. ``speed``: the caller's speed check
    (:mod:`edgelat.predictors.speed`): with a factor, the figure is the build's times it (kernels
    measured now are first taken back to the build's terms), and the answer's ``speed`` says so."""
    from edgelat.predictors.calibration import Calibration, group_sums, kernel_weights, model_parts
    from edgelat.predictors.layout import saved_conversions
    from edgelat.profiler.states import check_state, state_ref

    check_state(state)
    if query.missing or query.unmeasured:
        raise query.unanswered(why_unmeasured)
    device, config, split, predictor = query.device, query.config, query.split, query.predictor
    rows = kernel_rows(db, query, measured_now)
    total = sum(r["predicted_ms"] for r in rows)
    notes = list(split.notes)
    cal = Calibration.load(db, device, config, state)
    if cal is None and Calibration.states(db, device, config):
        notes.append(f"no {state} calibration on {device} (it has {', '.join(Calibration.states(db, device, config))}): "
                     "the kernel sum is not calibrated; rebuild with 'edgelat predictor build'")
    elif cal is not None and cal.state_ is None:
        notes.append("the calibration was fitted before states were recorded (on settled whole models); "
                     "rebuild with 'edgelat predictor build' for one per state")
    calibrated = cal is not None and not cal.is_identity
    factor = None
    if speed is not None and speed.factor is not None:
        factor = speed.factor_for(block_share(group_sums(split.items, [r["predicted_ms"] for r in rows])))
    build_ms = scaled([r["predicted_ms"] for r in rows], [r["source"] for r in rows], factor)
    layout = cal.layout_ if calibrated else None
    parts = model_parts(split.items, build_ms, layout, split.links)
    latency = float(cal.predict([parts], [len(rows)], [kernel_weights(split.items)])[0]) if calibrated else sum(build_ms)
    latency *= factor or 1.0
    if speed is not None and speed.note:
        notes.append(speed.note)

    low, high, interval_note = interval(latency, rows, kernel_sd_ms(rows, predictor), cal)
    measured = model_median(db, device, config, state_ref(model_ref_for(query.model.data), state))
    out: dict[str, Any] = {
        "device": device,
        "runtime": config.runtime,
        "threads": config.threads,
        "provider": config.provider,
        "config_key": config.key(),
        "model": str(query.model.path),
        "format": query.model.format,
        "latency_ms": latency,
        "state": state,
        "latency_ms_low": low,
        "latency_ms_high": high,
        "interval": interval_note,
        "coverage": coverage(rows),
        "kernels_sum_ms": total,
        "calibrated": calibrated,
        "calibration": {"form": cal.form_, "coef": [float(c) for c in cal.coef_]} if calibrated else None,
        "speed": None if speed is None else {**speed.to_dict(), "applied": factor},
        # the layout conversions the kernels' alone prices hold and the model does not make,
        # taken off before the calibration (None: the calibration takes none off)
        "layout": None if layout is None else {
            "conversions_not_made": int(sum(c for c, _ in saved_conversions(split.items, split.links))),
            "saved_ms": float(sum(build_ms) - parts.sum()),
            "per_element_ms": layout.per_element_ms,
        },
        "fusion_rules": query.rules.source,
        "kernels": rows,
        "exact_hits": int(sum(r["exact_table_hit"] for r in rows)),
        "measured_now": list(measured_now),
        "layout_ops": split.layout,
        "notes": notes,
    }
    if measured is not None:
        out["measured_ms"] = measured
    return json.loads(json.dumps(out))


def predict_model_file(db: sqlite_utils.Database, device: str, config: RuntimeConfig, path: str | Path,
                       state: str = "warm") -> dict[str, Any]:
    """Predicted latency of a model file on ``device`` + ``config``, from the tables alone.

    Returns ``device``, ``runtime``, ``config_key``, ``format``, ``latency_ms``
    (calibrated when ``calibrated``), ``kernels_sum_ms``, ``kernels`` (in order:
    key, type, predicted_ms, exact_table_hit, source, nodes), ``measured_now``
    (keys the caller measured for it; empty here), ``layout_ops`` (zero-cost
    views), ``notes``, and ``measured_ms`` when this exact file was measured
    whole on the device; ``latency_ms_low``/``latency_ms_high`` (a 90%
    interval, ``None`` without a basis, see :mod:`edgelat.predictors.uncertainty`)
    and ``coverage`` (share of the kernel total from table hits, regressors and
    kernels measured now), ``speed`` (the caller's speed check, see :func:`answer`; None here).
    Kernels nothing answers raise BadInput; measuring
    them first is :func:`edgelat.on_demand.predict_model_file`. ``state``: see :func:`answer`.
    """
    return answer(db, prepare(db, device, config, path), state=state)
