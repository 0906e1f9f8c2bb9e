"""Few-shot adaptation: a new device's arch predictor from a handful of samples.

HELP's observation is that devices differ, but not arbitrarily: the per-choice
costs of one device look like a mix of other devices' costs. We use that
directly, with an empirical-Bayes linear model rather than meta-learning:

1. fit an :class:`~edgelat.predictors.ridge.ArchPredictor` (ridge on
   log-latency) on each *source* device that has many measurements;
2. the source devices' coefficient vectors give a Gaussian prior over the new
   device's coefficients (their mean, their covariance plus a small ridge so
   the device may leave their span);
3. with the K target samples, pick the prior scale and the noise level that
   maximise the marginal likelihood (a small grid; no held-out data needed,
   which K = 10 could not spare) and take the posterior mean.

The result is again a linear model on the encoding, so it predicts as fast as
the plain ridge and persists the same way. With many target samples the
likelihood dominates and it becomes the device's own fit.

On NAS-Bench-201 (README protocol, ``benchmarks/help_fewshot.py``) 10 samples
reach a mean Spearman of about 0.95 over the 21 columns, against about 0.80 for
a ridge on the other devices' log-latencies plus a one-hot encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import sqlite_utils

from edgelat.errors import BadInput
from edgelat.lut import archs_store
from edgelat.predictors.ridge import ALPHAS, ArchPredictor, LinearLogModel, check_xy, single_blas_thread

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.spaces.space import SearchSpace

NOISE_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, -0.5, 15))  # variance of log-latency
SCALE_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-1, 1, 9))  # multiplies the prior covariance
MIN_SOURCE_SAMPLES = 30


class FewShotPredictor(LinearLogModel):
    """Empirical-Bayes ridge whose prior comes from other devices' predictors.

    ``fit(X, y_ms, sources)`` takes the target device's encoded samples and a
    mapping ``name -> (X_source, y_source_ms)`` (or a fitted
    :class:`~edgelat.predictors.ridge.LinearLogModel`) with at least two
    sources. Fitted state: ``coef_``, ``intercept_``, ``noise_`` (variance of
    log-latency), ``prior_scale_``, ``source_names_``, ``n_samples_``.
    """

    kind = "fewshot"

    def __init__(
        self,
        space: "SearchSpace | None" = None,
        jitter: float = 1e-3,
        noise_grid: Sequence[float] = NOISE_GRID,
        scale_grid: Sequence[float] = SCALE_GRID,
        source_alphas: Sequence[float] = ALPHAS,
    ) -> None:
        self.space = space
        self.jitter = jitter
        self.noise_grid = noise_grid
        self.scale_grid = scale_grid
        self.source_alphas = source_alphas

    # ------------------------------------------------------------------ prior
    def _source_coefs(self, sources: Mapping[str, Any], n_features: int) -> tuple[list[str], np.ndarray]:
        names, coefs = [], []
        for name, src in sources.items():
            if isinstance(src, LinearLogModel):
                model = src
            else:
                Xs, ys = src
                model = ArchPredictor(self.space, alphas=self.source_alphas).fit(Xs, ys)
            if model.coef_.shape[0] != n_features:
                raise BadInput(
                    f"source {name!r} has {model.coef_.shape[0]} features, the target {n_features}"
                )
            names.append(str(name))
            coefs.append(model.coef_)
        if len(coefs) < 2:
            raise BadInput(
                f"few-shot needs at least 2 other devices with >= {MIN_SOURCE_SAMPLES} measurements "
                f"in the space, found {len(coefs)}; import some with 'edgelat lut import-archs'"
            )
        return names, np.asarray(coefs)

    def fit(self, X: Any, y_ms: Any, sources: Mapping[str, Any]) -> "FewShotPredictor":
        X, y = check_xy(X, y_ms)
        assert y is not None
        n, F = X.shape
        if n < 2:
            raise BadInput(f"need at least 2 measured architectures on the target device, got {n}")
        with single_blas_thread():
            return self._fit(X, y, sources)

    def _fit(self, X: np.ndarray, y: np.ndarray, sources: Mapping[str, Any]) -> "FewShotPredictor":
        n, F = X.shape
        names, W = self._source_coefs(sources, F)
        mu = W.mean(axis=0)
        S = np.cov(W.T, bias=False).reshape(F, F)
        S = S + self.jitter * max(np.trace(S) / F, 1e-12) * np.eye(F)
        e, Q = np.linalg.eigh(S)
        Wh = Q * np.sqrt(np.maximum(e, 1e-300))  # Wh.T @ inv(S) @ Wh = I

        # Flat prior on the intercept: work with centred data (n - 1 dimensions).
        t = np.log(y)
        xm = X.mean(axis=0)
        Xc = X - xm
        r = (t - t.mean()) - Xc @ mu
        lam, U = np.linalg.eigh(Wh.T @ (Xc.T @ Xc) @ Wh)
        lam = np.maximum(lam, 0.0)
        T = Wh @ U  # T.T @ inv(S) @ T = I and T.T @ Xc.T @ Xc @ T = diag(lam)
        beta = T.T @ (Xc.T @ r)
        rr = float(r @ r)

        # log marginal likelihood on the whole (scale, noise) grid at once
        tau = np.asarray(self.scale_grid, dtype=np.float64)[:, None, None]
        s2 = np.asarray(self.noise_grid, dtype=np.float64)[None, :, None]
        d = 1.0 / tau + lam[None, None, :] / s2  # eigenvalues of the posterior precision
        ll = -0.5 * (
            (n - 1) * np.log(s2[..., 0])
            + np.log1p(tau * lam[None, None, :] / s2).sum(axis=-1)
            + rr / s2[..., 0]
            - (beta**2 / d).sum(axis=-1) / s2[..., 0] ** 2
        )
        i, j = np.unravel_index(int(np.argmax(ll)), ll.shape)
        tau_b, s2_b = float(self.scale_grid[i]), float(self.noise_grid[j])
        d_b = 1.0 / tau_b + lam / s2_b
        w = mu + T @ (beta / d_b) / s2_b
        self.noise_, self.prior_scale_ = s2_b, tau_b
        self.coef_ = w
        self.intercept_ = float(t.mean() - xm @ w)
        self.source_names_ = names
        self.n_samples_ = n
        return self

    def _state(self) -> dict[str, Any]:
        return {
            "noise": self.noise_,
            "prior_scale": self.prior_scale_,
            "sources": self.source_names_,
            "n_samples": self.n_samples_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: "SearchSpace | None" = None) -> "FewShotPredictor":
        m = cls(space)
        m.coef_ = np.asarray(d["coef"], dtype=np.float64)
        m.intercept_ = float(d["intercept"])
        m.noise_ = float(d.get("noise", 0.0))
        m.prior_scale_ = float(d.get("prior_scale", 1.0))
        m.source_names_ = list(d.get("sources", []))
        m.n_samples_ = int(d.get("n_samples", 0))
        return m


def source_sets(
    db: sqlite_utils.Database,
    space: "SearchSpace",
    exclude_device: str,
    min_samples: int = MIN_SOURCE_SAMPLES,
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Other devices' measured architectures in the space: ``name -> (archs, latencies ms)``.

    Imported rows of each device, and each (device, runtime config) measured
    here; groups with fewer than ``min_samples`` rows are left out (too few
    to fit the device's own predictor, so they would add noise to the prior).
    """
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for dev in archs_store.imported_devices(db, space.name, exclude=exclude_device):
        rows = archs_store.measured_archs(db, space.name, dev, None)
        if len(rows) >= min_samples:
            archs = sorted(rows)
            out[dev] = (archs, np.array([rows[a] for a in archs]))
    for dev, cfg, count in archs_store.profiled_groups(db, space.name, exclude=exclude_device):
        if count < min_samples:
            continue
        rows = archs_store.measured_archs(db, space.name, dev, cfg, imported=False)
        archs = sorted(rows)
        out[f"{dev}[{cfg}]"] = (archs, np.array([rows[a] for a in archs]))
    return out
