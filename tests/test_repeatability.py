"""Repeatable numbers (issue 15): interleaved rounds on the device, the drift sentinel,
normalized figures, and the defined state each row records.

Real LocalBackend/onnxruntime and real gRPC on loopback for the rounds path; a scripted
client where the device's speed must be controlled (a 10% slowdown mid-batch); a fake
sysfs tree for governors and thermal sensors this VM does not have.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgelat import config as edgelat_config
from edgelat.agents.client import LocalClient
from edgelat.agents.environment import defined_state
from edgelat.agents.local import LocalBackend
from edgelat.agents.measure import RoundsTimer, median_rel_ci
from edgelat.values import BenchmarkItem, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.cli import main
from edgelat.lut.store import kernel_rows, open_db
from edgelat.lut.table import table_rows
from edgelat.predictors.kernel import table_specs
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.presets import get_preset
from edgelat.profiler.sentinel import SENTINEL_SPECS

CONFIG = RuntimeConfig()
FAST = MeasurementProtocol(warmup=1, min_runs=6, max_runs=60, target_rel_ci=0.05, max_seconds=0.3)
SENTINEL_KEYS = {s.key for s in SENTINEL_SPECS}


def _items(client, specs):
    return [BenchmarkItem(client.put_model(build_model(s, "onnx")), "onnx", s.key) for s in specs]


# ---- rounds on the device -------------------------------------------------------------------


def test_rounds_interleave_items_in_shuffled_order_with_one_session_each():
    specs = get_preset("smoke")[:5]
    backend = LocalBackend()
    with LocalClient(backend) as client:
        items = _items(client, specs)
        models = [(client.cache.path(i.model_sha256), "onnx") for i in items]
        got = dict(backend.benchmark_rounds(models, CONFIG, FAST, rounds=4, rng=random.Random(7)))
    assert backend.sessions_opened == len(specs)  # one session per item, kept across all rounds
    assert sorted(got) == list(range(len(specs)))
    orders: dict[int, dict[int, int]] = {}  # round -> {place: item}
    for i, result in got.items():
        assert result.ok, result.error
        rounds = result.extra["rounds"]
        assert rounds["asked"] == 4 and rounds["done"] >= 4 == len({r for r, _ in rounds["positions"][:4]})
        assert result.latency.n >= FAST.min_runs
        for r, place in rounds["positions"]:
            orders.setdefault(r, {})[place] = i
    first_four = [tuple(orders[r][p] for p in sorted(orders[r])) for r in range(4)]
    assert all(sorted(o) == list(range(len(specs))) for o in first_four)  # every item in every early round
    assert len(set(first_four)) > 1, "the rounds did not reshuffle the order"


def test_a_big_rounds_batch_is_interleaved_in_groups_of_open_sessions(monkeypatch):
    from edgelat.agents import local

    monkeypatch.setattr(local, "MAX_OPEN_SESSIONS", 2)
    specs = get_preset("smoke")[:5]
    backend = LocalBackend()
    with LocalClient(backend) as client:
        items = _items(client, specs)
        results = list(client.benchmark_batch(items, CONFIG, FAST, rounds=2))
    assert sorted(r.tag for r in results) == sorted(s.key for s in specs) and all(r.ok for r in results)
    assert backend.sessions_opened == 5
    # each group of two finishes before the next opens: results come group by group
    groups = [{items[j].tag for j in range(k, min(k + 2, 5))} for k in (0, 2, 4)]
    assert [set(r.tag for r in results[a:b]) for a, b in ((0, 2), (2, 4), (4, 5))] == groups
    assert all(place < 2 for r in results for _, place in r.extra["rounds"]["positions"])


def test_rounds_meter_energy_over_one_contiguous_stretch_per_item():
    from edgelat.agents.energy.base import EnergyMeter

    class CountingMeter(EnergyMeter):  # a sensor that reads 0.5 J per interval (a real one needs RAPL/NVML)
        name, scope, min_interval_s = "counting", "test", 0.01

        def __init__(self):
            super().__init__()
            self.starts = 0

        def available(self):
            return True

        def _begin(self):
            self.starts += 1

        def _end(self):
            return 0.5

    specs = get_preset("smoke")[:3]
    backend = LocalBackend()
    meter = backend._meters["cpu"] = CountingMeter()
    with LocalClient(backend) as client:
        results = list(client.benchmark_batch(_items(client, specs), CONFIG, FAST, rounds=3))
    assert meter.starts == len(specs)  # once per item, not once per burst
    for r in results:
        assert r.extra["rounds"]["done"] >= 3
        runs = int(r.extra["energy_method"].split("stretch of ")[1].split()[0])
        assert runs >= 0.02 * 1000 / r.latency.median * 0.99  # about twice the counter's resolution
        assert r.energy_mj == pytest.approx(500.0 / runs)
    # no sensor: nothing extra runs and the meter's reason is the note
    plain = LocalBackend()
    with LocalClient(plain) as client:
        (r,) = list(client.benchmark_batch(_items(client, specs[:1]), CONFIG, FAST, rounds=2))
        found = plain._meters["cpu"]
    if found.name == "none":
        assert r.energy_mj is None and r.energy_note == found.note and "energy_method" not in r.extra


def test_rounds_over_grpc_stream_each_item_and_old_requests_keep_the_old_order(tmp_path):
    from edgelat.agents.remote import GrpcClient
    from edgelat.agents.server import make_server

    backend = LocalBackend()
    server = make_server(backend, "127.0.0.1:0", cache_dir=tmp_path / "cache")
    server.start()
    try:
        with GrpcClient(f"127.0.0.1:{server.edgelat_port}") as client:
            specs = get_preset("smoke")[:4]
            items = _items(client, specs)
            missing = BenchmarkItem("0" * 64, "onnx", "not-put")
            results = list(client.benchmark_batch(items + [missing], CONFIG, FAST, rounds=3))
            assert backend.sessions_opened == len(specs)
            by_tag = {r.tag: r for r in results}
            assert set(by_tag) == {s.key for s in specs} | {"not-put"}
            assert "not on the device" in by_tag["not-put"].error
            assert all(by_tag[s.key].extra["rounds"]["done"] >= 3 for s in specs)
            # rounds unset (an older client): one by one, in request order, no rounds record
            plain = list(client.benchmark_batch(items, CONFIG, FAST))
            assert [r.tag for r in plain] == [s.key for s in specs]
            assert all("rounds" not in r.extra for r in plain)
    finally:
        server.stop(0)


def test_rounds_timer_stops_on_the_ci_over_all_rounds_never_before_the_minimum_rounds():
    clock = {"t": 0}
    durations = iter([])

    def run_once():
        clock["t"] += next(durations)

    # constant runs: the CI is met as soon as it may be checked, i.e. after `min_rounds` rounds
    durations = iter([1_000_000] * 1000)
    timer = RoundsTimer(min_rounds=4, min_runs=6, max_runs=500, target_rel_ci=0.02, max_seconds=10,
                        rewarm=0, clock=lambda: clock["t"])
    while not timer.done:
        timer.burst(run_once)
    assert timer.rounds == 4 and timer.stopped_by == "target" and len(timer.samples) == 8  # 4 bursts of ceil(6/4)
    # a slow first round (the device was busy then): the CI covers all samples, so it keeps the item
    # going past the minimum rounds until the slow samples no longer widen the median's interval
    clock["t"] = 0
    speeds = [1.5] + [1.0] * 200
    timer = RoundsTimer(min_rounds=3, min_runs=6, max_runs=400, target_rel_ci=0.02, max_seconds=100,
                        rewarm=0, clock=lambda: clock["t"])
    while not timer.done:
        level = speeds[timer.rounds]
        durations = iter([int(1_000_000 * level)] * 1000)
        timer.burst(run_once)
    assert timer.rounds > 3
    s = timer.summary()
    assert s["stopped_by"] == "target" and s["rel_ci"] == median_rel_ci(timer.samples) <= 0.02
    assert s["rounds"] == timer.rounds and s["median"] == 1.0
    # caps: max_runs and max_seconds end an item that never converges
    clock["t"] = 0
    rng = random.Random(1)
    durations = iter([int(1_000_000 * rng.uniform(1, 3)) for _ in range(1000)])
    timer = RoundsTimer(min_rounds=2, min_runs=6, max_runs=30, target_rel_ci=0.0001, max_seconds=100,
                        rewarm=0, clock=lambda: clock["t"])
    while not timer.done:
        timer.burst(run_once)
    assert timer.stopped_by == "max_runs" and len(timer.samples) == 30 and not timer.summary()["stable"]


# ---- the drift sentinel on a scripted device ----------------------------------------------


class ScriptedDevice:
    """A device whose speed the test sets: each kernel's median is a fixed base figure
    times the device's current slowdown, which can change between batches."""

    def __init__(self, slow_from_batch: int | None = None, factor: float = 1.1, broken: set[str] = frozenset()):
        self.slow_from_batch, self.factor, self.broken = slow_from_batch, factor, broken
        self.batches: list[list[str]] = []
        self.rounds_asked: list[int] = []

    @staticmethod
    def base(tag: str) -> float:
        return 0.1 + int(hashlib.sha256(tag.encode()).hexdigest()[:6], 16) % 1000 / 100.0

    def speed(self) -> float:
        slow = self.slow_from_batch is not None and len(self.batches) - 1 >= self.slow_from_batch
        return self.factor if slow else 1.0

    def put_model(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def benchmark_batch(self, items, config, protocol, rounds=0):
        self.batches.append([i.tag for i in items])
        self.rounds_asked.append(rounds)
        speed = self.speed()
        for item in items:
            if item.tag in self.broken:
                yield BenchmarkResult(item.model_sha256, config, tag=item.tag,
                                      error="CorruptModel: onnxruntime cannot run Conv here (missing op)")
                continue
            m = self.base(item.tag) * speed
            yield BenchmarkResult(item.model_sha256, config, LatencySummary(m, m, 0.0, m, m, 20, 0.01, True),
                                  tag=item.tag)


SPECS = get_preset("mobilenet")[:12]


def test_sentinel_level_per_row_normalized_figure_and_a_slowdown_mid_batch(tmp_path):
    db = open_db(tmp_path / "edgelat.db")
    # batches: 0 sentinel, 1 chunk A, 2 sentinel, 3 chunk B (10% slower from here on), 4 sentinel, 5 chunk C, 6 sentinel
    device = ScriptedDevice(slow_from_batch=3)
    summary = profile_kernels(db, "board", device, SPECS, CONFIG, FAST, chunk=4, rounds=3, sentinel_every_s=0)
    assert summary.measured == 12 and not summary.interrupted
    assert device.rounds_asked == [3] * 7
    assert [set(b) == SENTINEL_KEYS for b in device.batches] == [True, False] * 3 + [True]
    assert [c.level for c in summary.sentinel] == pytest.approx([1.0, 1.0, 1.1, 1.1])
    assert summary.drift == pytest.approx(0.1)
    rows = {r["kernel_key"]: r for r in kernel_rows(db, "board", CONFIG)}
    chunks = [device.batches[i] for i in (1, 3, 5)]
    for key in chunks[0]:  # before the slowdown: raw = normalized = base
        assert rows[key]["median_ms"] == pytest.approx(ScriptedDevice.base(key))
        assert rows[key]["sentinel_level"] == pytest.approx(1.0)
    for key in chunks[2]:  # after it: raw 10% up, the sentinel shows it and the normalized figure divides it out
        assert rows[key]["median_ms"] == pytest.approx(1.1 * ScriptedDevice.base(key))
        assert rows[key]["sentinel_level"] == pytest.approx(1.1)
        assert rows[key]["median_norm_ms"] == pytest.approx(ScriptedDevice.base(key))
    for key in chunks[1]:  # between a check at 1.0 and one at 1.1: the geometric mean of the two
        assert rows[key]["sentinel_level"] == pytest.approx(1.1 ** 0.5)
    for r in rows.values():
        assert r["median_norm_ms"] == pytest.approx(r["median_ms"] / r["sentinel_level"])
    # the predictors learn the normalized figure of a row measured under large drift (level 1.1),
    # the raw one where the level is within the sentinel's own spread (1.0, 1.049)
    specs, y = table_specs(db, "board", CONFIG)
    by_key = dict(zip([s.key for s in specs], y))
    for k in by_key:
        drifted = abs(rows[k]["sentinel_level"] - 1.0) > 0.05
        assert by_key[k] == pytest.approx(rows[k]["median_norm_ms" if drifted else "median_ms"]), k
    assert any(abs(rows[k]["sentinel_level"] - 1.0) > 0.05 for k in by_key)
    assert any(abs(rows[k]["sentinel_level"] - 1.0) <= 0.05 for k in by_key)

    # a second pass on a device now 10% slow throughout: raw differs, normalized agrees with the first
    first_norm = {k: r["median_norm_ms"] for k, r in rows.items() if k in chunks[0]}
    again = profile_kernels(db, "board", ScriptedDevice(slow_from_batch=0), SPECS, CONFIG, FAST, chunk=4, force=True,
                            sentinel_every_s=0)
    assert [c.level for c in again.sentinel] == pytest.approx([1.1] * 4)  # the reference stays the first state
    rows2 = {r["kernel_key"]: r for r in kernel_rows(db, "board", CONFIG)}
    assert all(rows2[k]["median_norm_ms"] == pytest.approx(v) for k, v in first_norm.items())
    assert all(rows2[k]["median_ms"] == pytest.approx(1.1 * ScriptedDevice.base(k)) for k in first_norm)


def test_sentinel_checks_come_at_intervals_and_rows_between_get_the_levels_around_them(tmp_path, monkeypatch):
    from edgelat.profiler import jobs

    clock = {"t": 0.0}
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: clock["t"])

    class Timed(ScriptedDevice):  # every batch takes 3 s of the fake clock
        def benchmark_batch(self, items, config, protocol, rounds=0):
            clock["t"] += 3.0
            return super().benchmark_batch(items, config, protocol, rounds)

    db = open_db(tmp_path / "edgelat.db")
    device = Timed(slow_from_batch=3)  # the second sentinel check (batch 3) and what follows are 10% slower
    summary = profile_kernels(db, "board", device, SPECS, CONFIG, FAST, chunk=4, sentinel_every_s=5.0)
    # check at the start (ends at 3 s); chunk A ends at 6 s (3 s since: none); chunk B ends at 9 s: a check;
    # chunk C is the last: a check
    assert [set(b) == SENTINEL_KEYS for b in device.batches] == [True, False, False, True, False, True]
    assert [c.at_s for c in summary.sentinel] == [3.0, 12.0, 18.0]
    assert [c.level for c in summary.sentinel] == pytest.approx([1.0, 1.1, 1.1])
    rows = {r["kernel_key"]: r for r in kernel_rows(db, "board", CONFIG)}
    for key in device.batches[1] + device.batches[2]:  # chunks A and B, between the checks at 1.0 and 1.1
        assert rows[key]["sentinel_level"] == pytest.approx(1.1 ** 0.5)
    for key in device.batches[4]:
        assert rows[key]["sentinel_level"] == pytest.approx(1.1)


