"""The accuracy side of the search objective: pluggable, and honest about proxies.

Three ways to score an architecture (higher is better), all vectorised over a
population:

- :class:`ProxyScore` (the default): ``log10(FLOPs) + log10(params)``. Within
  one space a bigger network is, on average, a more accurate one (true of
  OFA's accuracy predictor and of NAS-Bench-201), so this is the
  "biggest network that fits the budget" objective. It is not an accuracy:
  every output labels it ``objective.proxy = true``.
- :class:`CsvAccuracy` (``--accuracy FILE``): measured accuracies, a CSV with
  columns ``arch`` and ``accuracy``. Architectures in the file get their
  accuracy. For others, ``unknown="nearest"`` (default) borrows the accuracy of
  the closest listed architecture (fewest differing genes, ties to the first
  row) and counts the result as a proxy; ``unknown="exclude"`` restricts the
  search to the listed architectures (others score -inf and are never
  chosen). A file that lists every architecture of the space is not a proxy.
- :class:`FunctionScore` (``--accuracy-fn module:function`` or
  ``path/to/file.py:function``): ``function(space, pop) -> array of n scores``
  where ``pop`` is the ``(n, dim)`` genotype array (``space.to_string(g)``
  gives the architecture string). Treated as a real accuracy (``proxy``
  false) unless the function has an attribute ``proxy = True``.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgelat.errors import BadInput
from edgelat.profiler.spaces.space import SearchSpace


class Objective(ABC):
    """Scores a population (higher is better)."""

    name: str = ""
    proxy: bool = True
    description: str = ""

    @abstractmethod
    def score(self, pop: np.ndarray, figures: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float64 ``(n,)`` scores; ``-inf`` marks an architecture that may not be chosen.

        ``figures`` is ``space.figures(pop)`` when the caller already has it."""

    def source(self, pop: np.ndarray) -> list[str]:
        """Per architecture, where its score came from (for the output)."""
        return [self.name] * len(np.atleast_2d(pop))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "proxy": bool(self.proxy), "description": self.description}


class ProxyScore(Objective):
    """``log10(FLOPs) + log10(params)``: a documented size proxy, never an accuracy."""

    name = "proxy:log-flops-params"
    proxy = True
    description = "log10(FLOPs) + log10(params); a size proxy, not a measured accuracy"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def score(self, pop: np.ndarray, figures: dict[str, np.ndarray] | None = None) -> np.ndarray:
        fig = figures if figures is not None else self.space.figures(pop)
        f, p = fig["flops"], fig["params"]
        return np.log10(np.maximum(f, 1.0)) + np.log10(np.maximum(p, 1.0))


