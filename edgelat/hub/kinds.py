"""The kinds of job the hub runs, how each is checked at submit time and run on a lease.

A job is ``(kind, device, config, params)``: ``config`` is the runtime config
(:class:`RuntimeConfig` fields), ``params`` the kind's own parameters. Each
kind runs the very library function its CLI command runs, against the hub's
own tables and a :class:`~edgelat.hub.link.TunnelClient`; those functions skip
what the table already holds, so a job that loses its agent resumes on the
next lease where it stopped. Nothing in a job names a file on the hub or is
run as a shell command: kernel lists travel as data, spaces and presets by
their built-in names.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from edgelat.agents.bounds import check_config, check_protocol
from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, EdgelatError

#: report(done, total, message) -> False when the job must stop (cancelled, lease lost)
Report = Callable[[int, int, str], bool]

#: most kernels one profile-ops job may list
MAX_SPECS = 100_000
_CONFIG_KEYS = {f.name for f in dataclasses.fields(RuntimeConfig)}
_PROTOCOL_KEYS = {f.name for f in dataclasses.fields(MeasurementProtocol)}


class Stop(Exception):
    """The job must stop now: it was cancelled, or this hub lost its lease."""


def runtime_config(config: dict[str, Any]) -> RuntimeConfig:
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise BadInput(f"malformed job: unknown runtime config field(s) {', '.join(sorted(unknown))}")
    try:
        return check_config(RuntimeConfig(**config))
    except TypeError as exc:
        raise BadInput(f"malformed job: runtime config: {exc}") from None


def protocol(params: dict[str, Any]) -> MeasurementProtocol:
    raw = params.get("protocol") or {}
    if not isinstance(raw, dict) or set(raw) - _PROTOCOL_KEYS:
        raise BadInput(f"malformed job: protocol must be an object with fields from {', '.join(sorted(_PROTOCOL_KEYS))}")
    try:
        return check_protocol(MeasurementProtocol(**raw))
    except TypeError as exc:
        raise BadInput(f"malformed job: protocol: {exc}") from None


def kernel_specs(params: dict[str, Any]) -> list:
    """The kernels of a profile-ops job: a preset, a built-in space, or a list of specs (keys or dicts)."""
    from edgelat.profiler.ops import spec_from_any
    from edgelat.profiler.presets import get_preset

    given = [k for k in ("preset", "space", "specs") if params.get(k) is not None]
    if len(given) != 1:
        raise BadInput("malformed job: profile-ops needs exactly one of preset, space, specs")
    if "preset" in given:
        return get_preset(str(params["preset"]))
    if "space" in given:
        from edgelat.profiler.spaces import BUILTIN, get_space

        name = str(params["space"])
        if name not in BUILTIN:  # a YAML path would be a file on the hub: the client sends its kernels instead
            raise BadInput(f"malformed job: unknown built-in space {name!r} (valid: {', '.join(BUILTIN)})")
        return get_space(name).kernel_vocabulary()
    specs = params["specs"]
    if not isinstance(specs, list) or not specs or len(specs) > MAX_SPECS:
        raise BadInput(f"malformed job: specs must be a list of 1 to {MAX_SPECS} kernels")
    out = []
    for i, entry in enumerate(specs):
        try:
            out.append(_spec_of_key(entry) if isinstance(entry, str) else spec_from_any(entry))
        except (EdgelatError, TypeError, ValueError, KeyError) as exc:
            raise BadInput(f"malformed job: kernel {i}: {exc}") from None
    return out


@functools.lru_cache(maxsize=8192)
def _spec_of_key(key: str) -> Any:
    """A kernel key parsed once (each job's keys are read at submit and again on its lease)."""
    from edgelat.profiler.ops import KernelSpec

    return KernelSpec.from_key(key)


def _check_profile_ops(params: dict[str, Any]) -> None:
    kernel_specs(params)
    rounds = params.get("rounds")
    if rounds is not None and (not isinstance(rounds, int) or not 0 <= rounds <= 100):
        raise BadInput("malformed job: rounds must be an integer from 0 to 100")
    if not isinstance(params.get("force", False), bool):
        raise BadInput("malformed job: force must be true or false")


def run_profile_ops(db: Any, device: str, client: Any, job: dict[str, Any], report: Report) -> dict[str, Any]:
    """``edgelat profile ops`` on the hub: :func:`edgelat.profiler.jobs.profile_kernels`."""
    from edgelat.profiler.jobs import profile_kernels

    params = job.get("params") or {}
    specs = kernel_specs(params)

    def on_result(done: int, total: int, key: str, result: Any) -> None:
        if not report(done, total, key):
            raise Stop("stopped")

    extra = {} if params.get("rounds") is None else {"rounds": int(params["rounds"])}
    config = runtime_config(job.get("config") or {})
    already = 0
    if params.get("force"):
        specs, already = _older_than_job(db, device, config, specs, job)
    # the device's last sentinel check on this agent stream, while fresh, opens this job, and the job
    # closes with a check only when one is due: consecutive short jobs on one device are checked as
    # the chunks of one run are (rows after the last check wait for the next job's first one)
    carry = getattr(client, "carried", None)
    key = (config, extra.get("rounds"))
    summary = profile_kernels(db, device, client, specs, config, protocol(params), force=bool(params.get("force")),
                              progress=on_result, sentinel_opening=None if carry is None else carry.get(key),
                              sentinel_close=carry is None, **extra)
    if carry is not None and summary.carried is not None:
        carry[key] = summary.carried
    summary.requested += already
    summary.skipped += already
    out = summary.to_dict()
    if summary.interrupted:
        out["_interrupted"] = summary.interrupted
    return out


def _older_than_job(db: Any, device: str, config: Any, specs: list, job: dict[str, Any]) -> tuple[list, int]:
    """``--force`` on a hub: the kernels whose row predates the job (or that have none), to be
    measured again; and how many this job already measured again on an earlier lease (a
    resumed forced job does not measure its own rows twice)."""
    from datetime import datetime

    from edgelat.lut.store import kernel_rows

    created = job.get("created_at")
    if not created:
        return specs, 0
    since = datetime.fromisoformat(str(created)).timestamp() + 0.001  # the ISO time is cut to the millisecond
    fresh = {r["kernel_key"] for r in kernel_rows(db, device, config) if (r.get("measured_at") or 0) >= since}
    todo = [s for s in specs if s.key not in fresh]
    return todo, len(specs) - len(todo)


#: longest settling a sustained profile-model job may ask for (seconds)
MAX_SETTLE_S = 3600.0
#: largest model a profile-model job may carry (it travels inside the job, base64, under gRPC's message cap)
MAX_MODEL_BYTES = 32 << 20


def model_bytes(params: dict[str, Any]) -> bytes:
    """The model a profile-model job carries, checked against its declared sha256."""
    import base64
    import binascii

    from edgelat.agents.cache import sha256_bytes

    raw = params.get("model_b64")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_MODEL_BYTES * 4 // 3 + 4:
        raise BadInput(f"malformed job: profile-model needs model_b64, a base64 model of at most "
                       f"{MAX_MODEL_BYTES >> 20} MiB")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("malformed job: model_b64 is not base64") from None
    if params.get("format") not in ("onnx", "tflite"):
        raise BadInput("malformed job: format must be onnx or tflite")
    if params.get("sha256") != sha256_bytes(data):
        raise BadInput("malformed job: the model does not match its sha256")
    return data


def _check_profile_model(params: dict[str, Any]) -> None:
    model_bytes(params)
    for key in ("name", "path"):
        if not isinstance(params.get(key, ""), str) or len(params.get(key, "")) > 1000:
            raise BadInput(f"malformed job: {key} must be a short string")
    if params.get("state", "warm") not in ("warm", "sustained"):
        raise BadInput("malformed job: state must be warm or sustained")
    settle = params.get("settle_s")
    if settle is not None and (isinstance(settle, bool) or not isinstance(settle, (int, float))
                               or not 0 <= settle <= MAX_SETTLE_S):
        raise BadInput(f"malformed job: settle_s must be a number of seconds from 0 to {MAX_SETTLE_S:.0f}")
    if settle is not None and params.get("state") != "sustained":
        raise BadInput("malformed job: settle_s goes with state sustained")


def run_profile_model(db: Any, device: str, client: Any, job: dict[str, Any], report: Report) -> dict[str, Any]:
    """``edgelat profile model`` on the hub: :func:`edgelat.profiler.jobs.profile_model`; the result is
    the command's ``--json`` object."""
    from edgelat.profiler.jobs import model_ref_for, profile_model
    from edgelat.results import ModelProfile

    params = job.get("params") or {}
    data = model_bytes(params)
    name = params.get("name") or params["sha256"][:12]
    if not report(0, 1, f"measuring {name}"):
        raise Stop("stopped")
    settle = params.get("settle_s")
    result = profile_model(db, device, client, data, params["format"], runtime_config(job.get("config") or {}),
                           protocol(params), model_ref=model_ref_for(data), name=name,
                           state=str(params.get("state") or "warm"),
                           settle_s=None if settle is None else float(settle))
    report(1, 1, name)
    return ModelProfile.from_result(device, result, model_ref_for(data), params.get("path") or name).to_dict()


def _check_predictor_build(params: dict[str, Any]) -> None:
    budget = params.get("budget_s")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget <= 86400:
        raise BadInput("malformed job: budget_s must be a number of seconds from 0 to 86400")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadInput("malformed job: seed must be an integer")


def run_predictor_build(db: Any, device: str, client: Any, job: dict[str, Any], report: Report) -> dict[str, Any]:
    """``edgelat predictor build`` on the hub: :func:`edgelat.predictors.sampling.build_predictor`
    (it goes on from what an earlier attempt measured and spent)."""
    from edgelat.predictors.sampling import build_predictor

    params = job.get("params") or {}

    def on_progress(phase: str, spent: float, budget: float, message: str) -> None:
        if not report(int(min(spent, budget)), max(1, int(budget)), f"{phase}: {message}"):
            raise Stop("stopped")

    summary = build_predictor(db, device, client, runtime_config(job.get("config") or {}), float(params["budget_s"]),
                              seed=int(params.get("seed", 0)), progress=on_progress)
    out = summary.to_dict()
    if summary.interrupted:
        out["_interrupted"] = summary.interrupted
    return out


#: the ``search`` job's parameters: name -> (types it may have, None allowed)
SEARCH_PARAMS: dict[str, tuple[tuple[type, ...], bool]] = {
    "space": ((str,), False), "max_latency_ms": ((int, float), True), "max_energy_mj": ((int, float), True),
    "max_memory_mb": ((int, float), True), "max_params_m": ((int, float), True), "pareto": ((bool,), False),
    "population": ((int,), False), "generations": ((int,), True), "parents": ((int, float), False),
    "mutate_prob": ((int, float), False), "mutation_ratio": ((int, float), False), "seed": ((int,), False),
    "top": ((int,), False), "unknown_archs": ((str,), False), "validate": ((int,), False),
    "validate_seconds": ((int, float), False), "compare_flops": ((bool,), False), "speed_check": ((bool,), False),
}


def search_job(device: str, config: dict[str, Any], params: dict[str, Any]) -> Any:
    """The checked :class:`~edgelat.search.job.SearchJob` of a search job's parameters. Only a
    built-in space by name: a YAML path, an accuracy CSV or a scorer would be a file or code on the hub."""
    from edgelat.profiler.spaces import BUILTIN
    from edgelat.search.job import make_job

    unknown = set(params) - set(SEARCH_PARAMS) - {"protocol"}
    if unknown:
        raise BadInput(f"malformed job: unknown search parameter(s) {', '.join(sorted(unknown))} (accuracy files "
                       "and scorers cannot travel to a hub)")
    for key, (types, optional) in SEARCH_PARAMS.items():
        value = params.get(key)
        if value is None and (optional or key not in params):
            continue
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise BadInput(f"malformed job: search parameter {key} has the wrong type ({type(value).__name__})")
    space = params.get("space")
    if space not in BUILTIN:
        raise BadInput(f"malformed job: search needs a built-in space by name (one of {', '.join(BUILTIN)}), "
                       f"got {space!r}")
    validate = params.get("validate", 0)
    if not 0 <= validate <= 100 or not 4 <= params.get("population", 100) <= 100000:
        raise BadInput("malformed job: validate must be 0 to 100 and population 4 to 100000")
    kwargs = {k: v for k, v in params.items() if k not in ("space", "protocol") and v is not None}
    return make_job(space, device, runtime_config(config), **kwargs)


def _check_search(params: dict[str, Any]) -> None:
    search_job("check", {}, params)


def run_search(db: Any, device: str, client: Any, job: dict[str, Any], report: Report) -> dict[str, Any]:
    """``edgelat search`` on the hub: :func:`edgelat.search.job.run_search` against the hub's tables
    (the device's table or predictor there), ``--validate`` measuring on the agent through the tunnel.
    The result is the command's ``--json`` report."""
    import json
    import math

    from edgelat.search.job import run_search as search

    params = job.get("params") or {}
    spec = search_job(device, job.get("config") or {}, params)
    total = max(1, int(params.get("validate") or 0))
    done = [0]

    def say(message: str) -> None:
        if message.startswith("measured "):
            done[0] += 1
        if not report(min(done[0], total), total, message):
            raise Stop("stopped")

    out = search(db, spec, progress=say, client=client).report

    def plain(value: Any) -> Any:  # the queue stores strict JSON: no NaN, no numpy scalars
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(json.loads(json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o))))


KINDS: dict[str, tuple[Callable[[dict[str, Any]], None], Callable[..., dict[str, Any]]]] = {
    "profile-ops": (_check_profile_ops, run_profile_ops),
    "profile-model": (_check_profile_model, run_profile_model),
    "predictor-build": (_check_predictor_build, run_predictor_build),
    "search": (_check_search, run_search),
}


def check_job(kind: str, device: str, config: dict[str, Any], params: dict[str, Any]) -> None:
    """Refuse a malformed job before it is stored (one line naming what is wrong)."""
    from edgelat.devices.registry import check_name

    if kind not in KINDS:
        raise BadInput(f"malformed job: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    try:
        check_name(device)
    except EdgelatError as exc:
        raise BadInput(f"malformed job: {exc}") from None
    runtime_config(config)
    protocol(params)
    KINDS[kind][0](params)
