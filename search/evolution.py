"""Latency-constrained evolution, as Once-for-All's ``EvolutionFinder``, vectorised.

OFA's loop: keep a population of architectures that meet the constraint; each
generation keep the best ``parents`` share, then refill the population with
mutants of random parents (``mutation_ratio`` of it, each gene resampled with
``mutate_prob``) and uniform crossovers of two random parents, retrying each
child until it meets the constraint.

Here each generation draws all its children at once, with a margin, and
evaluates them in **one** batch call of the latency model; children that
break a constraint are dropped and the first feasible ones are kept. When too
few are feasible, another batch is drawn (at most ``max_rounds``), and any
shortfall is filled with copies of parents, so the population size is
constant. The result is the final population's distinct architectures, best
score first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgelat.errors import BadInput
from edgelat.search.evaluate import Constraints, Evaluator, Metrics
from edgelat.search.result import SearchResult, candidates_from, unique_rows


@dataclass
class EvolutionSearch:
    """Constructor stores parameters only (scikit-learn style); :meth:`run` searches."""

    population: int = 100
    parents: float = 0.25
    mutate_prob: float = 0.1
    mutation_ratio: float = 0.5
    generations: int = 500
    seed: int = 0
    max_rounds: int = 8  # extra batches per generation when too few children are feasible
    keep_cloud: bool = False  # remember every evaluated (latency, score) for plots

    def _check(self) -> tuple[int, int, int]:
        if self.population < 4:
            raise BadInput(f"population must be at least 4, got {self.population}")
        if not 0 < self.parents < 1 or not 0 <= self.mutation_ratio < 1 or self.parents + self.mutation_ratio > 1:
            raise BadInput("parents and mutation ratio must be shares in (0, 1) that add up to at most 1")
        if not 0 <= self.mutate_prob <= 1:
            raise BadInput(f"mutate probability must be in [0, 1], got {self.mutate_prob}")
        if self.generations < 0:
            raise BadInput(f"generations must be >= 0, got {self.generations}")
        n_par = max(1, int(round(self.population * self.parents)))
        n_mut = int(round(self.population * self.mutation_ratio))
        return n_par, n_mut, self.population - n_par - n_mut

    def _initial(self, rng: np.random.Generator, ev: Evaluator, c: Constraints) -> tuple[np.ndarray, Metrics]:
        """``population`` random architectures that meet the constraints."""
        space, need, start = ev.space, self.population, ev.evaluated
        found_pop, found_m = [], []
        have, best_lat = 0, np.inf
        batch, budget = max(4 * need, 256), max(200 * need, 50000)  # architectures to try at most
        while have < need and ev.evaluated - start < budget:
            pop = space.sample(rng, batch)
            m = ev(pop, c)
            best_lat = min(best_lat, float(np.nanmin(m.latency_ms)))
            ok = np.flatnonzero(m.feasible)[: need - have]
            if ok.size:
                found_pop.append(pop[ok])
                found_m.append(m.take(ok))
                have += ok.size
            batch = min(batch * 2, 16384)
        if have >= need:
            return np.concatenate(found_pop), Metrics.concat(found_m)
        if have == 0:
            bits = [f"{k}={v:g}" for k, v in c.to_dict().items()]
            raise BadInput(
                f"no architecture of {space.name} meets {', '.join(bits)} among {ev.evaluated - start} sampled "
                f"(fastest predicted: {best_lat:.3g} ms); relax the constraint"
            )
        pop, m = np.concatenate(found_pop), Metrics.concat(found_m)
        fill = rng.integers(0, have, size=need - have)
        return np.concatenate([pop, pop[fill]]), Metrics.concat([m, m.take(fill)])

    def run(self, ev: Evaluator, constraints: Constraints) -> SearchResult:
        n_par, n_mut, n_cross = self._check()
        space = ev.space
        rng = np.random.default_rng(self.seed)
        started = time.perf_counter()
        calls0, evals0 = ev.calls, ev.evaluated
        pop, m = self._initial(rng, ev, constraints)
        history: list[float] = []
        cloud_lat, cloud_score = ([m.latency_ms], [m.score]) if self.keep_cloud else ([], [])
        margin = 2.0
        for _ in range(self.generations):
            order = np.argsort(-m.score, kind="stable")[:n_par]
            par, par_m = pop[order], m.take(order)
            history.append(float(par_m.score[0]))
            kids, kids_m = [], []
            need_mut, need_cross = n_mut, n_cross
            for _round in range(self.max_rounds):
                k_mut, k_cross = int(np.ceil(need_mut * margin)), int(np.ceil(need_cross * margin))
                mut = space.mutate(rng, par[rng.integers(0, n_par, size=k_mut)], self.mutate_prob)
                cross = space.crossover(rng, par[rng.integers(0, n_par, size=k_cross)],
                                        par[rng.integers(0, n_par, size=k_cross)])
                cand = np.concatenate([mut, cross])
                cm = ev(cand, constraints)
                if self.keep_cloud:
                    cloud_lat.append(cm.latency_ms)
                    cloud_score.append(cm.score)
                ok = cm.feasible
                take_mut = np.flatnonzero(ok[:k_mut])[:need_mut]
                take_cross = k_mut + np.flatnonzero(ok[k_mut:])[:need_cross]
                take = np.concatenate([take_mut, take_cross])
                kids.append(cand[take])
                kids_m.append(cm.take(take))
                rate = ok.mean() if ok.size else 0.0
                margin = float(np.clip(1.3 / max(rate, 1e-3), 1.2, 16.0))  # adapt to the feasible share
                need_mut -= take_mut.size
                need_cross -= take_cross.size
                if need_mut + need_cross == 0:
                    break
            short = need_mut + need_cross
            if short:
                fill = rng.integers(0, n_par, size=short)
                kids.append(par[fill])
                kids_m.append(par_m.take(fill))
            pop = np.concatenate([par, *kids])
            m = Metrics.concat([par_m, *kids_m])
        keep = unique_rows(space.canonical(pop))  # distinct networks, not distinct genotypes
        keep = keep[np.lexsort((m.latency_ms[keep], -m.score[keep]))]
        pop, m = pop[keep], m.take(keep)
        cands = candidates_from(space, pop, m, ev.objective.source(pop))
        return SearchResult(
            strategy="evolution",
            candidates=cands,
            settings={"population": self.population, "parents": self.parents, "mutate_prob": self.mutate_prob,
                      "mutation_ratio": self.mutation_ratio, "generations": self.generations, "seed": self.seed},
            seconds=time.perf_counter() - started,
            evaluations=ev.evaluated - evals0,
            latency_calls=ev.calls - calls0,
            history=history,
            cloud=(np.concatenate(cloud_lat), np.concatenate(cloud_score)) if self.keep_cloud else None,
        )
