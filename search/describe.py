"""What a search space allows, for people and tools: ``edgelat spaces list`` / ``spaces show``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelat.profiler.spaces.space import SearchSpace
from edgelat.profiler.spaces import SPACE_NAMES, get_space

#: spaces with at most this many architectures are enumerated to find the extremes exactly
ENUMERATE_LIMIT = 100_000
SAMPLE = 20_000


def _count(space: SearchSpace) -> int:
    n = 1
    for c in space.choices:
        n *= len(c)
    return n


def _genes(space: SearchSpace) -> list[dict[str, Any]]:
    """Runs of consecutive genes with the same allowed values: ``{"genes": [first, last], "values": [...]}``."""
    runs: list[dict[str, Any]] = []
    for i, values in enumerate(space.choices):
        vals = [v if isinstance(v, (int, float, str)) else str(v) for v in values]
        if runs and runs[-1]["values"] == vals and runs[-1]["genes"][1] == i - 1:
            runs[-1]["genes"][1] = i
        else:
            runs.append({"genes": [i, i], "values": vals})
    return runs


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """Name, genes, how many architectures, and how many distinct kernels it can contain."""
    return {"name": space.name, "genes": space.dim, "architectures": _count(space),
            "kernel_vocabulary": len(space.kernel_vocabulary())}


def list_spaces() -> list[dict[str, Any]]:
    """Every built-in space's summary."""
    return [space_summary(get_space(name)) for name in SPACE_NAMES]


def describe_space(name: str, random: int = 3, seed: int = 0) -> dict[str, Any]:
    """A space's summary, its allowed values per gene, its smallest and largest architectures by
    FLOPs (exact for small spaces, else among a random sample, and said so) and ``random`` random
    architectures."""
    space = get_space(name)
    total = _count(space)
    rng = np.random.default_rng(seed)
    if total <= ENUMERATE_LIMIT:
        grids = np.meshgrid(*[np.arange(len(c)) for c in space.choices], indexing="ij")
        pop = np.stack([g.ravel() for g in grids], axis=1)
        how = f"exact, over all {total} architectures"
    else:
        first = np.zeros((1, space.dim), dtype=np.int64)
        last = np.array([[len(c) - 1 for c in space.choices]])
        pop = np.concatenate([first, last, space.sample(rng, SAMPLE)])
        how = f"among the first-choice, last-choice and {SAMPLE} random architectures (seed {seed})"
    pop = space.check(pop)
    flops = space.flops(pop)
    lo, hi = int(np.argmin(flops)), int(np.argmax(flops))

    def arch(g: np.ndarray) -> dict[str, Any]:
        return {"arch": space.to_string(g), "flops": int(space.flops(g)[0]), "params": int(space.params(g)[0])}

    return {**space_summary(space), "choices": _genes(space),
            "smallest": arch(pop[lo]), "largest": arch(pop[hi]), "extremes": how,
            "random": [arch(g) for g in space.sample(rng, random)]}
