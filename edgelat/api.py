"""The Python API: devices by name, their tables, predictors and search, without a subprocess.

This is the library the command line calls, with no database handles or config objects in
the signatures: the embedded database under ``$EDGELAT_HOME`` is opened for each call (it is
SQLite in WAL mode, so a notebook and a running ``edgelat`` command can share it).

    import edgelat
    dev = edgelat.device("local")
    r = dev.profile_model("net.onnx")          # ModelProfile; r.latency_ms.median
    table = dev.table()                        # pandas DataFrame of the lookup table
    dev.history(model="net.onnx")              # every measurement kept, newest first
    p = edgelat.predictor("local")
    p.predict("net.onnx").latency_ms           # a path or an onnx.ModelProto
    p.predict_archs("ofa-mbv3", archs)         # numpy array, the fast batched path
    res = edgelat.search("ofa-mbv3", device="local", max_latency_ms=10)

Reads from a hub's tables: ``edgelat.device("pixel7", hub="hub.lab:50100")`` and
``edgelat.predictor("pixel7", hub=...)`` read a local copy of the hub's rows of the device
(:mod:`edgelat.hub.reads`), as ``edgelat lut show --hub`` does; the token comes from
``token_file`` or ``$EDGELAT_TOKEN_FILE``. Measuring goes through the hub's jobs (the CLI).

Errors are :class:`edgelat.errors.EdgelatError` subclasses with a one-line message.
``docs/api.md`` walks through it with examples that run as tests.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from edgelat.errors import BadInput
from edgelat.results import Latency, ModelProfile, Prediction, SearchResults

__all__ = ["Device", "Predictor", "device", "list_devices", "predictor", "search", "export", "measurement_history"]


def _open() -> tuple[Any, Any]:
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db

    db = open_db()
    return db, Registry(db)


def _reading(hub: str | None, token_file: str | None, device: str | None) -> Any:
    """Within the block the store is the local copy of ``hub``'s rows of ``device`` (the embedded
    database when ``hub`` is None: the API goes through a hub only when told to)."""
    import contextlib

    if hub is None:
        return contextlib.nullcontext()
    from edgelat.hub.reads import hub_tables

    return hub_tables(hub, token_file, device)


def _no_hub(hub: str | None, what: str) -> None:
    if hub is not None:
        raise BadInput(f"{what} through a hub is a job: run 'edgelat {what} --hub {hub}' (the API reads a hub's "
                       "tables, it does not submit jobs)")


def _config(runtime: str, threads: int, provider: str) -> Any:
    from edgelat.values import RUNTIMES, RuntimeConfig

    if runtime not in RUNTIMES:
        raise BadInput(f"unknown runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 256:
        raise BadInput(f"threads must be an integer from 1 to 256, got {threads!r}")
    return RuntimeConfig(runtime=runtime, threads=threads, provider=provider)


def _protocol(max_seconds: float, target_ci: float) -> Any:
    from edgelat.values import MeasurementProtocol

    if not 0.05 <= float(max_seconds) <= 3600:
        raise BadInput(f"max_seconds must be between 0.05 and 3600, got {max_seconds!r}")
    if not 0.001 <= float(target_ci) <= 1:
        raise BadInput(f"target_ci must be between 0.001 and 1, got {target_ci!r}")
    return MeasurementProtocol(max_seconds=float(max_seconds), target_rel_ci=float(target_ci))


@dataclass
class Device:
    """A named device of the registry (``local`` is this machine)."""

    name: str
    kind: str
    status: str
    facts: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the hub whose tables this device is read from (None: the embedded database)
    hub: str | None = field(default=None, repr=False)
    token_file: str | None = field(default=None, repr=False)

    def table(self, op: str | None = None, models: bool = False) -> Any:
        """The device's lookup table as a pandas DataFrame (kernel rows, or whole-model rows)."""
        import pandas as pd

        from edgelat.lut.table import table_rows

        with _reading(self.hub, self.token_file, self.name):
            db, _ = _open()
            return pd.DataFrame(table_rows(db, self.name, op=op, models=models))

    def profile_ops(self, preset: str | None = None, specs: Iterable[Any] | None = None, space: str | None = None,
                    force: bool = False, runtime: str = "onnxruntime", threads: int = 1, provider: str = "cpu",
                    max_seconds: float = 10.0, target_ci: float = 0.02) -> dict[str, Any]:
        """Measure operators into the table (a preset, kernel specs/keys, or a search space's
        vocabulary; default the ``mobilenet`` preset); returns the job summary as a dict."""
        from edgelat.profiler.jobs import profile_kernels
        from edgelat.profiler.ops import KernelSpec
        from edgelat.profiler.presets import get_preset

        _no_hub(self.hub, "profile ops")
        if sum(x is not None for x in (preset, specs, space)) > 1:
            raise BadInput("give one of preset, specs or space")
        if space is not None:
            from edgelat.profiler.spaces import get_space

            kernels = get_space(space).kernel_vocabulary()
        elif specs is not None:
            kernels = [s if isinstance(s, KernelSpec) else KernelSpec.from_key(s) if isinstance(s, str)
                       else KernelSpec(**s) for s in specs]
        else:
            kernels = get_preset(preset or "mobilenet")
        db, registry = _open()
        config = _config(runtime, threads, provider)
        with registry.connect(self.name) as client:
            summary = profile_kernels(db, self.name, client, kernels, config, _protocol(max_seconds, target_ci),
                                      force=force)
        registry.touch(self.name, "lost" if summary.interrupted else "available")
        return summary.to_dict()

    def profile_model(self, model: str | Path | Any, runtime: str | None = None, threads: int = 1,
                      provider: str = "cpu", max_seconds: float = 10.0, target_ci: float = 0.02,
                      per_layer: bool = False, sustained: bool = False,
                      settle_s: float | None = None) -> ModelProfile:
        """Measure a whole model (a path to .onnx/.tflite, or an ``onnx.ModelProto``) and store it.

        ``runtime`` defaults to what the file needs (onnxruntime for ONNX, LiteRT for TFLite);
        ``per_layer`` also measures each layer with the runtime's profiler (``r.layers``,
        ``r.layers_frame()``). ``sustained`` measures after ``settle_s`` seconds of unmeasured
        load (default the build's, 120) instead of warm; ``r.state`` says which."""
        import dataclasses

        from edgelat.profiler.jobs import profile_model_file

        _no_hub(self.hub, "profile model")
        db, _ = _open()
        config = _config(runtime or "onnxruntime", threads, provider)
        protocol = dataclasses.replace(_protocol(max_seconds, target_ci), per_layer=bool(per_layer))
        with _model_path(model) as path:
            m, result = profile_model_file(db, self.name, path, config, protocol, runtime_given=runtime is not None,
                                           state="sustained" if sustained else "warm", settle_s=settle_s)
        name = str(m.path) if isinstance(model, (str, Path)) else "<onnx.ModelProto>"
        return ModelProfile.from_result(self.name, result, m.ref, name, m.notes)

    def history(self, model: str | Path | None = None, kernel: str | None = None, limit: int | None = 50) -> Any:
        """Every measurement stored for the device, newest first, as a DataFrame (profiling the
        same model or kernel again adds a row here; :meth:`table` shows only the latest)."""
        import pandas as pd

        return pd.DataFrame(measurement_history(self.name, model=model, kernel=kernel, limit=limit, hub=self.hub,
                                                token_file=self.token_file))

    def predictor(self, runtime: str = "onnxruntime", threads: int = 1, provider: str = "cpu") -> "Predictor":
        """The device's latency predictor for one runtime config (from the same hub, if any)."""
        return Predictor(self.name, runtime, threads, provider, hub=self.hub, token_file=self.token_file)


