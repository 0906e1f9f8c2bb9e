"""Accuracy metrics shared by every latency predictor.

One definition of each figure so that ``predictor report``, ``predictor fit``
and the benchmark scripts print numbers that mean the same thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_pred has {p.size}")
    return y, p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, in the unit of the inputs (ms)."""
    y, p = _pair(y_true, y_pred)
    if y.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((p - y) ** 2)))


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean absolute percentage error, as a fraction (0.05 == 5%)."""
    y, p = _pair(y_true, y_pred)
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.abs(p - y) / np.abs(y)))


def within(y_true: Any, y_pred: Any, tol: float = 0.10) -> float:
    """Share of predictions within ``±tol`` (relative) of the measured value."""
    y, p = _pair(y_true, y_pred)
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.abs(p - y) <= tol * np.abs(y)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), like scipy's rankdata."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    # group boundaries of equal values
    new = np.r_[True, sx[1:] != sx[:-1]]
    grp = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], sx.size]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = avg[grp]
    return ranks


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman rank correlation (ties averaged); nan when either side is constant."""
    y, p = _pair(y_true, y_pred)
    if y.size < 2:
        return float("nan")
    ry, rp = _ranks(y), _ranks(p)
    ry -= ry.mean()
    rp -= rp.mean()
    den = np.sqrt((ry * ry).sum() * (rp * rp).sum())
    if den == 0:
        return float("nan")
    return float((ry * rp).sum() / den)


def report(y_true: Any, y_pred: Any) -> dict[str, float | int]:
    """All the figures at once: rmse (ms), mape (fraction), within_5, within_10, spearman, n."""
    y, p = _pair(y_true, y_pred)
    return {
        "rmse": rmse(y, p),
        "mape": mape(y, p),
        "within_5": within(y, p, 0.05),
        "within_10": within(y, p, 0.10),
        "spearman": spearman(y, p),
        "n": int(y.size),
    }
