"""Profiling jobs: measure kernels or whole models on a device into its table.

A job builds one model per kernel, sends each to the device once (by content
hash), streams the batch, and stores every result the moment it arrives. A job
that dies halfway (agent killed, cable pulled) keeps what it measured, and the
rerun skips it: re-profiling is idempotent unless ``force`` is set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import sqlite_utils

from edgelat.agents.client import DeviceClient
from edgelat.agents.types import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, BadInput, CorruptModel, DeviceError, revive
from edgelat.lut import store
from edgelat.profiler.builders import build_model
from edgelat.profiler.intake import ModelFile, model_ref_for, read_model  # noqa: F401  (model_ref_for: callers import it from here too)
from edgelat.profiler.ops import KernelSpec

# progress(done, total, tag, result): called after each kernel is stored or fails.
Progress = Callable[[int, int, str, BenchmarkResult], None]


@dataclass
class JobSummary:
    """What a profiling job did; ``measured_seconds`` is time spent inside timed runs."""

    device: str
    config: RuntimeConfig
    requested: int = 0
    skipped: int = 0
    measured: int = 0
    unstable: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    measured_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: str = ""  # why the batch stopped early (the rerun resumes)

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "runtime": self.config.runtime,
            "threads": self.config.threads,
            "provider": self.config.provider,
            "requested": self.requested,
            "skipped": self.skipped,
            "measured": self.measured,
            "unstable": self.unstable,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "measured_seconds": round(self.measured_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "interrupted": self.interrupted or None,
        }


def _unique(specs: Sequence[KernelSpec]) -> list[KernelSpec]:
    seen: dict[str, KernelSpec] = {}
    for spec in specs:
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def profile_kernels(
    db: sqlite_utils.Database,
    device: str,
    client: DeviceClient,
    specs: Sequence[KernelSpec],
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    force: bool = False,
    progress: Progress | None = None,
) -> JobSummary:
    """Measure each kernel not yet in the device's table (all of them with ``force``).

    Losing the device mid-batch does not raise: the summary's ``interrupted`` says
    why and how many rows were kept, so the caller can tell the user to rerun.
    """
    started = time.perf_counter()
    specs = _unique(specs)
    summary = JobSummary(device=device, config=config, requested=len(specs))
    done = set() if force else store.measured_kernel_keys(db, device, config)
    todo = [s for s in specs if s.key not in done]
    summary.skipped = len(specs) - len(todo)
    if not todo:
        summary.wall_seconds = time.perf_counter() - started
        return summary

    fmt = config.model_format
    by_tag: dict[str, KernelSpec] = {}
    items: list[BenchmarkItem] = []
    try:
        for spec in todo:
            sha = client.put_model(build_model(spec, fmt))
            items.append(BenchmarkItem(model_sha256=sha, model_format=fmt, tag=spec.key))
            by_tag[spec.key] = spec
        count = 0
        for result in client.benchmark_batch(items, config, protocol):
            count += 1
            spec = by_tag.get(result.tag)
            if spec is None:
                raise DeviceError(f"device returned a result for an unknown kernel {result.tag!r}")
            if result.ok and result.latency is not None:
                store.add_kernel_result(db, device, spec.key, spec.op, spec.to_dict(), result)
                summary.measured += 1
                summary.unstable += 0 if result.latency.stable else 1
                summary.measured_seconds += result.latency.mean * result.latency.n / 1000.0
            else:
                summary.failed.append((spec.key, result.error or "no latency reported"))
            if progress is not None:
                progress(summary.skipped + count, summary.requested, spec.key, result)
    except (AgentUnreachable, DeviceError) as exc:
        summary.interrupted = (
            f"{exc} ({summary.measured} new rows kept; rerun the same command to measure the rest)"
        )
    summary.wall_seconds = time.perf_counter() - started
    return summary


def profile_model(
    db: sqlite_utils.Database,
    device: str,
    client: DeviceClient,
    data: bytes,
    fmt: str,
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    model_ref: str | None = None,
    name: str = "",
) -> BenchmarkResult:
    """Measure one whole model and store it under ``model_ref`` (default: its content hash).

    ``data`` must be self-contained (what :func:`edgelat.profiler.intake.read_model` returns for a
    file). A model the device refuses (over its upload cap) or rejects raises the device's error
    class (e.g. :class:`~edgelat.errors.CorruptModel`); nothing is stored."""
    sha = client.put_model(data)
    result = client.benchmark(BenchmarkItem(model_sha256=sha, model_format=fmt, tag=name), config, protocol)
    if not result.ok or result.latency is None:
        raise revive(result.error or "DeviceError: the device reported no latency")
    store.add_model_result(db, device, model_ref or model_ref_for(data), name, result)
    return result


def profile_model_file(
    db: sqlite_utils.Database,
    device: str,
    path: str | Path,
    config: RuntimeConfig,
    protocol: MeasurementProtocol,
    runner: str | None = None,
    runtime_given: bool = True,
) -> tuple[ModelFile, BenchmarkResult]:
    """Read a model file (:func:`~edgelat.profiler.intake.read_model`), measure it whole on a
    named device and store the row: what ``edgelat profile model`` and the Python API call.

    ``runtime_given`` False lets the file's format choose the runtime (LiteRT for TFLite);
    a phone's runner decides it (:func:`~edgelat.devices.runtime.resolve_runtime`).
    """
    from edgelat.devices.registry import Registry
    from edgelat.devices.runtime import resolve_runtime

    m = read_model(path)
    registry = Registry(db)
    try:
        config = resolve_runtime(registry.get(device), runner, config, runtime_given, m.format)
    except BadInput as exc:
        raise BadInput(f"{m.name}: {exc}") from exc
    with registry.connect(device, runner=runner) as client:
        try:
            result = profile_model(db, device, client, m.data, m.format, config, protocol, model_ref=m.ref, name=m.name)
        except (BadInput, CorruptModel) as exc:  # refused (upload cap) or rejected by the device
            raise type(exc)(f"{m.path}: {exc}") from exc
    registry.touch(device, "available")
    return m, result
