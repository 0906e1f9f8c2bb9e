"""The one small interface every device side implements.

A backend runs benchmarks on one device: in this process (``local``), on a
board behind the gRPC agent, or on a phone through the ADB bridge. The gRPC
Agent service and the in-process ``local`` device are thin shells over a
backend, so profiling and everything downstream cannot tell them apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgelat.values import BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import EdgelatError


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

    def benchmark_rounds(
        self,
        models: Sequence[tuple[Path, str]],
        config: RuntimeConfig,
        protocol: MeasurementProtocol,
        rounds: int,
        keep_going: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, BenchmarkResult | EdgelatError]]:
        """Measure ``models`` (path, format) in ``rounds`` interleaved rounds, yielding
        ``(index, result or error)`` as each item finishes (see the local backend).

        This default does not interleave: it measures each model in one go and says
        so in the result's ``extra["rounds"]`` (the ADB runners take this path: a
        phone's runner is one process per model). ``keep_going()`` false stops early.
        """
        for i, (path, fmt) in enumerate(models):
            if keep_going is not None and not keep_going():
                return
            try:
                result = self.benchmark(path, fmt, config, protocol)
            except EdgelatError as exc:
                yield i, exc
                continue
            result.extra["rounds"] = f"ignored: this device measures each model in one go (asked for {rounds})"
            yield i, result

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release connections/sessions."""
