"""On-device validation: export the chosen architectures, measure them, store them.

Predicted latency is only as good as the predictor; ``--validate K`` closes
the loop. Each architecture is exported with random weights in the format
the runtime needs, sent to the device through its client (by content hash),
measured there with the standard protocol through the job runner
(:mod:`edgelat.profiler.runner`), and stored in the device's
``model_measurements`` table under ``<space>:<arch>`` (where the
architecture-level predictor will find it as training data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import sqlite_utils

from edgelat.values import BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, DeviceError
from edgelat.search.result import Candidate
from edgelat.profiler.spaces.space import SearchSpace

if TYPE_CHECKING:
    from edgelat.agents.client import DeviceClient


def reachability(db: sqlite_utils.Database, device: str) -> str:
    """Empty when the device can run models, else the reason it cannot."""
    from edgelat.devices.registry import Registry

    dev = Registry(db).get(device)
    if dev.transport.get("type") == "imported":
        return f"device {device!r} is known only from imported measurements; it cannot run models"
    return ""


def measure_candidates(
    db: sqlite_utils.Database,
    device: str,
    space: SearchSpace,
    candidates: list[Candidate],
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    max_latency_ms: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int, Candidate], None] | None = None,
    client: DeviceClient | None = None,
) -> None:
    """Measure each candidate on the device; fills ``measured_latency_ms`` and ``measured``.

    Every model is exported before anything is measured, so an architecture the
    format cannot express fails fast with nothing half-done. Each measurement
    is stored as soon as it arrives. ``client``: the device's client when the
    caller has one (a hub passes the tunnel to an agent that dialled in); None
    opens one from the registry and closes it afterwards.
    """
    from edgelat.devices.registry import Registry
    from edgelat.profiler import runner

    if client is None:
        why = reachability(db, device)
        if why:
            raise BadInput(f"{why}; drop --validate/--compare-flops measurements or choose a device that runs models")
    fmt = config.model_format
    models = [space.export(c.genotype, fmt, seed) for c in candidates]
    refs = [f"{space.name}:{c.arch}" for c in candidates]
    by_ref: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        by_ref.setdefault(ref, []).append(i)
    items = [runner.model_item(ref, data, fmt, f"{space.name} search") for ref, data in zip(refs, models)]
    done = 0

    def record(_done: int, _total: int, ref: str, result: BenchmarkResult) -> None:
        nonlocal done
        lat = result.latency
        for i in by_ref[ref]:  # the same architecture chosen twice: one measurement answers both
            c = candidates[i]
            if lat is None:  # failures raise in the runner (fail_fast); keep the type checker honest
                raise DeviceError(f"{device!r} reported no latency for {space.name} architecture {i + 1}")
            c.measured_latency_ms = float(lat.median)
            c.measured = {
                "format": fmt,
                "median_ms": lat.median,
                "p10_ms": lat.p10,
                "p90_ms": lat.p90,
                "n": lat.n,
                "stable": lat.stable,
                "rel_ci": lat.rel_ci,
                "energy_mj": result.energy_mj,
                "energy_note": result.energy_note or None,
                "error_pct": round(100.0 * (c.predicted_latency_ms - lat.median) / lat.median, 2),
                "meets_budget_measured": None if max_latency_ms is None else bool(lat.median <= max_latency_ms),
            }
            done += 1
            if progress is not None:
                progress(done, len(candidates), c)

    # one model per group: each measurement is stored as soon as it arrives
    options = runner.RunOptions(group=1, again=True, fail_fast=True, progress=record)
    if client is not None:
        run = runner.run(db, device, client, config, protocol, items, options)
    else:
        with Registry(db).connect(device) as opened:
            run = runner.run(db, device, opened, config, protocol, items, options)
    if run.lost is not None:
        raise run.lost
