"""How long a default OFA-MobileNetV3 search takes with table-based latency.

Target (issue 5): population 100, 500 generations, table-based latency, in
under 1 s on this machine. Everything printed is measured in this run:

1. A real table for ofa-mbv3 on ``local`` (onnxruntime, 1 thread): every
   kernel the space uses at resolution 128, plus the stem/head/pool kernels
   at a few more resolutions, are profiled with a short protocol; the kernel
   predictor fitted on them prices the rest of the vocabulary. (Search speed
   does not depend on the values, only on the table lookup; the split is
   printed.)
2. The vectorised evolution (:class:`EvolutionSearch`, OFA's settings) is run
   ``--repeats`` times with different seeds under a budget equal to the
   median predicted latency of random subnets; the median wall time is the
   figure that counts.
3. The same algorithm written per architecture, as OFA's ``EvolutionFinder``
   does it (one child at a time, retried until it meets the constraint, one
   table query and one score per child), is run once on the same table for
   the ratio. ``--skip-reference`` leaves it out.

Usage: ``python benchmarks/search_speed.py [--repeats 7] [--skip-reference]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def build_table(space) -> tuple[object, int, int]:
    """Profile the resolution-128 kernels on local and fit the kernel predictor."""
    from edgelat.values import MeasurementProtocol, RuntimeConfig
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db
    from edgelat.predictors.kernel import KernelPredictor
    from edgelat.predictors.latency import latency_model
    from edgelat.profiler.jobs import profile_kernels

    vocab = space.kernel_vocabulary()
    pop = space.sample(np.random.default_rng(0), 20000)
    pop[:, space.r_gene] = 0  # resolution 128
    ids = np.unique(space.kernel_ids(pop))
    specs = [vocab[i] for i in ids if i >= 0]
    specs += [k for k in vocab if k.op in ("conv2d", "global-avgpool") and k.h in (4, 5, 6, 7, 68, 88, 112, 136, 176, 224)]
    db = open_db()
    config = RuntimeConfig()
    with Registry(db).connect("local") as client:
        summary = profile_kernels(db, "local", client, specs, config,
                                  MeasurementProtocol(warmup=1, min_runs=5, max_runs=30, max_seconds=0.3))
    if summary.failed:
        raise SystemExit(f"profiling failed: {summary.failed[:3]}")
    KernelPredictor.from_table(db, "local", config).save(db, "local", config)
    model = latency_model(db, "local", config, space)
    return model, summary.measured, len(getattr(model, "missing", []))


def reference_evolution(space, table: np.ndarray, score_fn, budget: float, population=100, parents=0.25,
                        mutate_prob=0.1, mutation_ratio=0.5, generations=500, seed=0) -> tuple[float, float]:
    """OFA EvolutionFinder's loop, one architecture at a time (the baseline for the ratio)."""
    rng = np.random.default_rng(seed)
    cards = space.cardinalities

    def latency(g):
        return float(table[space.kernel_ids(g[None])[0]].sum())

    def random_sample():
        while True:
            g = np.array([rng.integers(c) for c in cards], dtype=np.int16)
            if latency(g) <= budget:
                return g

    def mutate(g):
        while True:
            child = g.copy()
            for i, c in enumerate(cards):
                if rng.random() < mutate_prob:
                    child[i] = rng.integers(c)
            if latency(child) <= budget:
                return child

    def crossover(a, b):
        while True:
            child = np.array([a[i] if rng.random() < 0.5 else b[i] for i in range(len(cards))], dtype=np.int16)
            if latency(child) <= budget:
                return child

    n_par, n_mut = int(round(population * parents)), int(round(population * mutation_ratio))
    started = time.perf_counter()
    pop = [random_sample() for _ in range(population)]
    scores = [float(score_fn(g[None])[0]) for g in pop]
    for _ in range(generations):
        order = np.argsort(scores)[::-1][:n_par]
        par = [pop[i] for i in order]
        par_scores = [scores[i] for i in order]
        pop, scores = list(par), list(par_scores)
        for _ in range(n_mut):
            child = mutate(par[rng.integers(n_par)])
            pop.append(child)
            scores.append(float(score_fn(child[None])[0]))
        for _ in range(population - n_par - n_mut):
            child = crossover(par[rng.integers(n_par)], par[rng.integers(n_par)])
            pop.append(child)
            scores.append(float(score_fn(child[None])[0]))
    return time.perf_counter() - started, max(scores)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    os.environ["EDGELAT_HOME"] = tempfile.mkdtemp(prefix="edgelat-search-speed-")

    from edgelat.search.evaluate import Constraints, Evaluator
    from edgelat.search.evolution import EvolutionSearch
    from edgelat.search.objective import ProxyScore
    from edgelat.profiler.spaces import get_space

    space = get_space("ofa-mbv3")
    t0 = time.perf_counter()
    model, measured, filled = build_table(space)
    print(f"table: {model.kind}, {len(space.kernel_vocabulary())} kernels: {measured} measured on local now, "
          f"{filled} priced by the kernel predictor (built in {time.perf_counter() - t0:.1f} s)")
    budget = float(np.median(model.predict(space.sample(np.random.default_rng(99), 10000))))
    print(f"budget: {budget:.3f} ms (median predicted latency of 10,000 random subnets)")

    objective = ProxyScore(space)
    ev = Evaluator(space, model.predict, objective)
    EvolutionSearch(generations=5).run(ev, Constraints(max_latency_ms=budget))  # warm caches/imports
    times, best = [], []
    for seed in range(args.repeats):
        res = EvolutionSearch(seed=seed).run(ev, Constraints(max_latency_ms=budget))
        times.append(res.seconds)
        best.append(res.candidates[0].score)
        assert res.candidates[0].predicted_latency_ms <= budget
    med = statistics.median(times)
    print(f"vectorised evolution (population 100, 500 generations), {args.repeats} runs: median {med:.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}); {res.evaluations} architectures and "
          f"{res.latency_calls} latency calls per run; best score median {statistics.median(best):.4f}")
    print(f"target < 1 s: {'met' if med < 1.0 else 'NOT met'} ({med:.3f} s)")
    if not args.skip_reference:
        table = getattr(model, "table_", None)  # per-kernel ms with a trailing 0 for absent slots
        if table is None:
            print("reference skipped: the latency model is not a table")
        else:
            ref_s, ref_best = reference_evolution(space, table, objective.score, budget)
            print(f"per-architecture loop (OFA EvolutionFinder style, same table and settings), 1 run: {ref_s:.2f} s, "
                  f"best score {ref_best:.4f}")
            print(f"speed-up of the vectorised search: {ref_s / med:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
