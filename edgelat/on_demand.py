"""Predict a model file, measuring on the device what the tables cannot answer (the caller's option).

The predictors answer from tables alone (:mod:`edgelat.predictors.model_predict`).
This is the library function ``edgelat predict MODEL`` and the Python API call:
kernels nothing can price -- a catalog type without a regressor, or a node
outside the catalog -- are measured on the device there and then when it can
be reached, through the job runner (:func:`edgelat.profiler.jobs.profile_items`:
stored in the device's table, so the next query is an exact hit), and
``measure_if_unsure`` first measures the regressor-priced kernels that make the
interval wide. When the device cannot measure them, BadInput names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, EdgelatError
from edgelat.predictors.speed import SpeedCheck


def predict_model_file(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig,
    path: str | Path,
    client: Any = None,
    measure_missing: bool = True,
    protocol: MeasurementProtocol | None = None,
    measure_if_unsure: bool = False,
    state: str = "warm",
    speed_check: bool = True,
) -> dict[str, Any]:
    """Predicted latency of a model file on ``device`` + ``config`` (the fields of
    :func:`edgelat.predictors.model_predict.predict_model_file`; ``measured_now`` lists
    the keys measured by this call). ``client`` reaches the device (default: connect by
    name when something needs measuring); ``measure_missing`` False refuses to measure.
    ``state`` (warm or sustained) picks the calibration: see :func:`model_predict.answer`.
    ``speed_check`` (warm only, and only where measuring is allowed): measure the build's
    held-out models again and scale the figure to the device's speed now
    (:mod:`edgelat.predictors.speed`); an unreachable device leaves the build's figure, and
    the answer's ``speed`` and notes say which it is."""
    from edgelat.devices.registry import Registry
    from edgelat.predictors import model_predict
    from edgelat.predictors.sampling import KERNEL_PROTOCOL

    registry = Registry(db)
    registry.get(device)  # UnknownDevice before anything else
    query = model_predict.prepare(db, device, config, path)
    proto = protocol or KERNEL_PROTOCOL
    measured_now: list[str] = []
    if query.missing or query.unmeasured:
        if not measure_missing:
            raise query.unanswered("measuring on demand was turned off")
        if query.unmeasured and query.model.format != config.model_format:
            raise query.unanswered(f"nodes of a {query.model.format} file cannot run on {config.runtime}")
        try:
            with _Connection(registry, device, client) as conn:
                measured_now = _measure_unanswered(db, device, conn, config, query, proto)
        except BadInput:
            raise
        except EdgelatError as exc:
            raise query.unanswered(str(exc)) from None
        model_predict.reload_table(db, query)
    if measure_if_unsure:
        unsure = model_predict.unsure_keys(db, query)
        if unsure:
            from edgelat.profiler.jobs import profile_kernels
            from edgelat.profiler.ops import KernelSpec

            try:
                with _Connection(registry, device, client) as conn:
                    job = profile_kernels(db, device, conn, [KernelSpec.from_key(k) for k in unsure], config, proto,
                                          force=True)
            except EdgelatError as exc:
                raise BadInput(f"--measure-if-unsure: cannot measure on {device} now ({exc})") from None
            if job.interrupted:
                raise BadInput(f"--measure-if-unsure: {job.interrupted}")
            failed = {k for k, _ in job.failed}
            measured_now += [k for k in unsure if k not in failed]
            model_predict.reload_table(db, query)
    from edgelat.config import reading_copy
    from edgelat.predictors.speed_probe import check_speed

    speed = None
    if speed_check and (not measure_missing or reading_copy()):
        speed = SpeedCheck.skipped("the tables are a hub's copy" if reading_copy() else
                                   "measuring on the device was turned off")
    elif speed_check:
        speed = check_speed(db, device, config, client) if state == "warm" else \
            SpeedCheck.skipped(f"not in the {state} state (the build's held-out models were measured warm)")
    return model_predict.answer(db, query, measured_now, state=state, speed=speed)


def _measure_unanswered(db: sqlite_utils.Database, device: str, client: Any, config: RuntimeConfig, query: Any,
                        protocol: MeasurementProtocol) -> list[str]:
    """Measure the query's missing catalog kernels and unmeasured graph kernels in one job; their keys."""
    from edgelat.profiler import runner
    from edgelat.profiler.jobs import profile_items
    from edgelat.profiler.ops import KernelSpec

    missing, unmeasured = list(query.missing), list(query.unmeasured)
    for u in unmeasured:
        if not u.model:
            raise BadInput(f"cannot cut node {u.name} ({u.op_type}) out of the model to measure it")
    items = runner.kernel_items([KernelSpec.from_key(k) for k in missing], config.model_format)
    items += [runner.graph_kernel_item(u.key, u.type, {**u.to_dict(), "signature": u.signature}, u.model, u.fmt)
              for u in unmeasured]
    job = profile_items(db, device, client, items, config, protocol)
    failed = dict(job.failed)
    if job.interrupted or any(k in failed for k in missing):
        raise query.unanswered(job.interrupted or "; ".join(f"{k}: {e}" for k, e in job.failed[:3]))
    for u in unmeasured:
        if u.key in failed:
            raise BadInput(f"measuring node {u.name} ({u.op_type}) on {device} failed: {failed[u.key]}")
    return missing + [u.key for u in unmeasured]


class _Connection:
    """The caller's client, or one opened by name for this measurement and closed after it."""

    def __init__(self, registry: Any, device: str, client: Any) -> None:
        self.registry, self.device, self.client, self.own = registry, device, client, client is None

    def __enter__(self) -> Any:
        if self.own:
            self.client = self.registry.connect(self.device)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.own and self.client is not None:
            self.client.close()
            self.client = None
