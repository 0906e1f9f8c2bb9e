"""The quickstart job: the smoke preset's kernels and one small whole model measured on ``local``.

It is the first thing a new user runs (``edgelat quickstart``): it needs no agent, stores its
rows in the local table like any profiling job, and running it again skips the kernels the
table already holds. The job is a context holding one connection to ``local`` for both steps,
so a caller can report each step as it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelat.values import BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.profiler.jobs import JobSummary, Progress

__all__ = ["QuickstartJob", "QUICKSTART_PRESET", "QUICKSTART_MODEL"]

#: the kernel preset and the catalog-built network the quickstart measures
QUICKSTART_PRESET = "smoke"
QUICKSTART_MODEL = "tiny_net"
DEVICE = "local"


class QuickstartJob:
    """``with QuickstartJob("onnxruntime", 2.0) as job: job.profile_kernels(); job.profile_model()``."""

    def __init__(self, runtime: str = "onnxruntime", max_seconds: float = 2.0) -> None:
        from edgelat.devices.registry import Registry
        from edgelat.lut.store import open_db
        from edgelat.profiler.presets import get_preset

        self.config = RuntimeConfig(runtime=runtime, threads=1)
        self.protocol = MeasurementProtocol(max_seconds=max_seconds)
        self.specs = get_preset(QUICKSTART_PRESET)
        self.db = open_db()
        self.registry = Registry(self.db)
        self._client: Any = None

    def __enter__(self) -> "QuickstartJob":
        self._client = self.registry.connect(DEVICE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def database(self) -> Path:
        from edgelat import config

        return config.db_path()

    def profile_kernels(self, progress: Progress | None = None) -> JobSummary:
        """Measure the preset's kernels the table does not hold yet."""
        from edgelat.profiler.jobs import profile_kernels

        summary = profile_kernels(self.db, DEVICE, self._client, self.specs, self.config, self.protocol,
                                  force=False, progress=progress)
        self.registry.touch(DEVICE, "lost" if summary.interrupted else "available")
        return summary

    def profile_model(self) -> BenchmarkResult:
        """Measure the small network built from the kernel catalog, stored as a whole-model row."""
        from edgelat.profiler.builders import build_model
        from edgelat.profiler.jobs import model_ref_for, profile_model
        from edgelat.profiler.networks import tiny_net

        data = build_model(tiny_net(), self.config.model_format)
        return profile_model(self.db, DEVICE, self._client, data, self.config.model_format, self.config,
                             self.protocol, model_ref=model_ref_for(data), name=QUICKSTART_MODEL)

    def kernel_rows(self) -> list[dict[str, Any]]:
        """The table's rows of the preset's kernels for this job's runtime config."""
        from edgelat.lut.store import kernel_rows

        keys = {s.key for s in self.specs}
        return [r for r in kernel_rows(self.db, DEVICE, self.config) if r["kernel_key"] in keys]
