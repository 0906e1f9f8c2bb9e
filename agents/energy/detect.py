"""Pick the energy meter a device really has.

GPU providers (cuda, tensorrt) are metered with NVML, or the Jetson board
rails where there is no NVML; CPU runs with RAPL, or the Jetson rails. No
sensor gives a :class:`NullMeter` that says what was looked for.
"""

from __future__ import annotations

from pathlib import Path

from edgelat.agents.energy.base import EnergyMeter, NullMeter
from edgelat.agents.energy.jetson import JetsonMeter
from edgelat.agents.energy.nvml import NvmlMeter
from edgelat.agents.energy.rapl import RaplMeter

GPU_PROVIDERS = ("cuda", "tensorrt")
NO_SENSOR = "no energy sensor found (looked for RAPL, NVML, Jetson INA)"


def detect_meter(root: str | Path = "/", provider: str = "cpu", nvml: object = None) -> EnergyMeter:
    """The first available meter for ``provider``; ``nvml`` injects a fake pynvml in tests.

    When a sensor exists but cannot be read (RAPL without root), the NullMeter
    carries that sensor's reason rather than the generic one.
    """
    candidates: list[EnergyMeter]
    if provider.lower() in GPU_PROVIDERS:
        candidates = [NvmlMeter(nvml=nvml), JetsonMeter(root)]
    else:
        candidates = [RaplMeter(root), JetsonMeter(root)]
    reasons = []
    for meter in candidates:
        if meter.available():
            return meter
        if meter.sensor_present:
            reasons.append(meter.note)
        meter.close()
    return NullMeter("; ".join(reasons) if reasons else NO_SENSOR)


def sensors_found(root: str | Path = "/", nvml: object = None) -> list[str]:
    """Names of every meter readable here (for the device facts)."""
    found = []
    for meter in (RaplMeter(root), NvmlMeter(nvml=nvml), JetsonMeter(root)):
        if meter.available():
            found.append(meter.name)
        meter.close()
    return found
