"""The arch-level linear models: latency = exp(encoding @ coef + intercept), fitted as a ridge.

Why a ridge on log-latency: on the public NAS-Bench-201, FBNet and OFA
measurements an architecture's latency is close to a sum of per-choice costs,
so a linear model over the one-hot encoding reaches the measurement noise with
a few hundred samples (MLPs and boosted trees were tried and did worse at that
size), it answers a batch with one matrix product (millions per second), and it
persists as a plain JSON vector. The log target keeps the relative error even
across fast and slow architectures and makes predictions positive.

The penalty is chosen per fit by exact leave-one-out error over a grid (one SVD),
and those leave-one-out predictions are kept as an honest accuracy estimate.
:class:`~edgelat.predictors.fewshot.FewShotPredictor` is the same model with a prior
borrowed from other devices; :mod:`edgelat.predictors.arch` fits and stores them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgelat.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.spaces.space import SearchSpace

ALPHAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def single_blas_thread() -> Any:
    """A context that runs BLAS on one thread.

    The matrices here are small (features x features); on a busy host, OpenBLAS's
    second thread spins against other processes and makes them many times slower
    (figures: docs/measurements.md). Falls back to a no-op without threadpoolctl
    (a scikit-learn dependency).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def check_xy(X: Any, y: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise BadInput(f"expected a 2-D feature matrix, got shape {X.shape}")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != X.shape[0]:
        raise BadInput(f"{X.shape[0]} architectures but {y.shape[0]} latencies")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y <= 0)):
        raise BadInput("latencies must be positive finite milliseconds")
    return X, y


class LinearLogModel:
    """Shared by the arch-level predictors: ``latency = exp(X @ coef_ + intercept_)``."""

    kind = "linear"
    coef_: np.ndarray
    intercept_: float

    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "coef_"):
            raise BadInput(f"{type(self).__name__} is not fitted yet; call fit() first")
        if X.shape[1] != self.coef_.shape[0]:
            raise BadInput(f"expected {self.coef_.shape[0]} features, got {X.shape[1]}")

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency in ms for each row of the encoded batch ``X``."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise BadInput(f"expected a 2-D feature matrix, got shape {X.shape}")
        self._check_fitted(X)
        coef = self.coef_.astype(X.dtype, copy=False) if X.dtype == np.float32 else self.coef_
        return np.exp(X @ coef + self.intercept_).astype(np.float64, copy=False)

    def predict_pop(self, space: "SearchSpace", pop: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of genotypes ``pop`` of ``space``."""
        return self.predict(space.encode(pop))

    # persistence -------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (fitted weights and hyper-parameters)."""
        return {"kind": self.kind, "coef": self.coef_.tolist(), "intercept": float(self.intercept_), **self._state()}


class ArchPredictor(LinearLogModel):
    """Ridge regression on log-latency over an architecture encoding.

    ``alphas`` is the penalty grid searched by exact leave-one-out error.
    Fitted state: ``coef_``, ``intercept_``, ``alpha_``, ``n_samples_``,
    ``loo_pred_`` (leave-one-out predictions in ms, same order as the fit rows).
    """

    kind = "ridge"

    def __init__(self, space: "SearchSpace | None" = None, alphas: Sequence[float] = ALPHAS) -> None:
        self.space = space
        self.alphas = alphas

    def fit(self, X: Any, y_ms: Any) -> "ArchPredictor":
        X, y = check_xy(X, y_ms)
        assert y is not None
        n = X.shape[0]
        if n < 2:
            raise BadInput(f"need at least 2 measured architectures to fit, got {n}")
        with single_blas_thread():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> "ArchPredictor":
        n = X.shape[0]
        t = np.log(y)
        xm, tm = X.mean(axis=0), t.mean()
        Xc, tc = X - xm, t - tm
        # eigen-decomposition of the (F x F) Gram matrix rather than an SVD of X:
        # several times cheaper for n >> F, and it gives exact leave-one-out leverages
        s2, V = np.linalg.eigh(Xc.T @ Xc)
        s2 = np.maximum(s2, 0.0)
        Z = Xc @ V  # (n, F): the rows in the eigenbasis
        Zt = V.T @ (Xc.T @ tc)
        Z2 = Z * Z
        best: tuple[float, float, np.ndarray] | None = None
        for alpha in self.alphas:
            inv = 1.0 / (s2 + alpha)
            fitted = Z @ (inv * Zt)
            lev = Z2 @ inv + 1.0 / n
            resid = (tc - fitted) / np.maximum(1.0 - lev, 1e-9)
            err = float(np.mean(resid**2))
            if best is None or err < best[0]:
                best = (err, float(alpha), t - resid)
        assert best is not None
        _, alpha, loo_log = best
        coef = V @ (Zt / (s2 + alpha))
        self.coef_ = coef
        self.intercept_ = float(tm - xm @ coef)
        self.alpha_ = alpha
        self.n_samples_ = n
        self.loo_pred_ = np.exp(loo_log)
        return self

    def _state(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "n_samples": self.n_samples_}

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: "SearchSpace | None" = None) -> "ArchPredictor":
        m = cls(space)
        m.coef_ = np.asarray(d["coef"], dtype=np.float64)
        m.intercept_ = float(d["intercept"])
        m.alpha_ = float(d.get("alpha", 0.0))
        m.n_samples_ = int(d.get("n_samples", 0))
        return m
