"""Search strategies and objectives on real latency landscapes.

NAS-Bench-201 is small enough (15,625 architectures, all measured on real
devices in the HELP dataset) to know the exact answer by brute force, so the
strategies are checked against it. A small stage space is profiled for real
on this machine to drive the table-based path end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from search_helpers import TINY_SPACE_YAML, nb201_latency, profile_space

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput
from edgelat.search.evaluate import Constraints, Evaluator
from edgelat.search.evolution import EvolutionSearch
from edgelat.search.objective import CsvAccuracy, FunctionScore, ProxyScore, make_objective
from edgelat.search.pareto import ParetoSearch, nondominated


@pytest.fixture(scope="module")
def nb201():
    return nb201_latency("pixel3")


def all_archs(space) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(c) for c in space.cardinalities], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int16)


def test_evolution_finds_the_brute_force_optimum(nb201):
    space, latency, _ = nb201
    obj = ProxyScore(space)
    every = all_archs(space)
    lat, score = latency(every), obj.score(every)
    for budget in (6.0, 12.0):
        ev = Evaluator(space, latency, obj)
        res = EvolutionSearch(generations=60, seed=1).run(ev, Constraints(max_latency_ms=budget))
        best = res.candidates[0]
        assert best.predicted_latency_ms <= budget
        assert all(c.predicted_latency_ms <= budget and c.feasible for c in res.candidates)
        assert best.score == pytest.approx(score[lat <= budget].max())
        # one latency-model call per generation (plus the initial sampling)
        assert res.latency_calls <= 60 * 2 + 3
        assert res.history == sorted(res.history)  # elitism: the best never gets worse


def test_evolution_result_is_reproducible(nb201):
    space, latency, _ = nb201
    runs = [EvolutionSearch(generations=20, seed=5).run(Evaluator(space, latency, ProxyScore(space)),
                                                        Constraints(max_latency_ms=9.0)) for _ in range(2)]
    assert [c.arch for c in runs[0].candidates] == [c.arch for c in runs[1].candidates]


def test_impossible_budget_says_what_is_fastest(nb201):
    space, latency, dense = nb201
    ev = Evaluator(space, latency, ProxyScore(space))
    with pytest.raises(BadInput, match="no architecture of nasbench201 meets max_latency_ms=0.001") as exc:
        EvolutionSearch(generations=5).run(ev, Constraints(max_latency_ms=0.001))
    assert f"{dense.min():.3g} ms" in str(exc.value)


def test_params_and_memory_constraints_bind(nb201):
    space, latency, _ = nb201
    ev = Evaluator(space, latency, ProxyScore(space))
    every = all_archs(space)
    params = space.params(every)
    cap = float(np.median(params))
    res = EvolutionSearch(generations=30).run(ev, Constraints(max_latency_ms=30.0, max_params=cap))
    assert all(c.params <= cap for c in res.candidates)
    assert res.candidates[0].params == pytest.approx(params[params <= cap].max(), rel=0.05)
    mem = space.memory(every)
    mcap = float(np.percentile(mem, 30))
    res = EvolutionSearch(generations=30).run(ev, Constraints(max_latency_ms=30.0, max_memory_bytes=mcap))
    assert all(c.memory_bytes <= mcap for c in res.candidates)


def test_energy_constraint_uses_energy_and_nan_violates(nb201):
    space, latency, dense = nb201
    # an energy function built from another real device column (mJ-shaped numbers are
    # not needed to test the bound: any positive batch function will do)
    _, other, _ = nb201_latency("gold_6240")
    ev = Evaluator(space, latency, ProxyScore(space), energy=other)
    res = EvolutionSearch(generations=20).run(ev, Constraints(max_latency_ms=30.0, max_energy_mj=8.0))
    assert all(c.energy_mj <= 8.0 for c in res.candidates)
    nan_energy = Evaluator(space, latency, ProxyScore(space), energy=lambda p: np.full(len(p), np.nan))
    with pytest.raises(BadInput, match="no architecture"):
        EvolutionSearch(generations=2).run(nan_energy, Constraints(max_latency_ms=30.0, max_energy_mj=8.0))


def test_pareto_front_is_close_to_the_true_front(nb201):
    space, latency, _ = nb201
    obj = ProxyScore(space)
    every = all_archs(space)
    lat, score = latency(every), obj.score(every)
    true_front = nondominated(lat, score)
    ev = Evaluator(space, latency, obj)
    res = ParetoSearch(population=60, generations=40, seed=2).run(ev, Constraints(max_latency_ms=15.0))
    got_lat = np.array([c.predicted_latency_ms for c in res.candidates])
    got_score = np.array([c.score for c in res.candidates])
    assert (got_lat <= 15.0).all()
    assert (np.diff(got_lat) >= 0).all() and (np.diff(got_score) > 0).all()  # non-dominated, fastest first
    # most returned points are truly Pareto-optimal over all 15,625 architectures
    front_pairs = {(round(a, 9), round(b, 9)) for a, b in zip(lat[true_front], score[true_front])}
    on_front = np.mean([(round(a, 9), round(b, 9)) in front_pairs for a, b in zip(got_lat, got_score)])
    assert on_front >= 0.7


def test_nondominated_helper():
    lat = np.array([1.0, 2.0, 2.0, 3.0, 0.5])
    score = np.array([1.0, 3.0, 2.0, 2.5, 0.2])
    assert list(nondominated(lat, score)) == [4, 0, 1]


# ------------------------------------------------------------------ objectives
def test_csv_accuracy_exact_nearest_and_exclude(nb201, tmp_path):
    space, latency, _ = nb201
    listed = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
              "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|",
              "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"]
    path = tmp_path / "acc.csv"
    path.write_text("arch,accuracy\n" + "".join(f"{a},{v}\n" for a, v in zip(listed, (94.1, 10.0, 88.5))))
    near = CsvAccuracy(space, path)
    pop = space.from_strings(listed)
    assert list(near.score(pop)) == [94.1, 10.0, 88.5]
    assert near.proxy and near.source(pop) == ["measured"] * 3
    one_off = space.from_strings([listed[0].replace("nor_conv_3x3~2", "nor_conv_1x1~2")])
    assert near.score(one_off)[0] == 94.1 and near.source(one_off) == ["nearest"]
    excl = CsvAccuracy(space, path, unknown="exclude")
    assert excl.proxy is False  # only listed (measured) accuracies are used
    assert excl.score(one_off)[0] == -np.inf
    # search restricted to listed architectures picks the most accurate one within budget
    ev = Evaluator(space, latency, excl)
    budget = float(latency(pop[2:3])[0]) + 0.01
    res = EvolutionSearch(generations=5).run(ev, Constraints(max_latency_ms=budget))
    allowed = [a for a, l in zip(listed, latency(pop)) if l <= budget]
    assert res.candidates[0].arch in allowed
    assert {c.arch for c in res.candidates} <= set(allowed)


def test_csv_accuracy_covering_the_space_is_not_a_proxy(nb201, tmp_path):
    space, latency, dense = nb201
    every = all_archs(space)
    path = tmp_path / "all.csv"
    # a real per-arch figure as the "accuracy" column: the gold_6240 latency (any real column works)
    _, gold, _ = nb201_latency("gold_6240")
    vals = gold(every)
    path.write_text("arch,accuracy\n" + "".join(f"{s},{float(v)!r}\n" for s, v in zip(space.to_strings(every), vals)))
    obj = CsvAccuracy(space, path)
    assert not obj.proxy and obj.describe()["proxy"] is False
    assert (obj.score(every) == vals).all()


@pytest.mark.parametrize("content,message", [
    ("arch,acc\nx,1\n", "needs columns 'arch' and 'accuracy'"),
    ("arch,accuracy\n|bad|,1\n", "line 2: nasbench201: malformed architecture"),
    ("arch,accuracy\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,high\n", "line 2: accuracy 'high' is not a number"),
    ("arch,accuracy\n", "no rows"),
])
def test_csv_accuracy_errors(tmp_path, content, message):
    from edgelat.profiler.spaces import get_space

    path = tmp_path / "acc.csv"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        CsvAccuracy(get_space("nasbench201"), path)
    with pytest.raises(BadInput, match="cannot read accuracy file"):
        CsvAccuracy(get_space("nasbench201"), tmp_path / "missing.csv")


def test_function_objective_from_file(tmp_path, nb201):
    space, latency, _ = nb201
    mod = tmp_path / "scorer.py"
    mod.write_text(
        "import numpy as np\n"
        "def convs(space, pop):\n"
        "    '''Number of 3x3 convs in the cell.'''\n"
        "    return (np.asarray(pop) == 3).sum(axis=1)\n"
        "def broken(space, pop):\n"
        "    return [1.0]\n"
    )
    obj = make_objective(space, accuracy_fn=f"{mod}:convs")
    assert isinstance(obj, FunctionScore) and obj.proxy is False
    assert obj.describe()["description"] == "Number of 3x3 convs in the cell."
    res = EvolutionSearch(generations=10).run(Evaluator(space, latency, obj), Constraints(max_latency_ms=40.0))
    assert res.candidates[0].score == 6  # all six edges nor_conv_3x3 fits 40 ms on pixel3
    with pytest.raises(BadInput, match="returned 1 scores"):
        make_objective(space, accuracy_fn=f"{mod}:broken").score(space.sample(np.random.default_rng(0), 3))
    with pytest.raises(BadInput, match="has no function"):
        make_objective(space, accuracy_fn=f"{mod}:nothing")
    with pytest.raises(BadInput, match="cannot import"):
        make_objective(space, accuracy_fn="no_such_module_xyz:f")
    with pytest.raises(BadInput, match="either --accuracy or --accuracy-fn"):
        make_objective(space, accuracy_csv="a.csv", accuracy_fn="m:f")


def test_proxy_objective_is_labelled(nb201):
    space, _, _ = nb201
    d = ProxyScore(space).describe()
    assert d["proxy"] is True and "proxy" in d["description"]


# ------------------------------------------------------------------ table path, for real
def test_search_on_a_really_profiled_table(tmp_path):
    """Profile a small space's whole vocabulary on this machine into SQLite, get the
    predictors' table latency model, and search with it."""
    from edgelat.lut.store import open_db
    from edgelat.predictors.latency import latency_model
    from edgelat.profiler.spaces import get_space

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE_YAML)
    space = get_space(str(path))
    db = open_db()
    profile_space(db, space)
    model = latency_model(db, "local", RuntimeConfig(), space)
    assert model.kind == "table" and not model.missing
    pop = space.sample(np.random.default_rng(0), 400)
    lat = model.predict(pop)
    medians = {r["kernel_key"]: r["median_ms"] for r in db["kernel_measurements"].rows}
    for i in range(5):
        assert lat[i] == pytest.approx(sum(medians[k.key] for k in space.kernels(pop[i])))
    budget = float(np.median(lat))
    res = EvolutionSearch(generations=40).run(Evaluator(space, model.predict, ProxyScore(space)),
                                              Constraints(max_latency_ms=budget))
    assert all(c.predicted_latency_ms <= budget for c in res.candidates)
    feasible = lat <= budget
    assert res.candidates[0].score >= ProxyScore(space).score(pop)[feasible].max() - 1e-9
