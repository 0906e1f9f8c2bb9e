"""Search prices architectures with the same calibrated map that ``predict`` applies to a file.

The table is a real profiled one (the ``ofa-mbv3`` vocabulary is large, so a real
measurement of a few of its kernels plus the device's kernel predictor would be slow
here); prices are set per kernel, and the calibration is a fitted
:class:`~edgelat.predictors.calibration.Calibration` of each form. What is checked is
that the batched gather path gives, for every architecture, what the per-model path
(``group_sums``/``model_weights`` over the architecture's kernels, as
``predict_model_file`` computes them) gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgelat.predictors.calibration import Calibration, group_sums, model_weights
from edgelat.predictors.latency import CHUNK, TableLatency
from edgelat.profiler.spaces import get_space


def _fitted(form: str, space, prices: np.ndarray, rng: np.random.Generator) -> Calibration:
    """A calibration of ``form`` fitted on architectures with a made-up but smooth 'measured' latency."""
    pop = space.sample(rng, 40)
    vocab = space.kernel_vocabulary()
    index = {k.key: i for i, k in enumerate(vocab)}
    sums, counts, weights, measured = [], [], [], []
    for g in pop:
        ks = space.kernels(g)
        ms = [prices[index[k.key]] for k in ks]
        parts = group_sums(ks, ms)
        sums.append(parts)
        counts.append(len(ks))
        weights.append(model_weights(ks))
        # a whole model: cheaper per kernel, plus a spill term for big models, plus noise
        measured.append(0.9 * parts.sum() + 0.004 * len(ks) + 1e-7 * max(0.0, model_weights(ks) - 3e6)
                        + rng.normal(0, 0.01))
    cal = Calibration(forms=("identity", form)).fit(sums, counts, measured, weights)
    assert cal.form_ == form, cal.loo_mape_
    return cal


@pytest.mark.parametrize("form", ["ratio+count", "ratio+count+spill", "groups+count"])
def test_calibrated_table_equals_the_per_model_path(form):
    space = get_space("ofa-mbv3")
    vocab = space.kernel_vocabulary()
    rng = np.random.default_rng(3)
    prices = rng.uniform(0.01, 0.5, len(vocab))
    cal = _fitted(form, space, prices, rng)
    model = TableLatency(space, "dev", "cfg", prices, calibration=cal)
    assert model.describe()["calibrated"] is True and model.describe()["calibration"] == form
    pop = space.sample(np.random.default_rng(7), CHUNK + 5)
    got = model.predict(pop)
    index = {k.key: i for i, k in enumerate(vocab)}
    for i in (0, 1, CHUNK - 1, CHUNK, CHUNK + 4):
        ks = space.kernels(pop[i])
        ms = [prices[index[k.key]] for k in ks]
        expect = cal.predict([group_sums(ks, ms)], [len(ks)], [model_weights(ks)])[0]
        assert got[i] == pytest.approx(expect, rel=1e-9)
    plain = TableLatency(space, "dev", "cfg", prices).predict(pop[:50])
    assert not np.allclose(got[:50], plain)  # the calibration really is applied


def test_a_speed_check_scales_each_architecture_by_its_share_of_inverted_residual_blocks():
    """The batched path applies the speed check's per-kind factor as predict does for one file:
    exp(share * log(a) + (1 - share) * log(b)), share = the blocks' part of the kernel sum."""
    from edgelat.predictors.speed import SpeedCheck

    space = get_space("ofa-mbv3")
    vocab = space.kernel_vocabulary()
    rng = np.random.default_rng(3)
    prices = rng.uniform(0.01, 0.5, len(vocab))
    cal = _fitted("ratio+count", space, prices, rng)
    model = TableLatency(space, "dev", "cfg", prices, calibration=cal)
    pop = space.sample(np.random.default_rng(9), 30)
    base = model.predict(pop)
    model.speed = SpeedCheck(0.9, by_kind=(0.8, 1.1))
    got = model.predict(pop)
    index = {k.key: i for i, k in enumerate(vocab)}
    shares = []
    for i in range(len(pop)):
        ks = space.kernels(pop[i])
        parts = group_sums(ks, [prices[index[k.key]] for k in ks])
        share = parts[:2].sum() / parts.sum()
        shares.append(share)
        assert got[i] == pytest.approx(base[i] * np.exp(share * np.log(0.8) + (1 - share) * np.log(1.1)), rel=1e-9)
    assert np.ptp(shares) > 0.01  # architectures of different mixes got different factors
    plain = TableLatency(space, "dev", "cfg", prices)
    plain.speed = SpeedCheck(0.9)  # no calibration, one factor: the plain sum times it
    np.testing.assert_allclose(plain.predict(pop), 0.9 * TableLatency(space, "dev", "cfg", prices).predict(pop))