class _model_path:
    """A context giving a file path for a model given as a path or an ``onnx.ModelProto``."""

    def __init__(self, model: str | Path | Any) -> None:
        self.model = model
        self.tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Path:
        if isinstance(self.model, (str, Path)):
            return Path(self.model)
        if type(self.model).__name__ == "ModelProto":
            import onnx

            self.tmp = tempfile.TemporaryDirectory(prefix="edgelat-api-")
            path = Path(self.tmp.name) / "model.onnx"
            onnx.save_model(self.model, str(path))
            return path
        raise BadInput(f"a model is a path to a .onnx/.tflite file or an onnx.ModelProto, got {type(self.model).__name__}")

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


class Predictor:
    """A device's latency predictor for one runtime config."""

    def __init__(self, device: str, runtime: str = "onnxruntime", threads: int = 1, provider: str = "cpu",
                 hub: str | None = None, token_file: str | None = None) -> None:
        self.device = device
        self.config = _config(runtime, threads, provider)
        self.hub = hub
        self.token_file = token_file

    def __repr__(self) -> str:
        return f"Predictor({self.device!r}, {self.config.key()!r})"

    def predict(self, model: str | Path | Any, measure_missing: bool = True, sustained: bool = False,
                speed_check: bool = True) -> Prediction:
        """Predicted latency of a model file or ``onnx.ModelProto``; kernels nothing can price are
        measured on the device when ``measure_missing`` and it is reachable. Warm by default (what
        ``Device.profile_model`` measures); ``sustained`` predicts ``profile_model(sustained=True)``.
        ``r.state`` says which. ``speed_check`` (warm, device reachable): the build's held-out models
        are measured again first and the figure scaled to the device's speed now
        (``r.details["speed"]`` says by how much, or why not). From a hub's tables nothing is
        measured: kernels nothing can price are named in the error."""
        from edgelat.on_demand import predict_model_file

        with _reading(self.hub, self.token_file, self.device), _model_path(model) as path:
            db, _ = _open()
            out = predict_model_file(db, self.device, self.config, path,
                                     measure_missing=measure_missing and self.hub is None,
                                     state="sustained" if sustained else "warm", speed_check=speed_check)
        if not isinstance(model, (str, Path)):
            out["model"] = "<onnx.ModelProto>"
        return Prediction(device=self.device, model=out["model"], latency_ms=float(out["latency_ms"]),
                          calibrated=bool(out.get("calibrated")), kernels=out.get("kernels", []),
                          details={k: v for k, v in out.items() if k not in ("kernels",)})

    def predict_archs(self, space: str, archs: Sequence[str] | Any) -> Any:
        """Latency (ms, numpy array) of architectures of a search space: strings, or a genotype array."""
        import numpy as np

        from edgelat.predictors.arch_predict import predict_archs
        from edgelat.profiler.spaces import get_space

        sp = get_space(space)
        pop = sp.from_strings(list(archs)) if not isinstance(archs, np.ndarray) else sp.check(archs)
        with _reading(self.hub, self.token_file, self.device):
            db, registry = _open()
            registry.get(self.device)
            return predict_archs(db, self.device, self.config, sp, pop)[0]