class CsvAccuracy(Objective):
    """Accuracies read from a CSV (``arch``, ``accuracy``); see the module docstring."""

    def __init__(self, space: SearchSpace, path: str | Path, unknown: str = "nearest") -> None:
        if unknown not in ("nearest", "exclude"):
            raise BadInput(f"unknown-architecture policy {unknown!r}: use nearest or exclude")
        self.space, self.path, self.unknown = space, Path(path), unknown
        archs, acc = self._read()
        self.pop_ = space.from_strings(archs)
        self.acc_ = acc
        # vectorised exact lookup: a 64-bit hash of each genotype, sorted, verified on hit
        self._mult = np.random.default_rng(12345).integers(1, 2**62, size=space.dim, dtype=np.int64) | 1
        keys = self._hash(self.pop_)
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        self.n_listed_ = len(np.unique(self.pop_, axis=0))
        self._offsets = np.concatenate([[0], np.cumsum(space.cardinalities)[:-1]])
        self.onehot_ = self._onehot(self.pop_)
        self.complete_ = self.n_listed_ >= float(np.prod(space.cardinalities.astype(float)))
        self.name = f"csv:{self.path.name}"
        self.proxy = unknown == "nearest" and not self.complete_
        self.description = (
            f"measured accuracies from {self.path} ({self.n_listed_} architectures); "
            + ("covers the whole space" if self.complete_ else
               "others borrow the nearest listed architecture's accuracy" if unknown == "nearest" else
               "only listed architectures are eligible")
        )

    def _read(self) -> tuple[list[str], np.ndarray]:
        try:
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                if "arch" not in fields or "accuracy" not in fields:
                    raise BadInput(f"{self.path}: needs columns 'arch' and 'accuracy' (has: {', '.join(fields) or 'none'})")
                archs, acc = [], []
                for line, row in enumerate(reader, start=2):
                    try:
                        value = float(row["accuracy"])
                    except (TypeError, ValueError):
                        raise BadInput(f"{self.path}: line {line}: accuracy {row['accuracy']!r} is not a number") from None
                    if not np.isfinite(value):
                        raise BadInput(f"{self.path}: line {line}: accuracy {row['accuracy']!r} is not finite")
                    try:
                        self.space.from_string(row["arch"] or "")
                    except BadInput as exc:
                        raise BadInput(f"{self.path}: line {line}: {exc}") from None
                    archs.append(row["arch"])
                    acc.append(value)
        except OSError as exc:
            raise BadInput(f"cannot read accuracy file {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{self.path}: not a text CSV file") from None
        if not archs:
            raise BadInput(f"{self.path}: no rows")
        return archs, np.asarray(acc, dtype=np.float64)

    def _hash(self, pop: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (pop.astype(np.int64) * self._mult).sum(axis=1)

    def _onehot(self, pop: np.ndarray) -> np.ndarray:
        out = np.zeros((pop.shape[0], int(self.space.cardinalities.sum())), dtype=np.float32)
        out[np.arange(pop.shape[0])[:, None], self._offsets[None, :] + pop.astype(np.int64)] = 1.0
        return out

    def _lookup(self, pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row index of each architecture in the file (-1 if absent) and of its nearest row."""
        pop = self.space.check(pop)
        keys = self._hash(pop)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        row = self._order[pos]
        hit = (self._keys[pos] == keys) & (self.pop_[row] == pop).all(axis=1)
        exact = np.where(hit, row, -1)
        nearest = exact.copy()
        miss = exact < 0
        if miss.any() and self.unknown == "nearest":
            same = self._onehot(pop[miss]) @ self.onehot_.T  # genes in common with each listed arch
            nearest[miss] = same.argmax(axis=1)
        return exact, nearest

    def score(self, pop: np.ndarray, figures: dict[str, np.ndarray] | None = None) -> np.ndarray:
        exact, nearest = self._lookup(pop)
        if self.unknown == "exclude":
            return np.where(exact >= 0, self.acc_[np.maximum(exact, 0)], -np.inf)
        return self.acc_[nearest]

    def source(self, pop: np.ndarray) -> list[str]:
        exact, nearest = self._lookup(pop)
        return ["measured" if e >= 0 else ("nearest" if self.unknown == "nearest" else "not listed") for e in exact]


class FunctionScore(Objective):
    """A user function ``fn(space, pop) -> scores``; see the module docstring."""

    def __init__(self, space: SearchSpace, spec: str) -> None:
        self.space = space
        self.fn = load_function(spec)
        self.name = f"fn:{spec}"
        self.proxy = bool(getattr(self.fn, "proxy", False))
        self.description = (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else f"user function {spec}"

    def score(self, pop: np.ndarray, figures: dict[str, np.ndarray] | None = None) -> np.ndarray:
        pop = self.space.check(pop)
        try:
            out = np.asarray(self.fn(self.space, pop), dtype=np.float64).reshape(-1)
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"accuracy function {self.name[3:]} failed: {type(exc).__name__}: {exc}") from None
        if out.shape[0] != pop.shape[0]:
            raise BadInput(f"accuracy function {self.name[3:]} returned {out.shape[0]} scores for {pop.shape[0]} architectures")
        if np.isnan(out).any():
            raise BadInput(f"accuracy function {self.name[3:]} returned NaN")
        return out


def load_function(spec: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function``; BadInput when it cannot be found."""
    module_name, sep, attr = (spec or "").rpartition(":")
    if not sep or not module_name or not attr:
        raise BadInput(f"accuracy function {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise BadInput(f"accuracy function file {path} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"edgelat_user_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            assert mod_spec.loader is not None
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(f"cannot import {module_name!r} for the accuracy function: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BadInput(f"{module_name!r} has no function {attr!r}")
    return fn


def make_objective(space: SearchSpace, accuracy_csv: str | None = None, accuracy_fn: str | None = None,
                   unknown: str = "nearest") -> Objective:
    """The objective the CLI options ask for (the proxy when neither is given)."""
    if accuracy_csv and accuracy_fn:
        raise BadInput("give either --accuracy or --accuracy-fn, not both")
    if accuracy_csv:
        return CsvAccuracy(space, accuracy_csv, unknown)
    if accuracy_fn:
        return FunctionScore(space, accuracy_fn)
    return ProxyScore(space)
