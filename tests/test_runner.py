"""The one job runner (profiler/runner.py): groups, passes, limit, storing, resuming, failures,
the sentinel; and that every caller measures through it (one measuring path), with the predict
side pure.

A scripted client where figures or failures must be controlled; real onnxruntime on `local`
where a real measurement is the point."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from edgelat.agents.client import LocalClient
from edgelat.agents.local import LocalBackend
from edgelat.values import BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, CorruptModel
from edgelat.lut.store import kernel_rows, model_rows, open_db
from edgelat.profiler import runner
from edgelat.profiler.builders import build_model
from edgelat.profiler.presets import get_preset
from edgelat.profiler.sentinel import SENTINEL_SPECS, DriftSentinel

CONFIG = RuntimeConfig()
FAST = MeasurementProtocol(warmup=1, min_runs=6, max_runs=60, target_rel_ci=0.05, max_seconds=0.3)
SPECS = get_preset("mobilenet")[:10]
ROOT = Path(__file__).resolve().parents[1]


class Scripted:
    """A device whose figures the test sets: ``medians(tag, pass_no)``; it can fail an item
    or vanish before a given batch."""

    def __init__(self, medians=lambda tag, n: 1.0, broken: frozenset[str] = frozenset(), lost_at: int | None = None):
        self.medians, self.broken, self.lost_at = medians, broken, lost_at
        self.batches: list[list[str]] = []
        self.puts = 0

    def put_model(self, data: bytes) -> str:
        self.puts += 1
        return hashlib.sha256(data).hexdigest()

    def benchmark_batch(self, items, config, protocol, rounds=0):
        if self.lost_at is not None and len(self.batches) == self.lost_at:
            raise AgentUnreachable("agent at 10.0.0.9:50051 did not answer")
        self.batches.append([i.tag for i in items])
        n = sum(items[0].tag in b for b in self.batches) - 1  # passes of this group so far
        for item in items:
            if item.tag in self.broken:
                yield BenchmarkResult(item.model_sha256, config, tag=item.tag, error="CorruptModel: cannot run it")
                continue
            m = self.medians(item.tag, n)
            yield BenchmarkResult(item.model_sha256, config, LatencySummary(m, m, 0.0, m, m, 20, 0.01, True), tag=item.tag)


def _items(specs=SPECS):
    return runner.kernel_items(specs, "onnx")


def test_rows_are_stored_per_group_and_a_lost_device_resumes_without_measuring_twice(tmp_path):
    db = open_db(tmp_path / "e.db")
    device = Scripted(lost_at=2)
    first = runner.run(db, "board", device, CONFIG, FAST, _items(), runner.RunOptions(group=4))
    assert isinstance(first.lost, AgentUnreachable) and "10.0.0.9" in first.interrupted
    kept = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "board", CONFIG)}
    assert set(kept) == {s.key for s in SPECS[:8]} and first.measured == 8 and first.groups == 2
    again = Scripted()
    second = runner.run(db, "board", again, CONFIG, FAST, _items(), runner.RunOptions(group=4))
    assert second.skipped == 8 and second.measured == 2 and not second.interrupted
    assert [k for b in again.batches for k in b] == [s.key for s in SPECS[8:]]  # only the rest
    after = {r["kernel_key"]: r["measured_at"] for r in kernel_rows(db, "board", CONFIG)}
    assert len(after) == len(SPECS) and all(after[k] == t for k, t in kept.items())
    # again: everything measured once more, repeats in the input measured once
    third = runner.run(db, "board", Scripted(), CONFIG, FAST, _items(SPECS + SPECS[:3]),
                       runner.RunOptions(group=4, again=True))
    assert third.requested == len(SPECS) and third.measured == len(SPECS) and third.skipped == 0
    assert [i.key for i in runner.todo_items(db, "board", CONFIG, _items(SPECS[2:] + SPECS), again=True)] == \
        [s.key for s in SPECS[2:] + SPECS[:2]]  # the first of each key, in the order given


def test_passes_keep_the_middle_one_and_the_limit_is_asked_between_groups(tmp_path):
    db = open_db(tmp_path / "e.db")
    figures = [2.0, 3.5, 1.2]  # a slowed pass and a fast one: the middle one (2.0) is kept
    device = Scripted(medians=lambda tag, n: figures[n])
    groups_done = []
    options = runner.RunOptions(group=3, passes=3, limit=lambda: len(groups_done) >= 2,
                                after_group=lambda g: groups_done.append(sorted(g.results)))
    run = runner.run(db, "board", device, CONFIG, FAST, _items(), options)
    assert run.limited and run.groups == 2 and len(device.batches) == 6  # 2 groups x 3 passes, no third group
    rows = kernel_rows(db, "board", CONFIG)
    assert len(rows) == 6 and {r["median_ms"] for r in rows} == {2.0}
    assert groups_done == [sorted(s.key for s in SPECS[:3]), sorted(s.key for s in SPECS[3:6])]


def test_failures_are_counted_or_raised_and_never_stored(tmp_path):
    db = open_db(tmp_path / "e.db")
    bad = SPECS[1].key
    run = runner.run(db, "board", Scripted(broken=frozenset({bad})), CONFIG, FAST, _items(SPECS[:4]))
    assert run.failed == [(bad, "CorruptModel: cannot run it")] and run.measured == 3
    assert bad not in {r["kernel_key"] for r in kernel_rows(db, "board", CONFIG)}
    # fail_fast: the device's error class, after the rows before it are stored
    db2 = open_db(tmp_path / "f.db")
    with pytest.raises(CorruptModel, match="cannot run it"):
        runner.run(db2, "board", Scripted(broken=frozenset({bad})), CONFIG, FAST, _items(SPECS[:4]),
                   runner.RunOptions(group=1, fail_fast=True))
    assert {r["kernel_key"] for r in kernel_rows(db2, "board", CONFIG)} == {SPECS[0].key}


def test_models_by_ref_are_stored_as_model_rows_and_skipped_unless_again(tmp_path):
    db = open_db(tmp_path / "e.db")
    items = [runner.model_item(f"tiny:{r}", build_model(SPECS[:2], "onnx", seed=r), "onnx", f"tiny {r}") for r in (1, 2)]
    device = Scripted()
    first = runner.run(db, "board", device, CONFIG, FAST, items, runner.RunOptions(group=2))
    assert first.measured == 2 and {r["model_ref"]: r["model_name"] for r in model_rows(db, "board", CONFIG)} == {
        "tiny:1": "tiny 1", "tiny:2": "tiny 2"}
    assert kernel_rows(db, "board", CONFIG) == []
    assert runner.run(db, "board", device, CONFIG, FAST, items).skipped == 2 and len(device.batches) == 1
    assert runner.run(db, "board", device, CONFIG, FAST, items, runner.RunOptions(again=True)).measured == 2


def test_a_sentinel_shared_by_several_runs_checks_when_due_and_closes_once(tmp_path):
    """What the predictor build does: one sentinel over many runs, a check at its start, none
    between groups until due, and one closing check that brackets every row since."""
    db = open_db(tmp_path / "e.db")
    device = Scripted()
    sentinel = DriftSentinel(db, "board", device, CONFIG, every_s=3600.0)
    for part in (SPECS[:4], SPECS[4:]):
        runner.run(db, "board", device, CONFIG, FAST, _items(part),
                   runner.RunOptions(group=2, sentinel=sentinel, close_sentinel=False))
    sentinel_keys = {s.key for s in SENTINEL_SPECS}
    assert [set(b) == sentinel_keys for b in device.batches] == [True] + [False] * 5
    assert sentinel.close() is not None and sentinel.close() is None  # nothing stored since: no check
    assert [c.level for c in sentinel.checks] == [1.0, 1.0]
    assert all(r["sentinel_level"] == 1.0 for r in kernel_rows(db, "board", CONFIG))


def test_real_kernels_on_local_with_rounds_and_the_sentinel(tmp_path):
    db = open_db(tmp_path / "e.db")
    seen = []
    with LocalClient(LocalBackend()) as client:
        sentinel = DriftSentinel(db, "local", client, CONFIG, rounds=2)
        run = runner.run(db, "local", client, CONFIG, FAST, _items(get_preset("smoke")[:6]),
                         runner.RunOptions(group=3, rounds=2, sentinel=sentinel,
                                           progress=lambda done, total, key, r: seen.append((done, total))))
    assert run.measured == 6 and not run.failed and run.measured_seconds > 0
    assert seen == [(i, 6) for i in range(1, 7)]
    rows = kernel_rows(db, "local", CONFIG)
    assert len(rows) == 6 and all(r["sentinel_level"] is not None and r["median_ms"] > 0 for r in rows)
    assert len(sentinel.checks) >= 2  # the start and the end


# ---- one measuring path; the predict side is pure --------------------------------------------


def _calls(path: Path) -> set[str]:
    """Methods called on other objects (a device client calling its own methods, as the hub's
    tunnel does to send an evicted model again, is the transport, not a second measuring path)."""
    tree = ast.parse(path.read_text())
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and not (isinstance(n.func.value, ast.Name) and n.func.value.id == "self")}


def test_only_the_runner_and_its_sentinel_talk_to_a_device_above_the_agents():
    """Every measurement above agents/ goes through profiler/runner.py (the sentinel's checks
    too): no other module puts models or benchmarks them."""
    talking = set()
    for folder in ("edgelat", "devices", "lut", "predictors", "profiler", "search"):
        for path in (ROOT / folder).rglob("*.py"):
            if "proto" in path.parts:
                continue
            if _calls(path) & {"benchmark_batch", "benchmark", "put_model"}:
                talking.add(path.relative_to(ROOT).as_posix())
    assert talking == {"profiler/runner.py", "profiler/sentinel.py"}


def _imports(rel: str) -> set[str]:
    """Modules a file imports; ``from a import b`` counts as ``a`` and ``a.b`` (b may be a module)."""
    tree = ast.parse((ROOT / rel).read_text())
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
        elif isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
    return names


def _file(module: str) -> str | None:
    parts = module.split(".")[1:]  # edgelat.predictors.kernel -> predictors/kernel.py
    for rel in ("/".join(parts) + ".py", "edgelat/" + "/".join(parts) + ".py"):
        if parts and (ROOT / rel).is_file():
            return rel
    return None


def test_model_file_prediction_reaches_no_device_client_registry_or_runner():
    """The predict side is pure: following every import of predictors/model_predict.py
    (at any depth, function-level ones too) never reaches a device client, the registry
    or the job runner. Measuring on demand is edgelat/on_demand.py's, the caller's."""
    banned = ("edgelat.agents.client", "edgelat.agents.remote", "edgelat.devices", "edgelat.profiler.runner",
              "edgelat.profiler.jobs", "edgelat.profiler.sentinel")
    seen, todo, reached = set(), ["predictors/model_predict.py"], set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for module in _imports(rel):
            if module.startswith("edgelat"):
                reached.add(module)
                nxt = _file(module)
                if nxt is not None:
                    todo.append(nxt)
    assert "edgelat.predictors.kernel" in reached and "edgelat.lut.store" in reached  # the walk works
    assert not [m for m in reached if m.startswith(banned) and _file(m) is not None]
    assert "edgelat.profiler.jobs" in _imports("edgelat/on_demand.py")


def test_runs_that_do_not_close_leave_their_rows_to_the_next_runs_first_check(tmp_path):
    """The hub's chain of short jobs on one device (``sentinel_close=False``): a run closes only when a
    check is due; its rows travel in the carried check, a fresh opening takes them on (no check of its
    own), and the first check after them (here a stale opening's) brackets them with the level before."""
    from edgelat.profiler.jobs import profile_kernels
    from edgelat.profiler.sentinel import Carried

    db = open_db(tmp_path / "e.db")
    sentinel_keys = {s.key for s in SENTINEL_SPECS}
    level = {"now": 2.0}  # the device's sentinel kernels: 2 ms, then 8 ms (level 4)
    device = Scripted(medians=lambda tag, n: level["now"] if tag in sentinel_keys else 1.0)
    first = profile_kernels(db, "board", device, SPECS[:1], CONFIG, FAST, rounds=0, sentinel_close=False)
    assert [len(b) for b in device.batches] == [3, 1]  # the opening check and the kernel: no closing check
    assert first.carried.pending == (SPECS[0].key,)
    second = profile_kernels(db, "board", device, SPECS[1:2], CONFIG, FAST, rounds=0, sentinel_close=False,
                             sentinel_opening=first.carried)
    assert [len(b) for b in device.batches] == [3, 1, 1]  # opened by the first run's check: no check at all
    assert second.carried.pending == (SPECS[0].key, SPECS[1].key)
    assert {r["kernel_key"]: r["sentinel_level"] for r in kernel_rows(db, "board", CONFIG)} == \
        {SPECS[0].key: 1.0, SPECS[1].key: 1.0}  # the level before them, until a check after them is in
    level["now"] = 8.0
    stale = Carried(second.carried.check, second.carried.ended - 3600.0, second.carried.pending)
    third = profile_kernels(db, "board", device, SPECS[2:3], CONFIG, FAST, rounds=0, sentinel_close=False,
                            sentinel_opening=stale)
    assert [len(b) for b in device.batches] == [3, 1, 1, 3, 1] and [c.level for c in third.sentinel] == [4.0]
    levels = {r["kernel_key"]: r["sentinel_level"] for r in kernel_rows(db, "board", CONFIG)}
    assert levels[SPECS[0].key] == levels[SPECS[1].key] == pytest.approx(2.0)  # sqrt(1 * 4)
    assert levels[SPECS[2].key] == 4.0 and third.carried.pending == (SPECS[2].key,)
    history = db.execute("select item_key, sentinel_level from measurement_history where kind = 'kernel'").fetchall()
    assert sorted(history) == sorted(levels.items())  # the history's rows move with them


def test_a_fresh_closing_check_opens_the_next_run_and_a_stale_one_does_not(tmp_path):
    """Consecutive short jobs on one device (the hub's): the check that closed one run opens the
    next while fresher than the sentinel's period, as a check between two chunks would; its rows
    are bracketed by it and their own closing check. A stale one is measured again."""
    from edgelat.profiler.jobs import profile_kernels
    from edgelat.profiler.sentinel import Carried

    db = open_db(tmp_path / "e.db")
    device = Scripted(medians=lambda tag, n: 2.0 if tag in {s.key for s in SENTINEL_SPECS} and n else 1.0)
    first = profile_kernels(db, "board", device, SPECS[:1], CONFIG, FAST, rounds=0)
    assert len(first.sentinel) == 2 and first.carried is not None
    batches = len(device.batches)
    second = profile_kernels(db, "board", device, SPECS[1:2], CONFIG, FAST, rounds=0, sentinel_opening=first.carried)
    assert len(device.batches) == batches + 2  # the kernel and the closing check: no opening check
    assert [c.level for c in second.sentinel] == [first.sentinel[-1].level, 2.0]
    assert second.sentinel[0].at_s <= 0  # taken before this run started
    row = next(r for r in kernel_rows(db, "board", CONFIG) if r["kernel_key"] == SPECS[1].key)
    assert row["sentinel_level"] == pytest.approx((first.sentinel[-1].level * 2.0) ** 0.5)
    stale = Carried(second.sentinel[-1], second.carried.ended - 3600.0)
    batches = len(device.batches)
    third = profile_kernels(db, "board", device, SPECS[2:3], CONFIG, FAST, rounds=0, sentinel_opening=stale)
    assert len(device.batches) == batches + 3 and len(third.sentinel) == 2  # opened by a check of its own
