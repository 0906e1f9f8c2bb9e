"""How sure a model-file prediction is: a 90% interval, and what each part of the total rests on.

Two independent sources of error, each from what the build measured out of sample:

- the kernels: a kernel priced by its type's regressor is off by about that regressor's
  out-of-fold error (``KernelPredictor.cv_``, the chosen candidate's MAPE); an exact table
  hit or a kernel measured on the fly is a measurement (its error is left out);
- the map from the kernel sum to the whole model: the calibration's leave-one-out error
  over the build's whole models (``Calibration.loo_mape_`` of the chosen form).

The calibration's error is measured on models like its own calibration models. A model
outside them is extrapolated, so that term is widened (:func:`extrapolation`): by one for
each e-fold (in log) that its kernel sum, kernel count or weights lie beyond the calibration
models' span, plus the share of its kernel total from kernel types none of them holds
(a model entirely of such kernels doubles it).

A MAPE is turned into a standard deviation as for a normal error (sd = MAPE * sqrt(pi/2)),
the two are added in quadrature relative to the total, and the interval is log-normal
(``latency * exp(±1.645 * sd)``), so it never goes below zero. Without a calibration there is
no measured basis for the second term: the interval is then unknown (``None``), not guessed.
Whether the interval covers 90% of real measurements is measured, not assumed:
``benchmarks/real_models_accuracy.py`` prints its coverage.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

Z90 = 1.6449  # two-sided 90% of a normal
SD_PER_MAPE = math.sqrt(math.pi / 2)  # E|e| = sd * sqrt(2/pi) for a normal error e
SOURCES = ("table", "regressor", "measured-now")


def coverage(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of the kernel total from each source (``table``, ``regressor``, ``measured-now``)."""
    total = sum(r["predicted_ms"] for r in rows)
    out = {s: 0.0 for s in SOURCES}
    for r in rows:
        out[r["source"]] += r["predicted_ms"] / total if total > 0 else 0.0
    return {s: round(v, 6) for s, v in out.items()}


def kernel_sd_ms(rows: Sequence[dict[str, Any]], predictor: Any) -> list[float]:
    """Per kernel, the standard deviation (ms) of its price: zero for measurements."""
    out = []
    for r in rows:
        if r["source"] != "regressor":
            out.append(0.0)
            continue
        op = r["type"]
        mape = predictor.cv_.get(op, {}).get(predictor.choice_.get(op, ""), None)
        out.append(float("nan") if mape is None else SD_PER_MAPE * float(mape) * r["predicted_ms"])
    return out


def _weights(rows: Sequence[dict[str, Any]]) -> float:
    """The weights of a model's catalog kernels (from their keys; other nodes count none)."""
    from edgelat.profiler.ops import OP_TYPES, KernelSpec

    return float(sum(KernelSpec.from_key(r["key"]).params() for r in rows if r["type"] in OP_TYPES))


def extrapolation(rows: Sequence[dict[str, Any]], calibration: Any) -> tuple[float, list[str]]:
    """(factor >= 1 on the calibration's error, what lies outside the calibration models):
    see the module docstring. A calibration stored without its span gives 1."""
    span = getattr(calibration, "range_", None) or {}
    total = sum(r["predicted_ms"] for r in rows)
    value = {"sum_ms": total, "kernels": float(len(rows))}
    if "weights" in span:
        value["weights"] = _weights(rows)
    factor, why = 1.0, []
    for name, (lo, hi) in span.items():
        v = value.get(name)
        if v is None or v <= 0 or lo <= 0:
            continue
        out = max(math.log(v / hi), math.log(lo / v), 0.0)
        if out > 0:
            factor += out
            why.append(f"{name.replace('_ms', '')} {v:.4g} outside {lo:.4g}-{hi:.4g}")
    ops = getattr(calibration, "ops_", None)
    if ops is not None and total > 0:
        unseen = sum(r["predicted_ms"] for r in rows if r["type"] not in ops) / total
        if unseen > 0:
            factor += unseen
            why.append(f"{100 * unseen:.0f}% of the kernel total in types no calibration model has")
    return factor, why


def interval(latency_ms: float, rows: Sequence[dict[str, Any]], sd_ms: Sequence[float],
             calibration: Any) -> tuple[float | None, float | None, str]:
    """(low, high, note) of the 90% interval; ``None`` bounds with the reason when there is no basis.

    Kernels with the same key share one error (the same regressor answer repeated), so their
    standard deviations add up; distinct kernels are taken as independent."""
    if calibration is None or calibration.is_identity or not getattr(calibration, "loo_mape_", None):
        return None, None, "no interval: the device has no calibration (run 'edgelat predictor build')"
    if any(math.isnan(s) for s in sd_ms):
        return None, None, "no interval: a regressor has no out-of-fold error recorded (rebuild the predictor)"
    per_key: dict[str, float] = {}
    for r, s in zip(rows, sd_ms):
        per_key[r["key"]] = per_key.get(r["key"], 0.0) + s
    total = sum(r["predicted_ms"] for r in rows)
    factor, outside = extrapolation(rows, calibration)
    cal_sd = SD_PER_MAPE * float(calibration.loo_mape_[calibration.form_]) * factor
    kern_sd = math.sqrt(sum(v * v for v in per_key.values())) / total if total > 0 else 0.0
    rel = math.hypot(cal_sd, kern_sd)
    note = f"90% interval: calibration ±{100 * cal_sd:.1f}% (1 sd), regressor-priced kernels ±{100 * kern_sd:.1f}%"
    if outside:
        note += f"; calibration widened x{factor:.2f}, outside its models: {'; '.join(outside)}"
    return latency_ms * math.exp(-Z90 * rel), latency_ms * math.exp(Z90 * rel), note


def unsure_kernels(rows: Sequence[dict[str, Any]], sd_ms: Sequence[float], share: float = 0.9) -> list[str]:
    """Keys of the regressor-priced kernels that carry ``share`` of the kernels' variance, worst first:
    what ``--measure-if-unsure`` measures."""
    var: dict[str, float] = {}
    for r, s in zip(rows, sd_ms):
        if r["source"] == "regressor" and s > 0 and not math.isnan(s):
            var[r["key"]] = var.get(r["key"], 0.0) + s * s
    total = sum(var.values())
    picked, acc = [], 0.0
    for key, v in sorted(var.items(), key=lambda kv: -kv[1]):
        if acc >= share * total:
            break
        picked.append(key)
        acc += v
    return picked
