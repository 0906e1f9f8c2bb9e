"""Adaptive-sampling build on `local`: within budget, resumable without duplicates, and a report
whose numbers are metrics.report of the held-out points."""

from __future__ import annotations

import numpy as np
import pytest

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.devices.registry import Registry
from edgelat.lut.store import kernel_rows, model_rows, open_db
from edgelat.predictors.calibration import Calibration, kernel_weights, measured_models, model_parts, run_overhead_ms
from edgelat.predictors.layout import LayoutCost
from edgelat.predictors.kernel import KernelPredictor
from edgelat.predictors.metrics import report as metrics_report
from edgelat.predictors.report import plot_report, predictor_report
from edgelat.predictors.sampling import INITIAL_SHARE, MODELS_SHARE, KernelSampler, build_predictor, build_state
from edgelat.profiler import networks
from edgelat.profiler.ops import KernelSpec

CONFIG = RuntimeConfig()
GROUP = 24  # kernels per measured group (the budget is checked between groups)
KERNELS = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, target_rel_ci=0.05, max_seconds=0.3)
MODELS = MeasurementProtocol(warmup=2, min_runs=5, max_runs=50, target_rel_ci=0.03, max_seconds=1.0)
SMALL_MODELS = [
    ("tiny-48", "calibration", networks.tiny_net(48)),
    ("tiny-64", "calibration", networks.tiny_net(64)),
    ("tiny-96", "calibration", networks.tiny_net(96)),
    ("tiny-80", "holdout", networks.tiny_net(80)),
]


def _build(db, budget_s, **kw):
    with Registry(db).connect("local") as client:
        options = dict(kernel_protocol=KERNELS, model_protocol=MODELS, models=SMALL_MODELS, initial_size=400,
                       detect_fusion=False, passes=2, model_passes=2, group=GROUP)
        options.update(kw)
        return build_predictor(db, "local", client, CONFIG, budget_s, **options)


def test_sampler_draws_real_cnn_kernels_deterministically():
    a, b = KernelSampler(3).initial(300), KernelSampler(3).initial(300)
    assert [s.key for s in a] == [s.key for s in b]
    assert len({s.key for s in a}) == len(a)
    ops = {s.op for s in a}
    assert {"mbconv", "conv2d", "fc", "global-avgpool"} <= ops and len(ops) >= 10
    mb = [s for s in a if s.op == "mbconv"]
    assert all(s.kernel in (3, 5, 7) and 1 <= s.expand <= 6.5 and s.act in ("relu", "relu6", "hswish") for s in mb)
    near = KernelSampler(3).around(mb[:5], 4, round_no=1)
    assert near and all(s.op == "mbconv" for s in near)
    assert KernelSampler(3).around(mb[:5], 4, 1) == near and KernelSampler(3).around(mb[:5], 4, 2) != near


def test_sampler_draws_channel_counts_off_the_grid_of_8_too():
    """Pruned widths (58 channels) take slower paths in real runtimes; the regressors can only
    learn that from off-grid draws, and they see it through the alignment features."""
    from edgelat.profiler.ops import FEATURE_NAMES, channel_alignment

    drawn = KernelSampler(3).initial(600)
    convs = [s for s in drawn if s.op in ("conv2d", "dwconv2d") and s.cin != 3]
    off = [s for s in convs if s.cin % 8]
    assert 0.05 < len(off) / len(convs) < 0.5
    assert {channel_alignment(s.cin) for s in off} >= {1, 2, 4}
    i = FEATURE_NAMES.index("cin_align")
    assert [s.features()[i] for s in off[:20]] == [float(channel_alignment(s.cin)) for s in off[:20]]
    assert [channel_alignment(c) for c in (58, 60, 64, 96, 7, 0)] == [2, 4, 16, 16, 1, 0]