def test_lut_show_and_export_flag_rows_measured_under_large_drift(tmp_path):
    db = open_db(edgelat_config.db_path())
    profile_kernels(db, "local", ScriptedDevice(slow_from_batch=3), SPECS, CONFIG, FAST, chunk=4, sentinel_every_s=0)
    shown = {r["kernel_key"]: r for r in table_rows(db, "local")}
    flagged = {k for k, r in shown.items() if r["large_drift"]}
    assert flagged and all(shown[k]["sentinel_level"] > 1.05 for k in flagged)
    assert all(not r["large_drift"] for k, r in shown.items() if r["sentinel_level"] <= 1.05)
    out = CliRunner().invoke(main, ["lut", "show", "--device", "local"], terminal_width=250)
    assert out.exit_code == 0, out.output
    assert "norm ms" in out.output and "+10%" in out.output
    assert f"drift: {len(flagged)} row(s) measured more than 5%" in out.output
    as_json = json.loads(CliRunner().invoke(main, ["lut", "show", "--device", "local", "--json"]).output)
    assert {r["kernel_key"] for r in as_json if r["large_drift"]} == flagged
    csv = tmp_path / "t.csv"
    assert CliRunner().invoke(main, ["lut", "export", "--device", "local", "--out", str(csv)]).exit_code == 0
    header = csv.read_text().splitlines()[0].split(",")
    assert {"median_ms", "median_norm_ms", "sentinel_level", "large_drift"} <= set(header)


