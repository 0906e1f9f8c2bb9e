"""Accuracy of a device's kernel predictor on measurements it was not fitted on.

What counts as held out, exactly:

- **kernels**: each measured kernel's out-of-fold prediction from the
  cross-validation at fit time (the regressor that predicted it never saw it).
  Kernels measured after the fit have no such prediction and are only counted.
- **whole models, holdout**: models the build measured but never calibrated on;
  predicted as ``predict`` would (exact table hits where the kernel was measured,
  regressors elsewhere) with the stored calibration.
- **whole models, calibration (leave-one-out)**: each calibration model
  predicted with a calibration refitted without it.
- **whole models, kernels unseen**: every model's kernels predicted out-of-fold
  (as if none of its kernels had been measured), summed, calibrated with the
  stored calibration (leave-one-out for calibration models). The figure closest
  to "a model the device never ran".

All figures come from :func:`edgelat.predictors.metrics.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput
from edgelat.predictors.metrics import report as metrics_report


def _clean(m: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in m.items()}


def predictor_report(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any]:
    """The held-out figures of a device + config predictor (see the module docstring)."""
    from edgelat.devices.registry import Registry
    from edgelat.predictors.calibration import Calibration, kernel_weights, measured_models, model_parts, run_overhead_ms
    from edgelat.predictors.kernel import KernelPredictor, table_specs

    Registry(db).get(device)
    predictor = KernelPredictor.load(db, device, config)
    if predictor is None:
        raise BadInput(
            f"no kernel predictor for device {device!r} with {config.key()}; "
            f"run 'edgelat predictor build --device {device}' first"
        )
    specs, y = table_specs(db, device, config)
    measured = {s.key: (s, float(v)) for s, v in zip(specs, y)}
    held = [(k, measured[k][0].op, measured[k][1], p) for k, p in predictor.cv_pred_.items() if k in measured]
    kernels: dict[str, Any] = {"held_out": "out-of-fold predictions of the cross-validation at fit time"}
    if held:
        yt = np.array([h[2] for h in held])
        yp = np.array([h[3] for h in held])
        kernels["overall"] = _clean(metrics_report(yt, yp))
        kernels["by_type"] = {}
        for op in sorted({h[1] for h in held}):
            idx = [i for i, h in enumerate(held) if h[1] == op]
            kernels["by_type"][op] = {
                **_clean(metrics_report(yt[idx], yp[idx])),
                "regressor": predictor.choice_.get(op),
            }
    lacking = sorted({s.op for s, _ in measured.values()} - set(predictor.ops_))
    kernels["types_without_regressor"] = {op: sum(1 for s, _ in measured.values() if s.op == op) for op in lacking}
    kernels["measured_after_fit"] = sum(
        1 for k, (s, _) in measured.items() if s.op in predictor.ops_ and k not in predictor.cv_pred_
    )
    kernels["points"] = [{"key": k, "type": t, "measured_ms": m, "predicted_ms": p} for k, t, m, p in held]

    cal = Calibration.load(db, device, config)
    all_models = [m for m in measured_models(db, device, config) if not predictor.missing(m["kernels"])]
    cal_models = [m for m in all_models if m["role"] == "calibration"]
    overhead = run_overhead_ms(predictor)
    layout = None if cal is None or cal.is_identity else cal.layout_  # as predict applies it
    prices = {m["model_ref"]: predictor.predict_specs(m["kernels"]) for m in all_models}
    parts = {m["model_ref"]: model_parts(m["kernels"], prices[m["model_ref"]], layout) for m in all_models}

    def refit(models: list[dict[str, Any]]) -> Calibration:
        """The stored form fitted again on ``models``."""
        return Calibration(forms=(cal.form_,), overhead_ms=overhead).fit(
            [parts[m["model_ref"]] for m in models], [len(m["kernels"]) for m in models],
            [m["measured_ms"] for m in models], [kernel_weights(m["kernels"]) for m in models],
        )

    def unseen_parts(m: dict[str, Any]) -> Any:
        """Per-group sums of out-of-fold predictions (None if a kernel has none)."""
        preds = [predictor.cv_pred_.get(s.key) for s in m["kernels"]]
        return None if any(p is None for p in preds) else model_parts(m["kernels"], preds, layout)

    loo = {}
    if cal is not None and cal_models:
        # the stored form, refitted leaving each calibration model out in turn
        loo = {m["model_ref"]: float(p) for m, p in zip(cal_models, refit(cal_models).loo_pred_)}

    def calibrate(value: Any, m: dict[str, Any], exclude: bool) -> float:
        if cal is None or cal.is_identity:
            return float(value.sum())
        n, w = len(m["kernels"]), kernel_weights(m["kernels"])
        if not exclude:
            return float(cal.predict([value], [n], [w])[0])
        others = [o for o in cal_models if o["model_ref"] != m["model_ref"]]
        if not others:
            return float(value.sum())
        return float(refit(others).predict([value], [n], [w])[0])

    rows = []
    for m in all_models:
        is_cal = m["role"] == "calibration"
        total = float(sum(prices[m["model_ref"]]))
        predicted = loo.get(m["model_ref"], total) if is_cal else calibrate(parts[m["model_ref"]], m, False)
        u = unseen_parts(m)
        rows.append(
            {
                "name": m["name"],
                "role": m["role"],
                "measured_ms": m["measured_ms"],
                "kernels_sum_ms": total,
                "predicted_ms": predicted,
                "unseen_predicted_ms": None if u is None else calibrate(u, m, is_cal),
            }
        )

    def block(selected: list[dict[str, Any]], key: str) -> dict[str, Any]:
        pts = [r for r in selected if r[key] is not None]
        if not pts:
            return {"n": 0}
        return _clean(metrics_report([r["measured_ms"] for r in pts], [r[key] for r in pts]))

    holdout = [r for r in rows if r["role"] == "holdout"]
    calib = [r for r in rows if r["role"] == "calibration"]
    return {
        "device": device,
        "config_key": config.key(),
        "runtime": config.runtime,
        "threads": config.threads,
        "kernels": kernels,
        "models": {
            "holdout": block(holdout, "predicted_ms"),
            "calibration_leave_one_out": block(calib, "predicted_ms"),
            "kernels_unseen": block(rows, "unseen_predicted_ms"),
            "uncalibrated_sum": block(rows, "kernels_sum_ms"),
            "rows": rows,
        },
        "calibration": None if cal is None else {"form": cal.form_, "coef": [float(c) for c in cal.coef_], "models": cal.n_models_,
                                                 "layout": None if cal.layout_ is None else cal.layout_.to_dict()},
        "run_overhead_ms": overhead,
    }


def plot_report(rep: dict[str, Any], path: str | Path) -> Path:
    """PNG: predicted vs measured, kernels (held out) and whole models, log-log with ±10% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if not out.resolve().parent.is_dir():
        raise BadInput(f"{out}: directory {out.resolve().parent} does not exist")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    pts = rep["kernels"]["points"]
    ax = axes[0]
    types = sorted({p["type"] for p in pts})
    cmap = plt.get_cmap("tab20")
    for i, t in enumerate(types):
        sel = [p for p in pts if p["type"] == t]
        ax.scatter([p["measured_ms"] for p in sel], [p["predicted_ms"] for p in sel], s=6, alpha=0.6, color=cmap(i % 20), label=t)
    m = rep["kernels"].get("overall", {})
    ax.set_title(f"kernels, out-of-fold (n={m.get('n', 0)}, ±10%: {100 * (m.get('within_10') or 0):.0f}%)")
    rows = rep["models"]["rows"]
    ax2 = axes[1]
    for role, marker in (("calibration", "o"), ("holdout", "s")):
        sel = [r for r in rows if r["role"] == role]
        ax2.scatter([r["measured_ms"] for r in sel], [r["predicted_ms"] for r in sel], marker=marker, label=f"{role} (calibrated{' LOO' if role == 'calibration' else ''})")
        sel_u = [r for r in sel if r["unseen_predicted_ms"] is not None]
        ax2.scatter([r["measured_ms"] for r in sel_u], [r["unseen_predicted_ms"] for r in sel_u], marker=marker, facecolors="none", edgecolors="gray", label=f"{role}, kernels unseen")
    ax2.set_title("whole models")
    for a in axes:
        values = [v for line in a.collections for v in np.asarray(line.get_offsets()).ravel() if v > 0]
        a.set_xlabel("measured (ms)")
        a.set_ylabel("predicted (ms)")
        if not values:
            a.text(0.5, 0.5, "nothing measured yet", ha="center", va="center", transform=a.transAxes)
            continue
        lo, hi = min(values) * 0.8, max(values) * 1.25
        xs = np.array([lo, hi])
        a.plot(xs, xs, "k-", lw=0.8)
        a.plot(xs, xs * 1.1, "k--", lw=0.5)
        a.plot(xs, xs * 0.9, "k--", lw=0.5)
        a.set_xlim(lo, hi)
        a.set_ylim(lo, hi)
        a.set_xscale("log")
        a.set_yscale("log")
        a.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{rep['device']} · {rep['config_key']}")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