def test_build_profiles_within_budget_fits_calibrates_and_reports(tmp_path, monkeypatch):
    from edgelat.profiler import runner

    settles = []
    real = runner.median_of_passes

    def spy(client, items, config, protocol, passes, enough=None, settle_s=0.0, rounds=0):
        settles.append((protocol, settle_s))
        return real(client, items, config, protocol, passes, enough, settle_s, rounds)

    monkeypatch.setattr(runner, "median_of_passes", spy)  # every measurement goes through the job runner
    db = open_db(tmp_path / "edgelat.db")
    said = []
    summary = _build(db, 20.0, progress=lambda phase, spent, budget, message: said.append((phase, spent, message)))
    # whole models are measured warm (no settling), then sustained after running unmeasured for
    # half the models' share of this small budget; kernels never settle
    assert [s for p, s in settles if p == MODELS] == [0.0, MODELS_SHARE * 20.0 / 2]
    assert {s for p, s in settles if p == KERNELS} == {0.0}
    # the budget is checked between groups, so a phase's last group may overrun its limit but no
    # group starts after it (a structural check: how long a group takes depends on the machine)
    groups = [(phase, spent) for phase, spent, message in said if message.endswith("kernels measured this run")]
    limits = {"initial": INITIAL_SHARE * 20.0, "adaptive": (1 - MODELS_SHARE) * 20.0, "models": 20.0}
    for phase, limit in limits.items():
        assert sum(spent >= limit for p, spent in groups if p == phase) <= 1, (phase, groups)
    # the adaptive rounds go on until only MODELS_SHARE of the budget is left
    assert summary.spent_s >= (1 - MODELS_SHARE) * 20.0, summary.to_dict()
    assert summary.rounds >= 1 and summary.kernels_measured > 50
    assert summary.models_measured == 2 * len(SMALL_MODELS)  # warm and sustained
    assert len(model_rows(db, "local", CONFIG)) == 2 * len(SMALL_MODELS)
    # the build's kernel groups run under the drift sentinel: every row has the level it was measured at
    assert all(r["sentinel_level"] is not None for r in kernel_rows(db, "local", CONFIG))
    predictor = KernelPredictor.load(db, "local", CONFIG)
    assert predictor is not None and "mbconv" in predictor.ops_
    assert summary.regressors["mbconv"]["rows"] == predictor.n_rows_["mbconv"]
    cal = Calibration.load(db, "local", CONFIG)
    assert cal is not None and cal.n_models_ == 3 and cal.state_ == "warm"
    sustained = Calibration.load(db, "local", CONFIG, "sustained")
    assert sustained is not None and sustained.n_models_ == 3 and sustained.state_ == "sustained"
    assert set(summary.calibration["states"]) == {"warm", "sustained"}

    rep = predictor_report(db, "local", CONFIG)
    pts = rep["kernels"]["points"]
    assert len(pts) == len(predictor.cv_pred_)
    expected = metrics_report([p["measured_ms"] for p in pts], [p["predicted_ms"] for p in pts])
    assert rep["kernels"]["overall"] == pytest.approx(expected, nan_ok=True)
    mb = [p for p in pts if p["type"] == "mbconv"]
    assert rep["kernels"]["by_type"]["mbconv"]["n"] == len(mb)
    # the held-out points are out-of-fold predictions, not the fitted values
    assert all(p["predicted_ms"] == predictor.cv_pred_[p["key"]] for p in pts)
    rows = {r["name"]: r for r in rep["models"]["rows"]}
    assert set(rows) == {name for name, _, _ in SMALL_MODELS}
    hold = rows["tiny-80"]
    assert hold["role"] == "holdout"
    n = len(networks.tiny_net(80))
    overhead = run_overhead_ms(predictor)
    assert overhead > 0  # the build profiles the near-empty model first
    sum_ms = float(predictor.predict_specs(networks.tiny_net(80)).sum())
    assert hold["kernels_sum_ms"] == pytest.approx(sum_ms)
    weights = kernel_weights(networks.tiny_net(80))
    # the build measured the device's layout conversion price and calibrated on prices less it
    assert summary.layout is not None and cal.layout_ == LayoutCost.from_dict(summary.layout)
    parts = model_parts(networks.tiny_net(80), predictor.predict_specs(networks.tiny_net(80)), cal.layout_)
    # its span of kernel sums is of the sums before the conversions, as predict's interval reads them
    plain = [float(predictor.predict_specs(m["kernels"]).sum()) for m in measured_models(db, "local", CONFIG, role="calibration")]
    assert cal.range_["sum_ms"] == pytest.approx([min(plain), max(plain)])
    expected_pred = sum_ms if cal.is_identity else float(cal.predict([parts], [n], [weights])[0])
    assert hold["predicted_ms"] == pytest.approx(expected_pred)
    expected = metrics_report([hold["measured_ms"]], [hold["predicted_ms"]])
    assert {k: v for k, v in rep["models"]["holdout"].items() if v is not None} == pytest.approx({k: v for k, v in expected.items() if k != "spearman"})
    measured = {m["name"]: m["measured_ms"] for m in measured_models(db, "local", CONFIG)}
    assert all(rows[n]["measured_ms"] == measured[n] for n in rows)
    png = plot_report(rep, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_build_resumes_without_measuring_anything_twice(tmp_path):
    db = open_db(tmp_path / "edgelat.db")
    calls = {"n": 0}

    def interrupt_after_two_groups(phase, spent, budget, message):
        if message.endswith("kernels measured this run"):  # said after each stored group
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _build(db, 12.0, progress=interrupt_after_two_groups, models=[])
    first = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "local", CONFIG)}
    spent = build_state(db, "local", CONFIG)["spent_s"]
    assert GROUP < len(first) <= 2 * GROUP and 0 < spent < 12.0
    assert KernelPredictor.load(db, "local", CONFIG) is None  # interrupted before fitting

    summary = _build(db, 12.0, models=[], recheck_error=float("inf"))  # no deliberate re-measuring here
    second = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "local", CONFIG)}
    assert all(second[k] == t for k, t in first.items()), "a kernel measured before the interrupt was measured again"
    assert len(second) == len(first) + summary.kernels_measured > len(first)
    (dupes,) = db.execute(
        "select count(*) - count(distinct kernel_key) from kernel_measurements where device = 'local'"
    ).fetchone()
    assert dupes == 0
    assert summary.spent_s == pytest.approx(spent + summary.spent_this_run_s)
    assert summary.spent_s >= 12.0
    # the budget is spent: a third run measures nothing and only refits
    third = _build(db, 12.0, models=[])
    assert third.kernels_measured == 0 and third.spent_this_run_s == 0
    assert len(kernel_rows(db, "local", CONFIG)) == len(second)
    assert KernelPredictor.load(db, "local", CONFIG) is not None
    assert np.isfinite(third.spent_s)