def test_a_sentinel_that_cannot_run_leaves_rows_without_a_level_and_says_why(tmp_path):
    db = open_db(tmp_path / "edgelat.db")
    summary = profile_kernels(db, "board", ScriptedDevice(broken=SENTINEL_KEYS), SPECS[:5], CONFIG, FAST, chunk=4)
    assert summary.measured == 5 and all(c.level is None for c in summary.sentinel)
    assert summary.drift is None
    assert any("missing op" in n for n in summary.sentinel_dict()["notes"])
    for r in kernel_rows(db, "board", CONFIG):
        assert r["sentinel_level"] is None and r["median_norm_ms"] is None  # nothing invented
        env = json.loads(r["environment_json"])
        assert env["sentinel"]["level_before"] is None and "missing op" in env["sentinel"]["note"]
    # one sentinel kernel broken: the level rests on the others
    db2 = open_db(tmp_path / "other.db")
    one = next(iter(SENTINEL_KEYS))
    device = ScriptedDevice(broken={one})
    part = profile_kernels(db2, "board", device, SPECS[:5], CONFIG, FAST, chunk=4, sentinel_every_s=0, rounds=0)
    assert device.rounds_asked == [0] * 5  # rounds off: nothing asked of the device (an older agent's batch)
    assert [c.level for c in part.sentinel] == pytest.approx([1.0, 1.0, 1.0])
    assert one in part.sentinel_dict()["notes"][0]
    # a table made only of such rows still trains, on the raw figures
    specs, y = table_specs(db, "board", CONFIG)
    assert len(y) == 5


