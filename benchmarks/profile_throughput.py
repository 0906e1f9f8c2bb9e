"""Profiling throughput on ``local``: kernels per minute for the mobilenet preset, and the ratio of
wall time to the time spent inside measured runs (the overhead of building, loading, warming up).

Usage: python benchmarks/profile_throughput.py [--limit N] [--runtime onnxruntime|litert] [--sandbox]

``--sandbox`` runs the kernels as ``edgelat agent serve`` does: in its long-lived benchmark worker
process (``agents/sandbox.py``), so the ratio includes that hop.

It profiles into a throw-away database, with the default measurement protocol.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from edgelat.agents.client import LocalClient
from edgelat.agents.local import LocalBackend
from edgelat.agents.sandbox import SandboxedBackend
from edgelat.agents.types import MeasurementProtocol, RuntimeConfig
from edgelat.lut.store import open_db
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="profile only the first N kernels (0 = all)")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "litert"])
    parser.add_argument("--sandbox", action="store_true", help="run in the agent's benchmark worker process")
    args = parser.parse_args()

    specs = get_preset("mobilenet")
    if args.limit:
        specs = specs[: args.limit]
    config = RuntimeConfig(runtime=args.runtime, threads=1)
    protocol = MeasurementProtocol()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "bench.db")
        backend = SandboxedBackend(LocalBackend) if args.sandbox else LocalBackend()
        with LocalClient(backend) as client:
            summary = profile_kernels(db, "local", client, specs, config, protocol)
        rows = list(db["kernel_measurements"].rows)
    per_kernel_wall = summary.wall_seconds / max(summary.measured, 1)
    print(f"preset mobilenet: {summary.requested} kernels, {summary.measured} measured, "
          f"{len(summary.failed)} failed, {summary.unstable} unstable ({args.runtime}, 1 thread"
          f"{', in the sandbox worker' if args.sandbox else ''})")
    print(f"wall time:                 {summary.wall_seconds:8.1f} s")
    print(f"inside measured runs:      {summary.measured_seconds:8.1f} s")
    print(f"kernels per minute:        {60.0 * summary.measured / summary.wall_seconds:8.1f}")
    print(f"wall / measured ratio:     {summary.wall_seconds / max(summary.measured_seconds, 1e-9):8.2f}  (aim < 2)")
    print(f"mean wall time per kernel: {per_kernel_wall * 1000:8.1f} ms")
    print(f"median samples per kernel: {statistics.median(r['n'] for r in rows):8.0f}")


if __name__ == "__main__":
    main()
