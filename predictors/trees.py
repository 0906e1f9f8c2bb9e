"""Fitted tree ensembles as plain arrays: stored as data, evaluated with numpy.

A scikit-learn forest or gradient-boosting regressor is copied, once fitted, into
flat node arrays (children, split feature, threshold, leaf value). Those arrays are
what a kernel predictor stores, so loading one reads numbers and never runs code
(no pickle), and what it predicts with, so a stored predictor answers exactly as
it did before it was saved. Splits compare the features as float32, as
scikit-learn's trees do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TreeEnsemble:
    """``base + scale * (sum or mean over trees of the leaf value)`` for each sample."""

    left: np.ndarray  # int32, global node index of the left child; -1 at a leaf
    right: np.ndarray  # int32
    feature: np.ndarray  # int32, split feature (unused at a leaf)
    threshold: np.ndarray  # float64: go left when x[feature] <= threshold
    value: np.ndarray  # float64 leaf values
    roots: np.ndarray  # int32, the root node of each tree
    base: float = 0.0
    scale: float = 1.0
    mean: bool = False  # average the trees (a forest) instead of summing them (boosting)

    @classmethod
    def from_sklearn(cls, trees: list[Any], base: float = 0.0, scale: float = 1.0, mean: bool = False) -> "TreeEnsemble":
        """From fitted scikit-learn decision-tree regressors (single output)."""
        left, right, feature, threshold, value, roots = [], [], [], [], [], []
        offset = 0
        for est in trees:
            t = est.tree_
            lo, ro = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
            left.append(np.where(lo >= 0, lo + offset, -1))
            right.append(np.where(ro >= 0, ro + offset, -1))
            feature.append(np.maximum(t.feature, 0))
            threshold.append(t.threshold)
            value.append(t.value[:, 0, 0])
            roots.append(offset)
            offset += t.node_count
        return cls(
            left=np.concatenate(left).astype(np.int32),
            right=np.concatenate(right).astype(np.int32),
            feature=np.concatenate(feature).astype(np.int32),
            threshold=np.concatenate(threshold).astype(np.float64),
            value=np.concatenate(value).astype(np.float64),
            roots=np.asarray(roots, dtype=np.int32),
            base=float(base),
            scale=float(scale),
            mean=mean,
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        n = X.shape[0]
        node = np.repeat(self.roots[:, None], n, axis=1)
        rows = np.arange(n)[None, :]
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                break
            go_left = X[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        leaves = self.value[node]
        total = leaves.mean(axis=0) if self.mean else leaves.sum(axis=0)
        return self.base + self.scale * total

    # ---------------------------------------------------------------- as data
    ARRAYS = ("left", "right", "feature", "threshold", "value", "roots")

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The node arrays, keyed ``prefix + name`` (for one ``.npz``)."""
        return {prefix + k: getattr(self, k) for k in self.ARRAYS}

    def scalars(self) -> dict[str, Any]:
        return {"base": self.base, "scale": self.scale, "mean": self.mean}

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str, scalars: dict[str, Any]) -> "TreeEnsemble":
        """Rebuild from :meth:`arrays` and :meth:`scalars`, checking that the nodes
        are consistent (every child index inside the arrays), so a damaged row
        fails here instead of deep in a prediction."""
        got = {k: np.asarray(arrays[prefix + k]) for k in cls.ARRAYS}
        n = len(got["left"])
        if any(len(got[k]) != n for k in ("right", "feature", "threshold", "value")):
            raise ValueError("tree arrays of different lengths")
        for k in ("left", "right", "roots"):
            a = got[k]
            if a.dtype.kind not in "iu" or (a.size and (a.max() >= n or a.min() < (0 if k == "roots" else -1))):
                raise ValueError(f"tree array {k} points outside the tree")
        if np.any((got["left"] < 0) != (got["right"] < 0)):
            raise ValueError("a tree node has one child")
        idx = np.arange(n)
        inner = got["left"] >= 0
        if np.any(got["left"][inner] <= idx[inner]) or np.any(got["right"][inner] <= idx[inner]):
            raise ValueError("a tree node points back up its tree")  # a cycle would never end
        return cls(
            left=got["left"].astype(np.int32),
            right=got["right"].astype(np.int32),
            feature=got["feature"].astype(np.int32),
            threshold=got["threshold"].astype(np.float64),
            value=got["value"].astype(np.float64),
            roots=got["roots"].astype(np.int32),
            base=float(scalars["base"]),
            scale=float(scalars["scale"]),
            mean=bool(scalars["mean"]),
        )