def test_profile_ops_prints_the_drift_it_saw():
    args = ["profile", "ops", "--device", "local", "--preset", "smoke", "--warmup", "1", "--min-runs", "6",
            "--max-seconds", "0.2", "--rounds", "3"]
    out = CliRunner().invoke(main, args + ["--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    sentinel = got["sentinel"]
    assert got["rounds"] == 3 and got["measured"] == 20
    assert 2 <= len(sentinel["checks"]) <= 3  # start, end, and one between if the first chunk took 5 s
    assert sentinel["first_level"] == 1.0  # the first check ever is the device's reference state
    levels = [c["level"] for c in sentinel["checks"]]
    assert sentinel["drift"] == pytest.approx(max(levels) / min(levels) - 1)
    rows = kernel_rows(open_db(edgelat_config.db_path()), "local", CONFIG)
    assert all(r["median_norm_ms"] == pytest.approx(r["median_ms"] / r["sentinel_level"]) for r in rows)
    human = CliRunner().invoke(main, args + ["--force"])
    assert human.exit_code == 0, human.output
    text = " ".join(human.output.split())  # the console wraps long lines
    assert re.search(r"sentinel: [23] checks, level \d\.\d{3} at start, \d\.\d{3} at end \(range \d\.\d{3}-\d\.\d{3} "
                     r"of the device's reference state\), drift \d+\.\d% within this run", text), text


# ---- resume after an interrupted rounds batch ----------------------------------------------


def test_an_interrupted_rounds_batch_keeps_its_rows_and_the_rerun_skips_them(tmp_path):
    from agent_helpers import start_agent
    from edgelat.agents.remote import GrpcClient

    db = open_db(tmp_path / "edgelat.db")
    specs = get_preset("smoke")
    agent = start_agent(tmp_path / "agent")
    seen: list[str] = []

    def kill_mid_second_chunk(done, total, key, result):
        seen.append(key)
        if len(seen) == 10:
            agent.proc.kill()

    try:
        with GrpcClient(agent.address) as client:
            first = profile_kernels(db, "board", client, specs, CONFIG, FAST, chunk=8, rounds=3,
                                    progress=kill_mid_second_chunk)
    finally:
        agent.stop(signal.SIGKILL)
    assert "rerun the same command" in first.interrupted
    kept = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "board", CONFIG)}
    assert 8 <= len(kept) == first.measured < len(specs)
    assert all(r["sentinel_level"] is not None for r in kernel_rows(db, "board", CONFIG))

    backend = LocalBackend()
    with LocalClient(backend) as client:
        second = profile_kernels(db, "board", client, specs, CONFIG, FAST, chunk=8, rounds=3)
    assert second.skipped == len(kept) and second.measured == len(specs) - len(kept)
    # sessions: the remaining kernels once each, plus the sentinel kernels once per check
    assert backend.sessions_opened == second.measured + len(SENTINEL_SPECS) * len(second.sentinel)
    after = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "board", CONFIG)}
    assert len(after) == len(specs) and all(after[k] == t for k, t in kept.items())


