"""The calibration beyond MobileNets: the spill term counts only the weights a kernel kept cached
when measured alone, and a model outside the calibration models' span gets a wider interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgelat.predictors.calibration import Calibration, cached_weights, kernel_weights
from edgelat.predictors.uncertainty import extrapolation, interval
from edgelat.profiler import networks
from edgelat.profiler.ops import KernelSpec


def test_a_kernel_larger_than_the_cache_adds_no_spill():
    # each kernel's weights count up to the knot: a kernel that streamed its weights alone too
    # costs a whole model nothing extra
    assert np.allclose(cached_weights([[1e6, 5e6], [40e6], 3e6], 4e6), [5e6, 4e6, 3e6])
    rng = np.random.default_rng(0)
    a, c, e, w0 = 1.05, 0.002, 2e-7, 3e6  # ms per weight beyond the cache
    sums, counts, weights, measured = [], [], [], []
    for _ in range(24):
        kw = list(rng.uniform(0.02e6, 0.5e6, size=int(rng.integers(8, 30))))
        if rng.random() < 0.4:
            kw.append(float(rng.uniform(10e6, 60e6)))  # a large fc head
        s = float(rng.uniform(1, 10))
        sums.append(s)
        counts.append(len(kw))
        weights.append(kw)
        spill = max(0.0, float(np.minimum(kw, w0).sum()) - w0)
        measured.append(a * s + c * len(kw) + e * spill)
    cal = Calibration(forms=("identity", "ratio+count+spill")).fit(sums, counts, measured, weights)
    assert cal.form_ == "ratio+count+spill" and cal.loo_mape_[cal.form_] < 0.02
    # the same data with each model's weights as one total: the large heads look like spill and the fit misses
    flat = Calibration(forms=("identity", "ratio+count+spill")).fit(sums, counts, measured, [sum(w) for w in weights])
    assert flat.loo_mape_.get("ratio+count+spill", 1.0) > 3 * cal.loo_mape_[cal.form_]
    big = [1e6] * 10 + [100e6]
    assert cal.predict([10.0], [11], [big])[0] == pytest.approx(a * 10 + c * 11 + e * (11e6 - w0), rel=0.02)
    assert kernel_weights(networks.vgg_like(64, 0.25, "vgg11", 64)) == [float(k.params()) for k in networks.vgg_like(64, 0.25, "vgg11", 64)]


def _rows(specs, ms):
    return [{"key": s.key, "type": s.op, "predicted_ms": m, "source": "table"} for s, m in zip(specs, ms)]


def test_interval_widens_outside_the_calibration_models():
    sums = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    cal = Calibration(forms=("ratio",)).fit(sums, [20, 22, 24, 26, 28], 1.1 * sums * np.array([1.02, 0.98, 1.0, 1.01, 0.99]),
                                            [[1e6] * 3] * 5)
    cal.ops_ = ["conv2d", "mbconv"]
    assert cal.range_ == {"sum_ms": [2.0, 6.0], "kernels": [20.0, 28.0], "weights": [3e6, 3e6]}
    inside = _rows([KernelSpec("conv2d", 8, 8, 16, 16, kernel=3)] * 24, [4.0 / 24] * 24)
    factor, why = extrapolation(inside, cal)
    # weights are the only thing outside (24 small convs hold less than 3 M weights)
    assert why and all(w.startswith("weights") for w in why)
    cal.range_["weights"] = [1e3, 1e7]
    assert extrapolation(inside, cal) == (1.0, [])
    lo, hi, note = interval(4.4, inside, [0.0] * 24, cal)
    assert "widened" not in note
    # e times the largest kernel sum, and half of it in a type none of the models had
    far = _rows([KernelSpec("conv2d", 8, 8, 16, 16, kernel=3)] * 12 + [KernelSpec("fc", 1, 1, 64, 64)] * 12,
                [6.0 * math.e / 24] * 24)
    factor, why = extrapolation(far, cal)
    assert factor == pytest.approx(1 + 1 + 0.5)
    lo2, hi2, note2 = interval(4.4, far, [0.0] * 24, cal)
    assert math.log(hi2 / 4.4) == pytest.approx(2.5 * math.log(hi / 4.4)) and "widened x2.50" in note2
    cal.range_, cal.ops_ = None, None  # a calibration stored before spans were kept: as before
    assert extrapolation(far, cal) == (1.0, [])


def test_summed_counted_weights_predict_as_the_kernel_list():
    """Search sums per-kernel weights once per architecture: with the knot applied per kernel the
    total gives what predict gives from the kernel list."""
    rng = np.random.default_rng(1)
    kw = [list(rng.uniform(0.02e6, 0.6e6, size=12)) + ([30e6] if i % 3 == 0 else []) for i in range(16)]
    sums = rng.uniform(1, 10, size=16)
    w0 = 2e6
    y = [1.1 * s + 2e-7 * max(0.0, float(np.minimum(w, w0).sum()) - w0) for s, w in zip(sums, kw)]
    cal = Calibration(forms=("ratio+count+spill",)).fit(sums, [len(w) for w in kw], y, kw)
    totals = [float(cal.counted_weights(np.array(w)).sum()) for w in kw]
    assert np.allclose(cal.predict(sums, [len(w) for w in kw], totals), cal.predict(sums, [len(w) for w in kw], kw))
    ratio = Calibration(forms=("ratio",)).fit(sums, [1] * 16, y)
    assert np.array_equal(ratio.counted_weights(np.array([5e6, 1.0])), [5e6, 1.0])
