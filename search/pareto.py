"""Multi-objective Pareto search with NSGA-II (pymoo).

Objectives: maximise the score and minimise predicted latency (pymoo
minimises ``[-score, latency]``). Constraints (latency, energy, memory,
params) become pymoo inequality constraints ``value / bound - 1 <= 0``. The
population is evaluated as a whole each generation (one latency-model call).
Variation uses the space's own operators (uniform crossover, per-gene
resampling), so genotypes stay valid integer indices. The result is the
final non-dominated feasible front, fastest first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgelat.errors import BadInput
from edgelat.search.evaluate import Constraints, Evaluator, Metrics
from edgelat.search.result import SearchResult, candidates_from, unique_rows


def nondominated(latency: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats (lower-or-equal latency and higher-or-equal
    score, strictly better in one), sorted by latency."""
    order = np.lexsort((-score, latency))
    best = -np.inf
    keep = []
    for i in order:
        if score[i] > best:
            keep.append(i)
            best = score[i]
    return np.array(keep, dtype=np.int64)


@dataclass
class ParetoSearch:
    """NSGA-II over a space; constructor stores parameters only, :meth:`run` searches."""

    population: int = 100
    generations: int = 100
    mutate_prob: float = 0.1
    seed: int = 0
    keep_cloud: bool = False

    def run(self, ev: Evaluator, constraints: Constraints) -> SearchResult:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.crossover import Crossover
        from pymoo.core.mutation import Mutation
        from pymoo.core.problem import Problem
        from pymoo.core.sampling import Sampling
        from pymoo.optimize import minimize

        if self.population < 4 or self.generations < 1:
            raise BadInput("the Pareto search needs a population of at least 4 and at least 1 generation")
        space = ev.space
        bounds = [(f, b) for f, b in constraints.to_dict().items()]
        cloud: list[tuple[np.ndarray, np.ndarray]] = []
        mutate_prob, keep_cloud = self.mutate_prob, self.keep_cloud

        class _Problem(Problem):
            def __init__(self) -> None:
                super().__init__(n_var=space.dim, n_obj=2, n_ieq_constr=len(bounds),
                                 xl=np.zeros(space.dim), xu=space.cardinalities - 1, vtype=int)

            def _evaluate(self, X, out, *args, **kwargs):  # noqa: N803 (pymoo's names)
                pop = np.asarray(X).astype(np.int16)
                m = ev(pop, constraints)
                if keep_cloud:
                    cloud.append((m.latency_ms, m.score))
                score = np.where(np.isfinite(m.score), m.score, -1e30)
                out["F"] = np.column_stack([-score, m.latency_ms])
                if bounds:
                    out["G"] = np.column_stack([
                        np.nan_to_num(getattr(m, constraints.metric_of[f]) / b - 1.0, nan=1e9) for f, b in bounds
                    ])

        class _Sample(Sampling):
            def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
                return space.sample(random_state, n_samples).astype(np.int64)

        class _Cross(Crossover):
            def __init__(self) -> None:
                super().__init__(n_parents=2, n_offsprings=1)

            def _do(self, problem, X, *args, random_state=None, **kwargs):  # noqa: N803
                a, b = X[0].astype(np.int16), X[1].astype(np.int16)
                return space.crossover(random_state, a, b).astype(np.int64)[None]

        class _Mutate(Mutation):
            def _do(self, problem, X, *args, random_state=None, **kwargs):  # noqa: N803
                return space.mutate(random_state, X.astype(np.int16), mutate_prob).astype(np.int64)

        started = time.perf_counter()
        calls0, evals0 = ev.calls, ev.evaluated
        algorithm = NSGA2(pop_size=self.population, sampling=_Sample(), crossover=_Cross(), mutation=_Mutate(),
                          eliminate_duplicates=True)
        res = minimize(_Problem(), algorithm, ("n_gen", self.generations), seed=self.seed, verbose=False)
        pop = np.asarray(res.pop.get("X")).astype(np.int16)
        pop = pop[unique_rows(space.canonical(pop))]  # distinct networks, not distinct genotypes
        m: Metrics = ev(pop, constraints)
        ok = np.flatnonzero(m.feasible)
        if ok.size == 0:
            bits = [f"{k}={v:g}" for k, v in constraints.to_dict().items()]
            raise BadInput(
                f"the Pareto search found no architecture of {space.name} meeting {', '.join(bits)} "
                f"(fastest predicted: {float(np.nanmin(m.latency_ms)):.3g} ms); relax the constraint"
            )
        front = ok[nondominated(m.latency_ms[ok], m.score[ok])]
        pop, m = pop[front], m.take(front)
        return SearchResult(
            strategy="nsga2",
            candidates=candidates_from(space, pop, m, ev.objective.source(pop)),
            settings={"population": self.population, "generations": self.generations,
                      "mutate_prob": self.mutate_prob, "seed": self.seed},
            seconds=time.perf_counter() - started,
            evaluations=ev.evaluated - evals0,
            latency_calls=ev.calls - calls0,
            cloud=(np.concatenate([c[0] for c in cloud]), np.concatenate([c[1] for c in cloud])) if cloud else None,
        )