# ---- a defined state: pinning, governor, temperature ----------------------------------------


def test_pinning_is_recorded_in_each_row_and_undone_after():
    allowed = os.sched_getaffinity(0)
    backend = LocalBackend()
    with LocalClient(backend) as client:
        (item,) = _items(client, get_preset("smoke")[:1])
        plain = client.benchmark(item, CONFIG, FAST)
        (rounds,) = list(client.benchmark_batch([item], CONFIG, FAST, rounds=2))
    for result in (plain, rounds):
        control = result.environment["control"]
        if len(allowed) > 1:
            assert control["affinity"] == {"pinned": True, "cpus": [max(allowed)], "method": "sched_setaffinity"}
        else:
            assert not control["affinity"]["pinned"] and "none to spare" in control["affinity"]["note"]
        assert set(control) == {"affinity", "governor", "temperature"}
    assert os.sched_getaffinity(0) == allowed


def _fake_cpus(root: Path, governors: list[str], available: str = "performance powersave") -> None:
    for n, gov in enumerate(governors):
        d = root / "sys/devices/system/cpu" / f"cpu{n}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
        (d / "scaling_available_governors").write_text(available + "\n")


def test_governor_is_set_where_allowed_and_restored(tmp_path):
    _fake_cpus(tmp_path, ["powersave", "powersave"])
    gov_file = tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    with defined_state(tmp_path, pin=False, governor="performance") as state:
        assert state["governor"]["controlled"] is True and state["governor"]["read"]["cpu1"] == "powersave"
        assert gov_file.read_text().strip() == "performance"
    assert gov_file.read_text().strip() == "powersave"


