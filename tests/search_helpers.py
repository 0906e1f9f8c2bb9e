"""Shared helpers for the search tests: real measured latencies and real small tables."""

from __future__ import annotations

import csv

import numpy as np
from help_data import NB201_EVERY_ARCH, help_csv

# A small stage space with a single resolution: its whole kernel vocabulary can
# be profiled on this machine in a couple of seconds, so tests get a complete,
# really measured table.
TINY_SPACE_YAML = """\
name: tiny-test
resolutions: [32]
stem: {width: 8, act: relu, stride: 2}
stages:
  - {widths: [8, 16], depths: [1, 2], kernels: [3, 5], expands: [2, 3], stride: 2, act: relu}
  - {widths: [16], depths: [1, 2], kernels: [3], expands: [2, 4], stride: 2, se: true, act: hswish}
head:
  - {op: gap}
  - {op: fc, cout: 10}
"""


def read_help(name: str, column: str) -> tuple[list[str], np.ndarray]:
    """Arch strings and one device column (ms) of a HELP CSV."""
    archs, vals = [], []
    with open(help_csv(name), newline="") as fh:
        for row in csv.DictReader(fh):
            archs.append(row["arch"])
            vals.append(float(row[column]))
    return archs, np.asarray(vals)


def nb201_latency(column: str = "pixel3"):
    """A batch latency function over every NAS-Bench-201 architecture, from the real
    measurements of one device (all 15,625 are measured)."""
    from edgelat.profiler.spaces import get_space

    space = get_space("nasbench201")
    archs, ms = read_help(NB201_EVERY_ARCH, column)
    pop = space.from_strings(archs).astype(np.int64)
    dense = np.full(5**6, np.nan)
    dense[np.ravel_multi_index(pop.T, (5,) * 6)] = ms
    assert np.isfinite(dense).all()

    def latency(p: np.ndarray) -> np.ndarray:
        return dense[np.ravel_multi_index(space.check(p).astype(np.int64).T, (5,) * 6)]

    return space, latency, dense


def import_nb201(db, device: str = "pixel3") -> None:
    """Put one real device column of the NB201 dataset into ``arch_measurements``."""
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import upsert_rows

    archs, ms = read_help(NB201_EVERY_ARCH, device)
    Registry(db).ensure_imported(device)
    upsert_rows(db, "arch_measurements", (
        {"space": "nasbench201", "arch": a, "device": device, "latency_ms": float(v), "source": "HELP"}
        for a, v in zip(archs, ms)
    ))


def profile_space(db, space, device: str = "local") -> None:
    """Really measure every kernel of a (small) space's vocabulary on ``local``."""
    from edgelat.values import MeasurementProtocol, RuntimeConfig
    from edgelat.devices.registry import Registry
    from edgelat.profiler.jobs import profile_kernels

    client = Registry(db).connect(device)
    try:
        summary = profile_kernels(
            db, device, client, space.kernel_vocabulary(), RuntimeConfig(),
            MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.2),
        )
    finally:
        client.close()
    assert not summary.failed, summary.failed
    assert summary.measured + summary.skipped == len(space.kernel_vocabulary())
