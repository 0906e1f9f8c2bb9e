"""The measurement protocol, with a fake clock so every stop decision is deterministic."""

from __future__ import annotations

import gc
import math
import time

import numpy as np
import pytest

from edgelat.agents import measure
from edgelat.agents.measure import median_rel_ci, run_protocol, summarize


class FakeTimer:
    """A clock that only moves when the 'model' runs, by the next scripted duration (ms)."""

    def __init__(self, durations_ms):
        self.now_ns = 0
        self.durations = iter(durations_ms)
        self.calls = 0

    def clock(self) -> int:
        return self.now_ns

    def run_once(self) -> None:
        self.calls += 1
        self.now_ns += int(round(next(self.durations) * 1e6))


def test_warmup_runs_are_not_sampled():
    timer = FakeTimer([100.0, 90.0, 80.0] + [10.0] * 100)
    samples, summary = run_protocol(timer.run_once, warmup=3, min_runs=10, clock=timer.clock)
    assert samples == [10.0] * 10  # constant: CI is 0 at the first check
    assert summary["warmup"] == 3
    assert summary["stopped_by"] == "target" and summary["stable"] is True
    assert summary["median"] == 10.0 and summary["n"] == 10
    assert timer.calls == 13


def test_stops_when_ci_reaches_target():
    rng = np.random.default_rng(1)
    durations = list(5.0 * (1 + rng.normal(0, 0.05, size=5000)))  # 5% noise
    timer = FakeTimer(durations)
    samples, summary = run_protocol(
        timer.run_once, warmup=0, min_runs=10, max_runs=5000, target_rel_ci=0.01, max_seconds=1e9, clock=timer.clock
    )
    assert summary["stopped_by"] == "target"
    assert summary["stable"] is True
    assert median_rel_ci(samples) <= 0.01
    assert 10 < len(samples) < 5000
    np.testing.assert_allclose(samples, durations[: len(samples)], rtol=0, atol=1e-6)
    # checks happen at 10, then every ~10% more; it stopped at the first check under target
    schedule = [10]
    while schedule[-1] < len(samples):
        schedule.append(schedule[-1] + max(1, schedule[-1] // 10))
    assert schedule[-1] == len(samples)
    assert all(median_rel_ci(durations[:k]) > 0.01 for k in schedule[:-1])


def test_max_runs_cap_flags_unstable():
    rng = np.random.default_rng(2)
    timer = FakeTimer(list(rng.uniform(1.0, 10.0, size=100)))
    samples, summary = run_protocol(
        timer.run_once, warmup=0, min_runs=5, max_runs=50, target_rel_ci=0.001, max_seconds=1e9, clock=timer.clock
    )
    assert len(samples) == 50 and summary["n"] == 50
    assert summary["stopped_by"] == "max_runs"
    assert summary["stable"] is False
    assert summary["rel_ci"] > 0.001


def test_max_seconds_cap_flags_unstable():
    rng = np.random.default_rng(3)
    timer = FakeTimer(list(rng.uniform(50.0, 150.0, size=1000)))  # about 100 ms a run
    samples, summary = run_protocol(
        timer.run_once, warmup=2, min_runs=3, max_runs=1000, target_rel_ci=0.001, max_seconds=1.0, clock=timer.clock
    )
    assert summary["stopped_by"] == "max_seconds"
    assert summary["stable"] is False
    assert sum(samples) >= 1000.0 > sum(samples[:-1])  # stopped right after crossing 1 s


def test_slow_warmup_and_steady_loop_are_each_capped_by_max_seconds():
    timer = FakeTimer([2000.0] * 10)
    samples, summary = run_protocol(
        timer.run_once, warmup=5, min_runs=10, max_runs=100, max_seconds=3.0, clock=timer.clock
    )
    assert summary["warmup"] == 2  # 2 s, then 4 s >= 3 s
    assert samples == [2000.0, 2000.0]  # the steady loop has its own 3 s budget
    assert summary["stopped_by"] == "max_seconds" and summary["stable"] is False
    assert summary["rel_ci"] == math.inf

    timer = FakeTimer([5000.0] * 10)  # one run longer than the whole budget: still one sample
    samples, summary = run_protocol(timer.run_once, warmup=3, max_seconds=1.0, clock=timer.clock)
    assert summary["warmup"] == 1 and samples == [5000.0]


def test_before_steady_runs_between_warmup_and_samples():
    timer = FakeTimer([1.0] * 50)
    seen = []
    run_protocol(timer.run_once, warmup=4, min_runs=6, clock=timer.clock, before_steady=lambda: seen.append(timer.calls))
    assert seen == [4]


def test_ci_is_checked_every_few_runs_not_every_run(monkeypatch):
    calls = []
    real = measure.median_rel_ci
    monkeypatch.setattr(measure, "median_rel_ci", lambda s: calls.append(len(s)) or real(s))
    rng = np.random.default_rng(4)
    timer = FakeTimer(list(rng.uniform(1.0, 10.0, size=1000)))
    run_protocol(timer.run_once, warmup=0, min_runs=10, max_runs=1000, target_rel_ci=1e-6, max_seconds=1e9, clock=timer.clock)
    checks = calls[:-1]  # the last call is the final summary
    assert checks[0] == 10
    assert len(checks) < 60
    assert all(b - a >= max(1, a // 10) for a, b in zip(checks, checks[1:]))


def test_gc_is_restored_after_the_loop():
    assert gc.isenabled()
    timer = FakeTimer([1.0] * 20)
    run_protocol(timer.run_once, warmup=0, min_runs=10, clock=timer.clock)
    assert gc.isenabled()

    def boom():
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        run_protocol(boom, warmup=0)
    assert gc.isenabled()


def test_summary_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.lognormal(1.0, 0.3, size=237)
    s = summarize(list(x), target_rel_ci=0.02)
    assert s["median"] == pytest.approx(np.median(x))
    assert s["mean"] == pytest.approx(x.mean())
    assert s["std"] == pytest.approx(x.std(ddof=1))
    assert s["p10"] == pytest.approx(np.percentile(x, 10))
    assert s["p90"] == pytest.approx(np.percentile(x, 90))
    assert s["n"] == 237
    assert s["rel_ci"] == pytest.approx(median_rel_ci(x))
    assert s["stable"] == (s["rel_ci"] <= 0.02)
    assert set(s) == {"median", "mean", "std", "p10", "p90", "n", "rel_ci", "stable"}
    with pytest.raises(ValueError):
        summarize([], 0.02)


def test_median_ci_known_values():
    x = np.arange(1.0, 101.0)  # 1..100, median 50.5
    # 95% order-statistic CI for n=100 is [x_(40), x_(61)] = [40, 61]
    assert median_rel_ci(np.random.default_rng(0).permutation(x)) == pytest.approx((61 - 40) / 2 / 50.5)
    assert median_rel_ci([3.0] * 20) == 0.0
    assert median_rel_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == math.inf  # too few for a 95% interval


@pytest.mark.parametrize("n", [6, 7, 10, 15, 30, 57, 100, 333, 1000])
def test_median_ci_covers_at_least_95_percent(n):
    """Exact binomial coverage of the chosen order statistics is >= 95% and not wildly conservative."""
    lo, hi = measure._median_ci_ranks(n)
    # CI [x_(lo+1), x_(hi+1)] (1-based) covers the true median iff lo+1 <= B <= hi, B ~ Bin(n, 1/2)
    coverage = sum(math.comb(n, k) for k in range(lo + 1, hi + 1)) / 2**n
    assert coverage >= 0.95
    if n >= 30:
        assert coverage < 0.985


def test_real_timing_of_a_sleep():
    samples, summary = run_protocol(lambda: time.sleep(0.002), warmup=1, min_runs=5, max_runs=20, max_seconds=0.5)
    assert 5 <= len(samples) <= 20
    assert summary["median"] >= 2.0
    assert summary["median"] < 50.0


def test_the_rewarm_median_is_numpys():
    rng = np.random.default_rng(3)
    for n in range(1, 40):
        values = list(rng.exponential(1.0, n))
        assert measure._median(values) == float(np.median(values))