def test_a_device_that_refuses_governor_changes_is_recorded_not_controlled(tmp_path, monkeypatch):
    _fake_cpus(tmp_path, ["schedutil", "schedutil"])
    other = tmp_path / "other"
    _fake_cpus(other, ["ondemand"], available="ondemand powersave")
    real_write = Path.write_text

    def refuse(self, data, *a, **k):  # sysfs answers EACCES/EPERM to a non-privileged writer
        if self.name == "scaling_governor":
            raise PermissionError(13, "Permission denied")
        return real_write(self, data, *a, **k)

    monkeypatch.setattr(Path, "write_text", refuse)
    with defined_state(tmp_path, pin=False, governor="performance") as state:
        gov = state["governor"]
        assert gov["controlled"] is False and gov["read"] == {"cpu0": "schedutil", "cpu1": "schedutil"}
        assert "refused" in gov["note"] and "Permission denied" in gov["note"]
    # a governor the kernel does not offer
    with defined_state(other, pin=False, governor="performance") as state:
        assert state["governor"]["controlled"] is False and "offers no 'performance'" in state["governor"]["note"]
    # no cpufreq at all (this VM): read nothing, say so
    with defined_state(tmp_path / "empty", pin=False) as state:
        assert state["governor"] == {"controlled": False,
                                     "note": "not controlled: no cpufreq governor in sysfs (scaling_governor missing)"}