class _ScriptedClient:
    """Replays per-pass medians (a pure selection rule needs controlled figures, not timing)."""

    def __init__(self, medians_by_tag: dict[str, list[float | None]]) -> None:
        self.medians, self.calls = medians_by_tag, 0

    def benchmark_batch(self, items, config, protocol):
        from edgelat.values import BenchmarkResult, LatencySummary

        i, self.calls = self.calls, self.calls + 1
        for item in items:
            m = self.medians[item.tag][i]
            if m is None:
                yield BenchmarkResult("sha", config, tag=item.tag, error="CorruptModel: boom")
            else:
                yield BenchmarkResult("sha", config, LatencySummary(m, m, 0.0, m, m, 10, 0.01, True), tag=item.tag)


def test_median_of_passes_keeps_the_middle_pass_and_stops_when_told():
    from edgelat.values import BenchmarkItem
    from edgelat.profiler.runner import median_of_passes

    items = [BenchmarkItem("a", "onnx", t) for t in ("steady", "one-fast", "one-slow", "flaky", "broken")]
    client = _ScriptedClient({
        "steady": [2.0, 2.1, 1.9, 2.0, 2.05],
        "one-fast": [2.0, 1.2, 2.1, 2.0, 2.2],  # a neighbour idle for a moment: the minimum would take 1.2
        "one-slow": [2.0, 3.5, 2.1, 2.0, 1.9],
        "flaky": [None, 4.0, None, 5.0, None],  # the failures are left out; lower middle of (4, 5)
        "broken": [None] * 5,
    })
    got = median_of_passes(client, items, CONFIG, KERNELS, passes=5)
    assert {t: (r.latency.median if r.ok else r.error) for t, r in got.items()} == {
        "steady": 2.0, "one-fast": 2.0, "one-slow": 2.0, "flaky": 4.0, "broken": "CorruptModel: boom"}
    # `enough` is asked after each pass; one pass is always made
    client.calls = 0
    got = median_of_passes(client, items, CONFIG, KERNELS, passes=5, enough=lambda: client.calls >= 3)
    assert client.calls == 3 and got["one-fast"].latency.median == 2.0
    client.calls = 0
    median_of_passes(client, items, CONFIG, KERNELS, passes=5, enough=lambda: True)
    assert client.calls == 1


