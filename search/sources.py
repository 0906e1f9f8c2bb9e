"""Where a search gets its device figures: the latency model and the energy table.

Latency comes from the predictors' :func:`edgelat.predictors.latency.latency_model`
(an architecture-level predictor, the device's kernel table, or imported
measurements). Energy comes from the same kernel table when its rows carry
``energy_mj``; an architecture with any kernel lacking energy has none
(NaN, reported as null with the table's reason), never a guess.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import sqlite_utils

from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput
from edgelat.profiler.spaces.space import SearchSpace


def latency_source(db: sqlite_utils.Database, device: str, config: RuntimeConfig, space: SearchSpace) -> Any:
    """The device's latency model for the space; a BadInput saying what to run when it has none."""
    from edgelat.devices.registry import Registry
    from edgelat.lut.archs_store import latency_row_counts
    from edgelat.predictors.latency import latency_model

    Registry(db).get(device)  # UnknownDevice with the known names
    if not any(latency_row_counts(db, device, space.name)):
        raise BadInput(
            f"device {device!r} has no latency table or predictor for {space.name}: profile it with "
            f"'edgelat profile ops --device {device} --preset mobilenet' (then 'edgelat predictor build "
            f"--device {device}'), or import measured latencies with 'edgelat lut import-archs FILE "
            f"--space {space.name}'"
        )
    return latency_model(db, device, config, space)


def energy_source(
    db: sqlite_utils.Database, device: str, config: RuntimeConfig, space: SearchSpace
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """A batch energy function (mJ, NaN where a kernel lacks energy) and a note.

    None when no kernel of the space has an energy row on this device + config;
    the note then carries the table's own reason (e.g. "no energy sensor").
    """
    from edgelat.lut.store import kernel_rows

    rows = {r["kernel_key"]: r for r in kernel_rows(db, device, config)}
    vocab = space.kernel_vocabulary()
    energy = np.array(
        [rows[k.key]["energy_mj"] if k.key in rows and rows[k.key]["energy_mj"] is not None else np.nan
         for k in vocab],
        dtype=np.float64,
    )
    have = int(np.isfinite(energy).sum())
    if have == 0:
        notes = sorted({r["energy_note"] for k in vocab if (r := rows.get(k.key)) and r["energy_note"]})
        reason = notes[0] if notes else "no kernel of the space has an energy measurement on this device"
        return None, reason
    note = "" if have == len(vocab) else (
        f"{len(vocab) - have} of {len(vocab)} kernels have no energy; architectures using them report null"
    )
    table = np.append(energy, 0.0)

    def predict(pop: np.ndarray) -> np.ndarray:
        return table[space.kernel_ids(pop)].sum(axis=1)

    return predict, note
