"""On-device validation: export the chosen architectures, measure them, store them.

Predicted latency is only as good as the predictor; ``--validate K`` closes
the loop. Each architecture is exported with random weights in the format
the runtime needs, sent to the device through its client (by content hash),
measured there with the standard protocol, and stored in the device's
``model_measurements`` table under ``<space>:<arch>`` (where the
architecture-level predictor will find it as training data).
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, DeviceError
from edgelat.search.result import Candidate
from edgelat.profiler.spaces.space import SearchSpace


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
) -> None:
    """Measure each candidate on the device; fills ``measured_latency_ms`` and ``measured``.

    Every model is exported before anything is measured, so an architecture the
    format cannot express fails fast with nothing half-done. Each measurement
    is stored as soon as it arrives.
    """
    from edgelat.devices.registry import Registry
    from edgelat.profiler.jobs import profile_model

    why = reachability(db, device)
    if why:
        raise BadInput(f"{why}; drop --validate/--compare-flops measurements or choose a device that runs models")
    fmt = config.model_format
    models = [space.export(c.genotype, fmt, seed) for c in candidates]
    client = Registry(db).connect(device)
    try:
        for i, (c, data) in enumerate(zip(candidates, models)):
            result = profile_model(
                db, device, client, data, fmt, config, protocol,
                model_ref=f"{space.name}:{c.arch}", name=f"{space.name} search",
            )
            lat = result.latency
            if lat is None:  # profile_model raises on failures; keep the type checker honest
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
            if progress is not None:
                progress(i + 1, len(candidates), c)
    finally:
        client.close()
