"""Every calibration form, fitted on a built predictor's whole models: what ``docs/calibration.md`` cites.

Reads a database in which ``edgelat predictor build`` (or
``benchmarks/kernel_predictor_accuracy.py``) has run, and refits each candidate
form of :class:`~edgelat.predictors.calibration.Calibration` alone on the
device's ``calibration`` models, exactly as the build compares them. Prints, per
form: leave-one-out MAPE, the share of models within ±10% leave-one-out, and the
coefficients fitted on all models (for ``ratio+count+spill`` the knot ``W0`` in
millions of weights and ``e`` in ms per million weights, with the fp32 bandwidth
that implies). Then, per model: the measured whole-model latency against its
kernels' sum. Nothing is measured.

    python benchmarks/calibration_forms.py --home /tmp/kp [--device local] [--threads 1]
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="EDGELAT_HOME holding the built predictor")
    ap.add_argument("--device", default="local")
    ap.add_argument("--threads", type=int, default=1, help="the runtime config the build used")
    args = ap.parse_args()
    os.environ["EDGELAT_HOME"] = args.home

    from edgelat.values import RuntimeConfig
    from edgelat.lut.store import open_db
    from edgelat.predictors.calibration import (
        FORMS,
        GROUPS,
        Calibration,
        group_sums,
        measured_models,
        kernel_weights,
        run_overhead_ms,
    )
    from edgelat.predictors.kernel import KernelPredictor

    db = open_db()
    config = RuntimeConfig(threads=args.threads)
    predictor = KernelPredictor.load(db, args.device, config)
    if predictor is None:
        raise SystemExit(f"no predictor built for {args.device!r} ({config.key()}) in {args.home}")
    models = [m for m in measured_models(db, args.device, config, role="calibration") if not predictor.missing(m["kernels"])]
    if not models:
        raise SystemExit("no calibration model with a measurement and every kernel predicted")
    sums = [group_sums(m["kernels"], predictor.predict_specs(m["kernels"])) for m in models]
    counts = [len(m["kernels"]) for m in models]
    y = np.array([m["measured_ms"] for m in models])
    weights = [kernel_weights(m["kernels"]) for m in models]
    overhead = run_overhead_ms(predictor)
    print(f"{args.device} ({config.key()}): {len(models)} calibration models; run overhead "
          f"{'unknown' if overhead is None else f'{overhead:.4f} ms'}")
    print(f"{'form':<18} {'LOO MAPE':>8} {'LOO w10':>8}  coefficients (fitted on all models)")
    for form in FORMS:
        cal = Calibration(forms=(form,), overhead_ms=overhead).fit(sums, counts, y, weights)
        if form not in cal.loo_mape_:
            print(f"{form:<18} {'-':>8} {'-':>8}  (not enough models, or no run overhead)")
            continue
        within = float(np.mean(np.abs(cal.loo_pred_ - y) / y <= 0.10))
        coef = ", ".join(f"{c:.4g}" for c in cal.coef_)
        print(f"{form:<18} {cal.loo_mape_[form]:8.1%} {within:8.1%}  [{coef}]")
        if form == "ratio+count+spill":
            a, c, e, w0 = cal.coef_
            per_m = e * 1e6  # ms per million weights
            gbps = 4.0 / per_m if per_m > 0 else float("nan")  # 4 MB of fp32 in per_m ms
            print(f"{'':<37}  W0 = {w0 / 1e6:.2f} M weights ({4 * w0 / 1e6:.0f} MB fp32), "
                  f"e = {per_m:.3f} ms per M weights ({gbps:.0f} GB/s)")
        if form.startswith("groups"):
            print(f"{'':<37}  group factors: " + ", ".join(f"{g} {v:.3g}" for g, v in zip(GROUPS, cal.coef_)))
    print(f"\n{'model':<28} {'weights':>9} {'kernels':>8} {'sum ms':>9} {'whole ms':>9} {'whole-sum':>10}")
    for m, s, w, v in zip(models, sums, weights, y):
        print(f"{m['name']:<28} {w / 1e6:8.2f}M {len(m['kernels']):>8} {s.sum():9.3f} {v:9.3f} {v - s.sum():+10.3f}")


if __name__ == "__main__":
    main()
