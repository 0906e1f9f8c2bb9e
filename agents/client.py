"""How the host talks to a device: one small interface, several transports.

:class:`DeviceClient` is what profiling jobs, predictors and search use. The
``local`` device and phones reached in-process use :class:`LocalClient` over a
:class:`~edgelat.agents.backend.Backend`; boards and GPU hosts use the gRPC
client in :mod:`edgelat.agents.remote`. Both send a model once (by content
hash) and stream one result per model in a batch.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgelat import __version__
from edgelat.agents.backend import Backend
from edgelat.agents.cache import ModelCache
from edgelat.values import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat import errors
from edgelat.errors import BadInput, EdgelatError


class DeviceClient(ABC):
    """The host's view of one device."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The device facts (see :meth:`Backend.describe`)."""

    @abstractmethod
    def put_model(self, data: bytes) -> str:
        """Make a model available on the device; returns its sha256. Sends nothing
        if the device already has it."""

    @abstractmethod
    def benchmark_batch(
        self, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
        rounds: int = 0,
    ) -> Iterator[BenchmarkResult]:
        """Benchmark models already put, yielding one result per item as it finishes.

        ``rounds`` > 1 asks the device to measure the items in that many interleaved
        rounds, in shuffled order, sessions kept alive (results then come in the
        order items finish); 0 or 1 measures them one after the other, in order.
        A model that fails yields a result with ``error`` set; the batch goes on.
        Losing the device raises :class:`edgelat.errors.AgentUnreachable` or
        :class:`edgelat.errors.DeviceError`.
        """

    def benchmark(
        self, item: BenchmarkItem, config: RuntimeConfig, protocol: MeasurementProtocol
    ) -> BenchmarkResult:
        """One model (a batch of one)."""
        return next(iter(self.benchmark_batch([item], config, protocol)))

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_item(
    backend: Backend,
    cache: ModelCache,
    item: BenchmarkItem,
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
) -> BenchmarkResult:
    """Run one batch item on a backend, turning input errors into a per-item error.

    Shared by :class:`LocalClient` and the gRPC agent service so both report
    failures the same way.
    """
    path = cache.path(item.model_sha256)
    if path is None:
        return BenchmarkResult(
            model_sha256=item.model_sha256, config=config, tag=item.tag,
            error=errors.describe(BadInput(f"model {item.model_sha256[:12]} is not on the device (put it first)")),
        )
    if item.model_format not in ("onnx", "tflite"):
        raise BadInput(f"unknown model format {item.model_format!r}")
    try:
        result = backend.benchmark(path, item.model_format, config, protocol)
    except EdgelatError as exc:
        # "ClassName: message", so the host can raise the same error class (errors.revive)
        return BenchmarkResult(model_sha256=item.model_sha256, config=config, tag=item.tag, error=errors.describe(exc))
    result.tag = item.tag
    result.model_sha256 = item.model_sha256
    if not result.agent_version:
        result.agent_version = __version__
    return result


def _failed(item: BenchmarkItem, config: RuntimeConfig, exc: EdgelatError) -> BenchmarkResult:
    return BenchmarkResult(model_sha256=item.model_sha256, config=config, tag=item.tag, error=errors.describe(exc))


def run_batch(
    backend: Backend,
    cache: ModelCache,
    items: Sequence[BenchmarkItem],
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    rounds: int = 0,
    keep_going: Callable[[], bool] | None = None,
) -> Iterator[BenchmarkResult]:
    """Run a batch on a backend: one by one (``rounds`` <= 1, today's order) or in interleaved
    rounds through :meth:`Backend.benchmark_rounds`. Shared by :class:`LocalClient` and the
    gRPC agent service; per-item failures become per-item errors as in :func:`run_item`."""
    if rounds <= 1:
        for item in items:
            if keep_going is not None and not keep_going():
                return
            yield run_item(backend, cache, item, config, protocol)
        return
    runnable: list[BenchmarkItem] = []
    models: list[tuple[Path, str]] = []
    for item in items:
        path = cache.path(item.model_sha256)
        if path is None:
            yield _failed(item, config, BadInput(f"model {item.model_sha256[:12]} is not on the device (put it first)"))
            continue
        if item.model_format not in ("onnx", "tflite"):
            raise BadInput(f"unknown model format {item.model_format!r}")
        runnable.append(item)
        models.append((path, item.model_format))
    for i, outcome in backend.benchmark_rounds(models, config, protocol, rounds, keep_going=keep_going):
        item = runnable[i]
        if isinstance(outcome, EdgelatError):
            yield _failed(item, config, outcome)
            continue
        outcome.tag = item.tag
        outcome.model_sha256 = item.model_sha256
        if not outcome.agent_version:
            outcome.agent_version = __version__
        yield outcome


class LocalClient(DeviceClient):
    """A device reached in this process (the ``local`` device, an in-process ADB bridge)."""

    def __init__(self, backend: Backend, cache_dir: str | Path | None = None) -> None:
        self.backend = backend
        self._tmp = None
        if cache_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgelat-local-")
            cache_dir = self._tmp.name
        self.cache = ModelCache(cache_dir)

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    def put_model(self, data: bytes) -> str:
        return self.cache.put(data)

    def benchmark_batch(
        self, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
        rounds: int = 0,
    ) -> Iterator[BenchmarkResult]:
        yield from run_batch(self.backend, self.cache, items, config, protocol, rounds)

    def close(self) -> None:
        self.backend.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
