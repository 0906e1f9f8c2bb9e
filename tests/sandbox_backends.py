"""Backends that misbehave on purpose, for the sandbox tests.

They live in their own small module because the sandbox's worker is a fresh
("spawn") interpreter that imports its backend by module name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgelat.agents.backend import Backend
from edgelat.values import BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig


class MisbehavingBackend(Backend):
    """What ``benchmark`` does depends on the model file's text: ``ok``, ``sleep``, ``abort`` or
    ``hog N`` (allocate N MiB and touch it)."""

    def describe(self) -> dict[str, Any]:
        return {"kind": "host", "pid": os.getpid()}

    def benchmark(self, model_path: Path, model_format: str, config: RuntimeConfig,
                  protocol: MeasurementProtocol) -> BenchmarkResult:
        action = Path(model_path).read_text().split()
        if action[0] == "sleep":
            time.sleep(3600)
        elif action[0] == "abort":
            os.abort()
        elif action[0] == "hog":
            block = bytearray(int(action[1]) << 20)
            block[::4096] = b"x" * len(block[::4096])
        summary = LatencySummary(median=1.0, mean=1.0, std=0.0, p10=1.0, p90=1.0, n=1, rel_ci=float("inf"),
                                 stable=False)
        return BenchmarkResult(model_sha256="", config=config, latency=summary, extra={"pid": os.getpid()})

    def process_id(self) -> int:
        """A method the wrapper does not define: reached through its generic forwarding."""
        return os.getpid()