def test_settling_passes_run_first_and_are_not_kept(monkeypatch):
    """Whole models run unmeasured for ``settle_s`` before the kept passes: the first
    minute of sustained load is faster than the rest (see MODEL_SETTLE_S)."""
    from edgelat.values import BenchmarkItem
    from edgelat.profiler import runner

    clock = {"t": 0.0}
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock["t"])

    class _Timed(_ScriptedClient):  # each pass takes 10 s of the fake clock
        def benchmark_batch(self, items, config, protocol):
            clock["t"] += 10.0
            return super().benchmark_batch(items, config, protocol)

    fast_then_sustained = [1.0, 1.0, 1.0, 2.0, 2.1, 1.9]
    client = _Timed({"m": fast_then_sustained})
    got = runner.median_of_passes(client, [BenchmarkItem("a", "onnx", "m")], CONFIG, MODELS, passes=3, settle_s=25.0)
    assert client.calls == 6 and got["m"].latency.median == 2.0  # passes at 0, 10, 20 s settled; 2.0/2.1/1.9 kept
    client = _Timed({"m": fast_then_sustained})
    got = runner.median_of_passes(client, [BenchmarkItem("a", "onnx", "m")], CONFIG, MODELS, passes=3)
    assert client.calls == 3 and got["m"].latency.median == 1.0  # without settling the fast start is what is kept
    # a budget spent ends the settling too, and one kept pass is still made
    client = _Timed({"m": fast_then_sustained})
    got = runner.median_of_passes(client, [BenchmarkItem("a", "onnx", "m")], CONFIG, MODELS, passes=3,
                                    settle_s=25.0, enough=lambda: client.calls >= 1)
    assert client.calls == 2 and got["m"].latency.median == 1.0


def test_adaptive_rounds_divide_attention_by_kernel_type_share():
    """The worst kernels are taken per type in proportion to the type's share of real networks."""
    from edgelat.predictors.sampling import MIN_TYPE_SHARE, worst_kernels

    class Pred:
        cv_pred_: dict[str, float] = {}

    specs = [KernelSpec("maxpool", 8 + i, 8 + i, 16, kernel=3, stride=2) for i in range(40)]
    specs += [KernelSpec("mbconv", 8 + i, 8 + i, 16, 16, kernel=3, expand=3, act="relu") for i in range(40)]
    y = np.ones(len(specs))
    Pred.cv_pred_ = {s.key: (3.0 if s.op == "maxpool" else 1.2) for s in specs}  # pools are off by far more
    worst = worst_kernels(Pred(), specs, y, 20, {"mbconv": 0.75, "conv2d": 0.25})
    ops = [s.op for _, s in worst]
    assert ops.count("mbconv") == 15 and ops.count("maxpool") == int(np.ceil(20 * MIN_TYPE_SHARE))
    assert worst[0][1].op == "maxpool"  # still ordered by error


