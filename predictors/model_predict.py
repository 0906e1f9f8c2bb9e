"""Predict a model file's latency on a device from its kernels.

The file is split into kernels with the device's fusion verdicts
(:mod:`edgelat.predictors.graph`), each kernel is answered from the device's
table (exact hit) or its type's regressor (:mod:`edgelat.predictors.kernel`),
the kernels are summed and the sum is calibrated to whole-model latency
(:mod:`edgelat.predictors.calibration`) when the device has a calibration.

Kernels nothing can answer -- a catalog type without a regressor, or a node
outside the catalog -- are measured on the device there and then when it can
be reached (and stored in its table, so the next query is an exact hit). When
it cannot, BadInput names them. Never a silent zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils

from edgelat.agents.types import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, EdgelatError
from edgelat.predictors.graph import Split, UnknownKernel, split_model
from edgelat.predictors.uncertainty import coverage, interval, kernel_sd_ms, unsure_kernels
from edgelat.profiler.intake import read_model
from edgelat.profiler.ops import KernelSpec


def _graph_rows(db: sqlite_utils.Database, device: str, config: RuntimeConfig, keys: list[str]) -> dict[str, float]:
    """Measured medians of non-catalog graph kernels (stored with op ``graph:<OpType>``)."""
    if not keys:
        return {}
    marks = ",".join("?" for _ in keys)
    rows = db.execute(
        f"select kernel_key, median_ms from kernel_measurements where device = ? and config_key = ? "
        f"and kernel_key in ({marks}) and median_ms is not null",
        [device, config.key(), *keys],
    ).fetchall()
    return {k: float(v) for k, v in rows}


def _measure_unknown(db, device: str, client, config: RuntimeConfig, kernels: list[UnknownKernel], protocol) -> None:
    from edgelat.lut.store import add_kernel_result

    items, by_tag = [], {}
    for u in kernels:
        if not u.model:
            raise BadInput(f"cannot cut node {u.name} ({u.op_type}) out of the model to measure it")
        items.append(BenchmarkItem(client.put_model(u.model), u.fmt, u.key))
        by_tag[u.key] = u
    for result in client.benchmark_batch(items, config, protocol):
        u = by_tag[result.tag]
        if not result.ok or result.latency is None:
            raise BadInput(f"measuring node {u.name} ({u.op_type}) on {device} failed: {result.error}")
        add_kernel_result(db, device, u.key, u.type, {**u.to_dict(), "signature": u.signature}, result)


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


def predict_model_file(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig,
    path: str | Path,
    client=None,
    measure_missing: bool = True,
    protocol: MeasurementProtocol | None = None,
    measure_if_unsure: bool = False,
    state: str = "warm",
) -> dict[str, Any]:
    """Predicted latency of a model file on ``device`` + ``config``.

    Returns ``device``, ``runtime``, ``config_key``, ``format``, ``latency_ms``
    (calibrated when ``calibrated``), ``kernels_sum_ms``, ``kernels`` (in order:
    key, type, predicted_ms, exact_table_hit, source, nodes), ``measured_now``
    (keys measured by this call), ``layout_ops`` (zero-cost views), ``notes``,
    and ``measured_ms`` when this exact file was measured whole on the device;
    ``latency_ms_low``/``latency_ms_high`` (a 90% interval, ``None`` without a
    basis, see :mod:`edgelat.predictors.uncertainty`) and ``coverage`` (share of
    the kernel total from table hits, regressors and kernels measured now).
    ``measure_if_unsure`` first measures on the device the regressor-priced
    kernels that make the interval wide, stores them, and answers from them.
    ``state`` (``warm``, what ``profile model`` measures, or ``sustained``, what
    ``profile model --sustained`` measures; see :mod:`edgelat.profiler.states`) picks
    the calibration and the measured row compared; the answer's ``state`` says it.
    """
    from edgelat.devices.registry import Registry
    from edgelat.predictors.calibration import Calibration, group_sums, kernel_weights
    from edgelat.predictors.fusion import load_rules
    from edgelat.predictors.kernel import KernelPredictor, table_specs
    from edgelat.predictors.sampling import KERNEL_PROTOCOL
    from edgelat.profiler.states import check_state, state_ref

    check_state(state)

    registry = Registry(db)
    registry.get(device)  # UnknownDevice before anything else
    model = read_model(path)  # every file it references, as the self-contained bytes a device would run
    p, data, fmt = model.path, model.data, model.format
    rules = load_rules(db, device, config)
    try:
        split: Split = split_model(data, fmt, rules)
    except (BadInput, CorruptModel) as exc:  # the splitter sees bytes only: name the file
        raise type(exc)(f"{p}: {exc}") from None
    split.notes = model.notes + split.notes
    if not split.items:
        raise BadInput(f"{p}: the model has no operators to predict")

    predictor = KernelPredictor.load(db, device, config)
    if predictor is None:  # nothing built: use whatever the table holds, exact hits first
        specs, y = table_specs(db, device, config)
        predictor = KernelPredictor().fit(specs, y)

    missing = list(dict.fromkeys(s.key for s in predictor.missing(split.kernels)))
    unknown = list({u.key: u for u in split.unknown}.values())
    unmeasured = [u for u in unknown if u.key not in _graph_rows(db, device, config, [u.key for u in unknown])]
    measured_now: list[str] = []
    if missing or unmeasured:
        names = missing + [f"{u.name} ({u.op_type})" for u in unmeasured]
        types = [k.partition(":")[0] for k in missing] + [u.type for u in unmeasured]
        if not measure_missing:
            raise _unreachable(device, names, types, "measuring on demand was turned off")
        if unmeasured and fmt != config.model_format:
            raise _unreachable(device, names, types, f"nodes of a {fmt} file cannot run on {config.runtime}")
        own_client = client is None
        try:
            if own_client:
                client = registry.connect(device)
            from edgelat.profiler.jobs import profile_kernels

            proto = protocol or KERNEL_PROTOCOL
            if missing:
                job = profile_kernels(db, device, client, [KernelSpec.from_key(k) for k in missing], config, proto)
                if job.failed or job.interrupted:
                    why = job.interrupted or "; ".join(f"{k}: {e}" for k, e in job.failed[:3])
                    raise _unreachable(device, names, types, why)
            if unmeasured:
                _measure_unknown(db, device, client, config, unmeasured, proto)
        except BadInput:
            raise
        except EdgelatError as exc:
            raise _unreachable(device, names, types, str(exc)) from None
        finally:
            if own_client and client is not None:
                client.close()
        measured_now = missing + [u.key for u in unmeasured]
        specs, y = table_specs(db, device, config)
        predictor.table_ = {s.key: float(v) for s, v in zip(specs, y)}

    rows = _price(split, predictor, _graph_rows(db, device, config, [u.key for u in unknown]), measured_now)
    if measure_if_unsure:
        unsure = unsure_kernels(rows, kernel_sd_ms(rows, predictor))
        if unsure:
            from edgelat.profiler.jobs import profile_kernels

            own_client = client is None
            try:
                client = registry.connect(device) if own_client else client
                job = profile_kernels(db, device, client, [KernelSpec.from_key(k) for k in unsure], config,
                                      protocol or KERNEL_PROTOCOL, force=True)
            except EdgelatError as exc:
                raise BadInput(f"--measure-if-unsure: cannot measure on {device} now ({exc})") from None
            finally:
                if own_client and client is not None:
                    client.close()
            if job.interrupted:
                raise BadInput(f"--measure-if-unsure: {job.interrupted}")
            failed = {k for k, _ in job.failed}
            measured_now += [k for k in unsure if k not in failed]
            specs, y = table_specs(db, device, config)
            predictor.table_ = {s.key: float(v) for s, v in zip(specs, y)}
            rows = _price(split, predictor, _graph_rows(db, device, config, [u.key for u in unknown]), measured_now)
    total = sum(r["predicted_ms"] for r in rows)
    cal = Calibration.load(db, device, config, state)
    if cal is None and Calibration.states(db, device, config):
        split.notes.append(f"no {state} calibration on {device} (it has {', '.join(Calibration.states(db, device, config))}): "
                           "the kernel sum is not calibrated; rebuild with 'edgelat predictor build'")
    elif cal is not None and cal.state_ is None:
        split.notes.append("the calibration was fitted before states were recorded (on settled whole models); "
                           "rebuild with 'edgelat predictor build' for one per state")
    calibrated = cal is not None and not cal.is_identity
    parts = group_sums(split.items, [r["predicted_ms"] for r in rows])
    latency = float(cal.predict([parts], [len(rows)], [kernel_weights(split.items)])[0]) if calibrated else total

    low, high, interval_note = interval(latency, rows, kernel_sd_ms(rows, predictor), cal)

    from edgelat.profiler.jobs import model_ref_for

    measured = db.execute(
        "select median_ms from model_measurements where device = ? and config_key = ? and model_ref = ?",
        [device, config.key(), state_ref(model_ref_for(data), state)],
    ).fetchone()
    out: dict[str, Any] = {
        "device": device,
        "runtime": config.runtime,
        "threads": config.threads,
        "provider": config.provider,
        "config_key": config.key(),
        "model": str(p),
        "format": fmt,
        "latency_ms": latency,
        "state": state,
        "latency_ms_low": low,
        "latency_ms_high": high,
        "interval": interval_note,
        "coverage": coverage(rows),
        "kernels_sum_ms": total,
        "calibrated": calibrated,
        "calibration": {"form": cal.form_, "coef": [float(c) for c in cal.coef_]} if calibrated else None,
        "fusion_rules": rules.source,
        "kernels": rows,
        "exact_hits": int(sum(r["exact_table_hit"] for r in rows)),
        "measured_now": measured_now,
        "layout_ops": split.layout,
        "notes": split.notes,
    }
    if measured is not None and measured[0] is not None:
        out["measured_ms"] = float(measured[0])
    return json.loads(json.dumps(out))
