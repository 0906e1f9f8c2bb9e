"""One hardware-aware search against a named device, end to end.

:func:`run_search` is what ``edgelat search`` (and a service) calls: it
resolves the device's latency (and energy) sources, runs the strategy, and
optionally validates the top architectures on the device and compares with
a FLOPs-constrained search. It returns the JSON-ready report.

``--compare-flops`` matching: the FLOPs budget is the FLOPs of the
latency-constrained winner, so both searches may spend the same FLOPs. The
second search replaces the latency bound by that FLOPs bound (the other
bounds stay) and keeps the same strategy, seed and objective; its winner is
what a FLOPs proxy picks for the same budget. Both winners are measured on
the device when it can run models, so the report shows which one the latency
budget really admits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput
from edgelat.predictors.latency import MeasuredFirst
from edgelat.search.evaluate import Constraints, Evaluator
from edgelat.search.evolution import EvolutionSearch
from edgelat.search.objective import Objective
from edgelat.search.pareto import ParetoSearch
from edgelat.search.result import Candidate, SearchResult
from edgelat.profiler.spaces.space import SearchSpace


@dataclass
class SearchJob:
    """Everything one search needs (validated by the caller)."""

    space: SearchSpace
    device: str
    config: RuntimeConfig
    constraints: Constraints
    objective: Objective
    strategy: EvolutionSearch | ParetoSearch
    top: int = 5
    validate: int = 0
    compare_flops: bool = False
    protocol: MeasurementProtocol = dataclasses.field(default_factory=MeasurementProtocol)
    seed: int = 0
    speed_check: bool = True  # scale the kernel predictor's figures to the device's speed now (as predict does)


@dataclass
class SearchOutcome:
    report: dict[str, Any]
    result: SearchResult
    shown: list[Candidate]


def _positive(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise BadInput(f"{name} must be positive, got {value:g}")
    return value


def make_job(
    space_name: str, device: str, config: RuntimeConfig, *, max_latency_ms: float | None = None,
    max_energy_mj: float | None = None, max_memory_mb: float | None = None, max_params_m: float | None = None,
    pareto: bool = False, population: int = 100, generations: int | None = None, parents: float = 0.25,
    mutate_prob: float = 0.1, mutation_ratio: float = 0.5, seed: int = 0, top: int = 5,
    accuracy_csv: str | None = None, accuracy_fn: str | None = None, unknown_archs: str = "nearest",
    validate: int = 0, validate_seconds: float = 10.0, compare_flops: bool = False, keep_cloud: bool = False,
    speed_check: bool = True,
) -> SearchJob:
    """A checked :class:`SearchJob` from plain values (what the CLI and the API take): every
    input is checked here, before anything runs or is stored."""
    from edgelat.search.objective import make_objective
    from edgelat.profiler.spaces import get_space

    space = get_space(space_name)
    constraints = Constraints(
        max_latency_ms=_positive("--max-latency", max_latency_ms),
        max_energy_mj=_positive("--max-energy", max_energy_mj),
        max_memory_bytes=None if max_memory_mb is None else _positive("--max-memory", max_memory_mb) * 1e6,
        max_params=None if max_params_m is None else _positive("--max-params", max_params_m) * 1e6,
    )
    if not pareto and max_latency_ms is None:
        raise BadInput("give --max-latency MS (or --pareto for the whole latency/score front)")
    if pareto and compare_flops:
        raise BadInput("--compare-flops compares single-budget searches; drop --pareto")
    if parents + mutation_ratio > 1:
        raise BadInput("--parents plus --mutation-ratio must be at most 1")
    objective = make_objective(space, accuracy_csv, accuracy_fn, unknown_archs)
    if pareto:
        strategy: EvolutionSearch | ParetoSearch = ParetoSearch(
            population=population, generations=100 if generations is None else max(1, generations),
            mutate_prob=mutate_prob, seed=seed, keep_cloud=keep_cloud)
    else:
        strategy = EvolutionSearch(population=population, parents=parents, mutate_prob=mutate_prob,
                                   mutation_ratio=mutation_ratio, generations=500 if generations is None else generations,
                                   seed=seed, keep_cloud=keep_cloud)
    return SearchJob(space=space, device=device, config=config, constraints=constraints, objective=objective,
                     strategy=strategy, top=top, validate=validate, compare_flops=compare_flops,
                     protocol=MeasurementProtocol(max_seconds=validate_seconds), seed=seed, speed_check=speed_check)


def run_search(db: sqlite_utils.Database, job: SearchJob,
               progress: Callable[[str], None] | None = None, client: Any = None) -> SearchOutcome:
    """Run the job; see the module docstring. ``client``: the device's client for the measurements
    (a hub passes its tunnel to the agent serving the device); None opens one from the registry."""
    from edgelat.search.sources import energy_source, latency_source
    from edgelat.search.validate import measure_candidates, reachability

    say = progress or (lambda _msg: None)
    c = job.constraints
    if isinstance(job.strategy, EvolutionSearch) and c.max_latency_ms is None:
        raise BadInput("the evolution search needs --max-latency (or use --pareto)")
    if job.compare_flops and c.max_latency_ms is None:
        raise BadInput("--compare-flops needs --max-latency (the FLOPs budget is matched to it)")
    why_not = reachability(db, job.device)
    if job.validate and why_not:
        raise BadInput(f"cannot --validate: {why_not}")
    model = latency_source(db, job.device, job.config, job.space)
    energy, energy_note = energy_source(db, job.device, job.config, job.space)
    if c.max_energy_mj is not None and energy is None:
        raise BadInput(f"cannot constrain energy on {job.device!r}: {energy_note}; drop --max-energy")
    speed = _check_speed(db, job, model, client, say) if job.speed_check and not why_not else None
    ev = Evaluator(job.space, model.predict, job.objective, energy)
    say(f"searching {job.space.name} on {job.device} ({model.kind} latency)")
    result = job.strategy.run(ev, c)
    shown = result.candidates if isinstance(job.strategy, ParetoSearch) else result.candidates[: job.top]
    notes: list[str] = []
    if isinstance(model, MeasuredFirst):
        notes.append(f"{len(model.lookup)} of the space's architectures are measured on {job.device}: those are "
                     f"priced by their measurement, the rest by the {model.inner.kind}")
    if model.kind.endswith("table") and model.missing:
        notes.append(f"{len(model.missing)} of the space's kernels are not in the table; "
                     "the kernel predictor priced them")
    if speed is not None and speed.note:
        notes.append(speed.note)
    if energy is not None and energy_note:
        notes.append(f"energy: {energy_note}")
    if job.validate:
        if isinstance(job.strategy, ParetoSearch) and len(shown) > job.validate:
            # spread the measurements along the front (fastest to best-scoring)
            picks = np.unique(np.linspace(0, len(shown) - 1, job.validate).round().astype(int))
            todo = [shown[i] for i in picks]
        else:
            todo = shown[: job.validate]
        say(f"validating {len(todo)} architecture(s) on {job.device}")
        measure_candidates(db, job.device, job.space, todo, job.config, job.protocol, c.max_latency_ms, job.seed,
                           progress=lambda i, n, cand: say(f"measured {i}/{n}: {cand.measured_latency_ms:.3f} ms"),
                           client=client)
    notes += budget_notes(shown, c.max_latency_ms)
    comparison = None
    if job.compare_flops:
        comparison = _compare_flops(db, job, ev, shown, why_not, say, client)
    report = {
        "device": job.device,
        "space": job.space.name,
        "runtime": {**job.config.to_dict(), "key": job.config.key()},
        "objective": job.objective.describe(),
        "latency_source": {"kind": model.kind, "missing_kernels": len(getattr(model, "missing", [])),
                           "measured_archs": len(model.lookup) if isinstance(model, MeasuredFirst) else 0,
                           "calibrated": getattr(model, "calibration", None) is not None,
                           "speed": None if speed is None else speed.to_dict()},
        "energy_source": {"available": energy is not None, "note": energy_note or None},
        "constraints": c.to_dict(),
        "strategy": result.to_dict(),
        "memory_note": "memory_bytes_estimate = fp32 weights + the largest kernel's activations (from shapes)",
        "results": [cand.to_dict() for cand in shown],
        "notes": notes,
    }
    if comparison is not None:
        report["compare_flops"] = comparison
    return SearchOutcome(report=report, result=result, shown=shown)


def _check_speed(db: sqlite_utils.Database, job: SearchJob, model: Any, client: Any,
                 say: Callable[[str], None]) -> Any:
    """The speed check predict makes (:mod:`edgelat.predictors.speed`), applied to the kernel
    predictor's figures so that search and predict give one number for one network; None when
    the latency comes from elsewhere (an architecture predictor, imported measurements)."""
    from edgelat.predictors.latency import TableLatency
    from edgelat.predictors.speed_probe import check_speed

    inner = model.inner if isinstance(model, MeasuredFirst) else model
    if not isinstance(inner, TableLatency):
        return None
    say(f"speed check: measuring the predictor build's held-out models on {job.device} again")
    inner.speed = check_speed(db, job.device, job.config, client)
    return inner.speed


#: a winner predicted under this share of the latency budget is not held back by it
BINDING_SHARE = 0.95


def budget_notes(shown: list[Candidate], max_latency_ms: float | None) -> list[str]:
    """What the output must say about the latency budget: validated winners that measured over
    it, and a budget that does not bind (the winner is well under it, so a looser budget would
    not have found a better network)."""
    if max_latency_ms is None or not shown:
        return []
    notes = []
    measured = [x for x in shown if x.measured_latency_ms is not None]
    over = [x for x in measured if x.measured_latency_ms > max_latency_ms]
    if over:
        worst = max(x.measured_latency_ms for x in over)
        notes.append(f"{len(over)} of {len(measured)} validated architecture(s) measured over the "
                     f"{max_latency_ms:g} ms budget (worst {worst:.3f} ms): the prediction was optimistic "
                     "for them; lower --max-latency by that margin or rebuild the predictor")
    best = shown[0].predicted_latency_ms
    if best < BINDING_SHARE * max_latency_ms:
        notes.append(f"the budget does not bind: the best architecture is predicted at {best:.3f} ms, "
                     f"{100 * (1 - best / max_latency_ms):.0f}% under the {max_latency_ms:g} ms budget")
    return notes


def _compare_flops(db: sqlite_utils.Database, job: SearchJob, ev: Evaluator, shown: list[Candidate],
                   why_not: str, say: Callable[[str], None], client: Any = None) -> dict[str, Any]:
    from edgelat.search.validate import measure_candidates

    winner = shown[0]
    budget = winner.flops
    c2 = dataclasses.replace(job.constraints, max_latency_ms=None, max_flops=budget)
    say(f"searching again under a FLOPs budget of {budget / 1e6:.1f} M")
    other = job.strategy.run(ev, c2).candidates[0]
    note = ""
    pending = [x for x in (winner, other) if x.measured_latency_ms is None]
    if why_not:
        note = f"not measured: {why_not}"
    elif pending:
        measure_candidates(db, job.device, job.space, pending, job.config, job.protocol,
                           job.constraints.max_latency_ms, job.seed, client=client)
    out = {"flops_budget": budget, "matching": "FLOPs budget = FLOPs of the latency-constrained winner",
           "latency_constrained": winner.to_dict(), "flops_constrained": other.to_dict(), "note": note or None}
    lim = job.constraints.max_latency_ms
    for key, cand in (("latency_constrained", winner), ("flops_constrained", other)):
        out[key]["meets_budget_predicted"] = bool(cand.predicted_latency_ms <= lim) if lim else None
        out[key]["meets_budget_measured"] = (
            None if cand.measured_latency_ms is None or lim is None else bool(cand.measured_latency_ms <= lim)
        )
    out["same_architecture"] = winner.arch == other.arch
    return out