def test_adaptive_rounds_stop_when_the_sampler_runs_dry(tmp_path, monkeypatch):
    """Fitting is not charged to the budget: a sampler that proposes nothing new must not
    keep the build refitting until the end of time. Three idle rounds end the adaptive phase."""
    monkeypatch.setattr(KernelSampler, "around", lambda self, specs, per_spec, round_no: [])
    monkeypatch.setattr(KernelSampler, "fresh", lambda self, n, round_no: [])
    db = open_db(tmp_path / "edgelat.db")

    def fail_if_endless(phase, spent, budget, message):
        if message.startswith("round 6:"):  # without the guard the loop never ends: fail instead of hanging
            raise AssertionError("the adaptive rounds went on with nothing new to measure")

    summary = _build(db, 3600.0, models=[], initial_size=60, progress=fail_if_endless)
    assert summary.rounds == 3
    from edgelat.predictors.fusion import load_rules

    drawn = {s.key for s in KernelSampler(0, load_rules(db, "local", CONFIG)).initial(60)}
    table = {r["kernel_key"] for r in kernel_rows(db, "local", CONFIG)}
    assert summary.kernels_measured == len(table) and table <= drawn  # nothing past the initial draw
    assert summary.spent_s < 600.0  # the budget was far from spent
    assert KernelPredictor.load(db, "local", CONFIG) is not None


def test_agent_lost_in_the_models_phase_keeps_the_kernels_and_still_fits(tmp_path):
    """A real agent killed while the whole models are measured: the build ends with
    `interrupted` set instead of an exception, the kernel table and the time spent are
    kept, the regressors are fitted and saved, and no model figure is stored."""
    import signal

    from agent_helpers import start_agent
    from edgelat.agents.remote import GrpcClient

    db = open_db(tmp_path / "edgelat.db")
    agent = start_agent(tmp_path / "agent")

    def kill_when_models_start(phase, spent, budget, message):
        if phase == "models" and message.startswith("measuring"):
            agent.proc.kill()

    try:
        with GrpcClient(agent.address) as client:
            summary = build_predictor(db, "board", client, CONFIG, 6.0, kernel_protocol=KERNELS, model_protocol=MODELS,
                                      models=SMALL_MODELS, initial_size=120, detect_fusion=False, passes=2,
                                      model_passes=2, group=GROUP, progress=kill_when_models_start)
    finally:
        agent.stop(signal.SIGKILL)
    assert "rerun the same command" in summary.interrupted
    assert summary.models_measured == 0 and model_rows(db, "board", CONFIG) == []
    assert summary.kernels_total == len(kernel_rows(db, "board", CONFIG)) > 0
    assert KernelPredictor.load(db, "board", CONFIG) is not None
    assert build_state(db, "board", CONFIG)["spent_s"] == pytest.approx(summary.spent_s) and summary.spent_s > 0


def test_a_device_lost_during_the_layout_probe_ends_the_build_in_one_line_and_a_rerun_goes_on(tmp_path):
    from edgelat.errors import AgentUnreachable

    class Gone:  # the agent stops answering before the first probe reaches it
        def put_model(self, data):
            raise AgentUnreachable("the agent stopped answering")

        def close(self):
            pass

    db = open_db(tmp_path / "edgelat.db")
    summary = build_predictor(db, "local", Gone(), CONFIG, 5.0, detect_fusion=False, models=[])
    assert "stopped answering" in summary.interrupted and "rerun the same command" in summary.interrupted
    assert summary.layout is None and kernel_rows(db, "local", CONFIG) == []
    again = _build(db, 5.0, models=[])  # the device is back: the probe and the build go on
    assert not again.interrupted and again.layout is not None and again.kernels_measured > 0