def list_devices() -> list[Device]:
    """Every registered device, ``local`` first (``edgelat.devices`` is the registry's package)."""
    _, registry = _open()
    return [Device(d.name, d.kind, d.status, d.facts) for d in registry.list()]


def device(name: str, hub: str | None = None, token_file: str | None = None) -> Device:
    """A device by name (``UnknownDevice`` if it is not registered); with ``hub`` (``HOST:PORT``),
    the device as the hub's tables hold it, whose reads go to them."""
    with _reading(hub, token_file, name):
        _, registry = _open()
        d = registry.get(name)
    return Device(d.name, d.kind, d.status, d.facts, hub=hub, token_file=token_file)


def predictor(device: str, runtime: str = "onnxruntime", threads: int = 1, provider: str = "cpu",
              hub: str | None = None, token_file: str | None = None) -> Predictor:
    """The latency predictor of a device for one runtime config (from ``hub``'s tables when given)."""
    with _reading(hub, token_file, device):
        _open()[1].get(device)
    return Predictor(device, runtime, threads, provider, hub=hub, token_file=token_file)


def search(space: str, device: str, max_latency_ms: float | None = None, pareto: bool = False,
           validate: int = 0, runtime: str = "onnxruntime", threads: int = 1, provider: str = "cpu",
           **options: Any) -> SearchResults:
    """A hardware-aware search of ``space`` against ``device``: evolution under ``max_latency_ms``,
    or the whole latency/score front with ``pareto``; ``validate`` measures the top K on the
    device. ``options`` are those of ``edgelat search`` (``population``, ``generations``, ``top``,
    ``seed``, ``accuracy_csv``, ``max_energy_mj``, ``max_memory_mb``, ``max_params_m``, ...)."""
    from edgelat.search.job import make_job, run_search

    job = make_job(space, device, _config(runtime, threads, provider), max_latency_ms=max_latency_ms,
                   pareto=pareto, validate=validate, **options)
    db, registry = _open()
    registry.get(device)
    report = run_search(db, job).report
    return SearchResults(device=device, space=job.space.name, results=report["results"], notes=report["notes"],
                         report=report)


def measurement_history(device: str, model: str | Path | None = None, kernel: str | None = None,
                        limit: int | None = 50, hub: str | None = None,
                        token_file: str | None = None) -> list[dict[str, Any]]:
    """Every measurement a device's table stored (of one model file or kernel key, or all),
    newest first, as ``--json`` prints them: times ISO 8601, ``latency_ms`` the one
    :class:`Latency` object, ``environment`` and ``layers`` decoded (from ``hub``'s tables
    when given)."""
    import json

    from edgelat.lut.store import history_rows
    from edgelat.results import public_row

    if model is not None and kernel is not None:
        raise BadInput("give a model or a kernel key, not both")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadInput(f"limit must be a positive integer or None, got {limit!r}")
    item = kernel
    if model is not None:
        from edgelat.profiler.intake import read_model

        item = read_model(model).ref
    with _reading(hub, token_file, device):
        db, registry = _open()
        registry.get(device)
        rows = history_rows(db, device, item, limit)
    out = []
    for r in rows:
        env = json.loads(r.pop("environment_json") or "{}")
        layers = json.loads(r.pop("layers_json", None) or "null")
        r.pop("id", None)
        out.append({**public_row(r), "environment": env, "layers": layers})
    return out


def export(space: str, arch: str, out: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write an architecture of a space as an ONNX or TFLite model (format by the file name);
    returns what was written."""
    from edgelat.search.export import export_arch

    return export_arch(space, arch, out, seed)


__all__ += ["Latency", "ModelProfile", "Prediction", "SearchResults"]
