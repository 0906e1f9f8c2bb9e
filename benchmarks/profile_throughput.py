"""Profiling throughput on ``local``: kernels per minute for the mobilenet preset, and the ratio of
wall time to the time spent inside measured runs (the overhead of building, loading, warming up).

Usage: python benchmarks/profile_throughput.py [--limit N] [--runtime onnxruntime|litert] [--rounds N]
       [--no-sentinel] [--sandbox]

``--sandbox`` runs the kernels as ``edgelat agent serve`` does: in its long-lived benchmark worker
process (``agents/sandbox.py``), so the ratio includes that hop (and rounds are measured one model
at a time there: the worker does not interleave).

It profiles into a throw-away database, with the default measurement protocol, interleaved
rounds and drift-sentinel checks (as ``profile ops`` does; the sentinel's timed runs are
overhead here: they are in the wall time, not in "inside measured runs").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from edgelat.agents.client import LocalClient
from edgelat.agents.local import LocalBackend
from edgelat.agents.sandbox import SandboxedBackend
from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.lut.store import open_db
from edgelat.profiler.jobs import DEFAULT_ROUNDS, profile_kernels
from edgelat.profiler.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="profile only the first N kernels (0 = all)")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "litert"])
    parser.add_argument("--sandbox", action="store_true", help="run in the agent's benchmark worker process")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds (0: one by one)")
    parser.add_argument("--no-sentinel", action="store_true", help="no drift-sentinel checks")
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
            summary = profile_kernels(db, "local", client, specs, config, protocol, rounds=args.rounds,
                                      sentinel=not args.no_sentinel)
        rows = list(db["kernel_measurements"].rows)
    per_kernel_wall = summary.wall_seconds / max(summary.measured, 1)
    print(f"preset mobilenet: {summary.requested} kernels, {summary.measured} measured, "
          f"{len(summary.failed)} failed, {summary.unstable} unstable ({args.runtime}, 1 thread, "
          f"rounds {args.rounds}, sentinel {'off' if args.no_sentinel else 'on'}"
          f"{', in the sandbox worker' if args.sandbox else ''})")
    print(f"wall time:                 {summary.wall_seconds:8.2f} s")
    print(f"inside measured runs:      {summary.measured_seconds:8.2f} s")
    print(f"sentinel timed runs:       {summary.sentinel_seconds:8.2f} s  ({len(summary.sentinel)} checks)")
    print(f"kernels per minute:        {60.0 * summary.measured / summary.wall_seconds:8.1f}")
    print(f"wall / measured ratio:     {summary.wall_seconds / max(summary.measured_seconds, 1e-9):8.2f}  (aim < 2)")
    print(f"mean wall time per kernel: {per_kernel_wall * 1000:8.1f} ms")
    print(f"median samples per kernel: {statistics.median(r['n'] for r in rows):8.0f}")


if __name__ == "__main__":
    main()