def test_temperature_wait_and_a_missing_sensor(tmp_path):
    with defined_state(tmp_path, pin=False, max_temp_c=45.0) as state:
        assert state["temperature"] == {"controlled": False, "note": "not controlled: no thermal sensor found"}
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu\n")
    (zone / "temp").write_text("52000\n")
    slept: list[float] = []

    def cool(seconds):  # the zone cools 4 degrees per poll
        slept.append(seconds)
        (zone / "temp").write_text(f"{52000 - 4000 * len(slept)}\n")

    with defined_state(tmp_path, pin=False, max_temp_c=45.0, poll_s=5.0, sleep=cool) as state:
        t = state["temperature"]
        assert t["controlled"] is True and t["max_temp_c"] == 44.0 and t["waited_s"] == 10.0 and len(slept) == 2
    (zone / "temp").write_text("80000\n")
    with defined_state(tmp_path, pin=False, max_temp_c=45.0, max_wait_s=10, poll_s=5.0, sleep=lambda s: None) as state:
        assert state["temperature"]["controlled"] is False and "still 80 C" in state["temperature"]["note"]
    with defined_state(tmp_path, pin=False) as state:  # no threshold asked: read, not controlled
        assert state["temperature"]["max_temp_c"] == 80.0 and not state["temperature"]["controlled"]


def test_a_phone_ignores_rounds_and_says_so_and_records_what_it_controlled(tmp_path):
    """The adbd double with the python runner (real onnxruntime): a phone runner is one
    process per model, so rounds are ignored and each result says so; the control record
    shows taskset pinning, the governor read but not changed, and the cool-down."""
    from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone
    from edgelat.agents.adb.bridge import client_for
    from edgelat.agents.adb.keys import public_key_text

    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as phone:
        transport = {"type": "adb", "address": phone.address, "runner": "python", "cooldown_c": 90,
                     "timeout_s": 5}
        with client_for(transport, {}) as client:
            items = _items(client, get_preset("smoke")[:2])
            results = list(client.benchmark_batch(items, CONFIG, FAST, rounds=3))
    assert [r.tag for r in results] == [i.tag for i in items]  # one by one, in order
    for r in results:
        assert r.ok, r.error
        assert r.extra["rounds"].startswith("ignored: this device measures each model in one go")
        control = r.environment["control"]
        assert control["affinity"]["pinned"] is True and control["affinity"]["method"] == "taskset"
        gov = control["governor"]
        assert gov["controlled"] is False and "does not change a phone's governor" in gov["note"]
        assert gov["read"] == {c: e["governor"] for c, e in r.environment["before"]["cpus"].items() if "governor" in e}
        assert control["temperature"]["controlled"] is True and control["temperature"]["threshold_c"] == 90
