"""The one small interface every device side implements.

A backend runs benchmarks on one device: in this process (``local``), on a
board behind the gRPC agent, or on a phone through the ADB bridge. The gRPC
Agent service and the in-process ``local`` device are thin shells over a
backend, so profiling and everything downstream cannot tell them apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from edgelat.agents.types import BenchmarkResult, MeasurementProtocol, RuntimeConfig


class Backend(ABC):
    """Runs models on one device and describes it."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Device facts: arch, cpu model, cores, frequencies, memory, runtimes
        (name -> version), providers/delegates, energy sensors, kind."""

    @abstractmethod
    def benchmark(
        self,
        model_path: Path,
        model_format: str,
        config: RuntimeConfig,
        protocol: MeasurementProtocol,
    ) -> BenchmarkResult:
        """Measure one model file with one runtime config, timing on the device.

        Raises :class:`edgelat.errors.EdgelatError` subclasses for failures of the
        input (corrupt model, unavailable runtime); the caller turns them into a
        per-item error so a batch goes on.
        """

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release connections/sessions."""
