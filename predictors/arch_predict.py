"""Latency of search-space architectures on a device: measured first, predicted for the rest.

An architecture measured on the device + runtime config (``profile``/``search
--validate`` rows) is answered with that measurement; one known only from
imported measurements (``lut import-archs``) with the imported figure; every
other one by the device's latency model (:func:`edgelat.predictors.latency.latency_model`).
What ``edgelat predict --space`` and :meth:`edgelat.api.Predictor.predict_archs` answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlite_utils

from edgelat.values import RuntimeConfig


def predict_archs(db: sqlite_utils.Database, device: str, config: RuntimeConfig, space: Any,
                  pop: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Latency (ms) per genotype row of ``pop`` and where each came from: ``measurement``,
    ``imported-measurement``, or the kind of the model that predicted it."""
    from edgelat.lut.archs_store import measured_archs
    from edgelat.predictors.arch import config_key_for
    from edgelat.predictors.latency import GenotypeLookup, latency_model

    ck = config_key_for(db, device, config)
    profiled = GenotypeLookup(space, measured_archs(db, space.name, device, ck, imported=False)).get(pop)
    imported = GenotypeLookup(space, measured_archs(db, space.name, device, None)).get(pop)
    out = np.where(np.isnan(profiled), imported, profiled)
    sources = np.where(~np.isnan(profiled), "measurement", np.where(~np.isnan(imported), "imported-measurement", ""))
    todo = np.flatnonzero(np.isnan(out))
    if len(todo):
        model = latency_model(db, device, config, space)
        out[todo] = model.predict(pop[todo])
        sources[todo] = getattr(model, "inner", model).kind  # the measured ones are labelled above
    return out, sources.tolist()