def test_identity_calibration_leaves_the_plain_sum():
    space = get_space("ofa-mbv3")
    prices = np.random.default_rng(0).uniform(0.01, 0.5, len(space.kernel_vocabulary()))
    ident = Calibration(forms=("identity",)).fit([1.0, 2.0], [3, 4], [1.0, 2.0])
    pop = space.sample(np.random.default_rng(1), 20)
    a = TableLatency(space, "dev", "cfg", prices, calibration=ident)
    b = TableLatency(space, "dev", "cfg", prices)
    assert a.describe()["calibrated"] is False
    np.testing.assert_array_equal(a.predict(pop), b.predict(pop))


def test_genes_of_switched_off_blocks_do_not_make_a_new_network():
    space = get_space("ofa-mbv3")
    rng = np.random.default_rng(5)
    g = space.sample(rng, 1)[0]
    g[space.d_genes] = 0  # the shallowest depth everywhere: the last blocks of each stage are off
    off = ~space.active_blocks(g[None, :])[0]
    assert off.any()
    twin = g.copy()
    twin[space.ks_genes[off]] = (twin[space.ks_genes[off]] + 1) % 3  # other kernel sizes where nothing is built
    assert space.to_string(g) != space.to_string(twin)
    assert [k.key for k in space.kernels(g)] == [k.key for k in space.kernels(twin)]
    canon = space.canonical(np.stack([g, twin]))
    np.testing.assert_array_equal(canon[0], canon[1])
    on = ~off
    np.testing.assert_array_equal(canon[0][space.ks_genes[on]], g[space.ks_genes[on]])  # live genes kept


def test_search_results_are_distinct_networks():
    from edgelat.search.evaluate import Constraints, Evaluator
    from edgelat.search.evolution import EvolutionSearch
    from edgelat.search.objective import ProxyScore

    space = get_space("ofa-mbv3")

    def latency(pop):  # only the shallowest networks meet the budget: many genotypes, few networks
        pop = space.check(pop)
        return 1.0 + pop[:, space.d_genes].sum(axis=1).astype(float)

    ev = Evaluator(space, latency, ProxyScore(space))
    result = EvolutionSearch(population=60, generations=3, seed=0).run(ev, Constraints(max_latency_ms=1.5))
    nets = [tuple(k.key for k in space.kernels(c.genotype)) for c in result.candidates]
    assert len(result.candidates) >= 2
    assert len(nets) == len(set(nets))


def test_budget_notes_say_when_validated_winners_miss_and_when_the_budget_does_not_bind():
    from edgelat.search.job import budget_notes
    from edgelat.search.result import Candidate

    def cand(pred, meas=None):
        return Candidate(arch="a", genotype=np.zeros(1), predicted_latency_ms=pred, score=1.0, flops=1, params=1,
                         memory_bytes=1, measured_latency_ms=meas)

    assert budget_notes([cand(9.8, 9.9), cand(9.7, 9.5)], 10.0) == []
    miss = budget_notes([cand(9.8, 10.6), cand(9.7, 9.5)], 10.0)
    assert len(miss) == 1 and "1 of 2 validated" in miss[0] and "10.600 ms" in miss[0]
    loose = budget_notes([cand(6.0)], 10.0)
    assert len(loose) == 1 and "does not bind" in loose[0] and "40% under" in loose[0]
    assert budget_notes([cand(6.0)], None) == []
