"""``edgelat profile``: measure operators or whole models on a device into its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgelat.cli.base import (
    emit_json,
    json_option,
    open_registry,
    profile,
    protocol_options,
    runtime_options,
    stderr_console,
    stdout_console,
)
from edgelat.errors import BadInput, CorruptModel, DeviceError

RUNNERS = ["benchmark_model", "ort-perf-test", "python"]
_runner_option = click.option(
    "--runner",
    type=click.Choice(RUNNERS),
    default=None,
    help="Phones only: the on-device runner (default: the one chosen at register-phone).",
)


# The command-line runners on a phone are runtimes of their own (rows from benchmark_model are not
# comparable with rows from the python runner's LiteRT), and each takes one model format.
RUNNER_RUNTIME = {"benchmark_model": "tflite-benchmark", "ort-perf-test": "ort-perf-test"}


def resolve_runtime(device: Any, runner: str | None, config: Any, runtime_given: bool, fmt: str | None = None) -> Any:
    """The runtime config for a device + runner (+ model format): a phone's runner decides the runtime
    unless it is the python runner; a contradiction is a clear error."""
    import dataclasses

    if runner and device.transport.get("type") != "adb":
        raise BadInput(f"--runner applies to phones; {device.name} is reached by {device.transport.get('type')}")
    chosen = runner or (device.transport.get("runner") if device.transport.get("type") == "adb" else None)
    runtime = RUNNER_RUNTIME.get(chosen or "")
    if runtime is not None:
        if runtime_given and config.runtime != runtime:
            raise BadInput(f"runner {chosen} runs its own runtime; drop --runtime {config.runtime} or use --runner python")
        config = dataclasses.replace(config, runtime=runtime)
    elif fmt == "tflite" and not runtime_given:
        config = dataclasses.replace(config, runtime="litert")
    if fmt is not None and config.model_format != fmt:
        raise BadInput(f"this is a {fmt} model but {chosen or config.runtime} runs {config.model_format} models")
    return config


def _runtime_given() -> bool:
    return click.get_current_context().get_parameter_source("runtime").name != "DEFAULT"


def _progress_bar(total: int, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]profiling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=stderr_console(),
        disable=quiet,
        transient=True,
    )


def run_kernel_job(device: str, specs: list, runtime_config: Any, protocol: Any, force: bool,
                   runner: str | None = None, quiet: bool = False, rounds: int | None = None) -> Any:
    """Profile ``specs`` on ``device`` with a progress bar on stderr (shared with quickstart)."""
    from edgelat.profiler.jobs import profile_kernels

    db, registry = open_registry()
    with registry.connect(device, runner=runner) as client:
        with _progress_bar(len(specs), quiet) as bar:
            task = bar.add_task("", total=len(specs))

            def on_result(done: int, total: int, key: str, result: Any) -> None:
                bar.update(task, completed=done, description=key[:48])

            extra = {} if rounds is None else {"rounds": rounds}
            summary = profile_kernels(db, device, client, specs, runtime_config, protocol, force=force,
                                      progress=on_result, **extra)
    registry.touch(device, "lost" if summary.interrupted else "available")
    return summary


def _print_summary(summary: Any) -> None:
    err = stderr_console()
    err.print(
        f"{summary.device}: {summary.measured} measured, {summary.skipped} already in the table, "
        f"{len(summary.failed)} failed, {summary.unstable} flagged unstable "
        f"({summary.wall_seconds:.1f} s wall, {summary.measured_seconds:.1f} s inside measured runs)"
    )
    for key, error in summary.failed[:10]:
        err.print(f"  failed {key}: {error}")
    err.print(drift_line(summary.sentinel_dict()))


def drift_line(sentinel: dict[str, Any]) -> str:
    """One line on the device's speed during the job, from the drift sentinel's checks."""
    from edgelat.lut.table import LARGE_DRIFT

    checks = sentinel["checks"]
    if not checks:
        return "sentinel: off (no drift check; rows have no normalized figure)"
    if sentinel["first_level"] is None:
        return f"sentinel: level unknown ({'; '.join(sentinel['notes'])}); rows have no normalized figure"
    line = (f"sentinel: {len(checks)} checks, level {sentinel['first_level']:.3f} at start, "
            f"{sentinel['last_level']:.3f} at end (range {sentinel['min_level']:.3f}-{sentinel['max_level']:.3f}"
            f" of the device's reference state)")
    drift = sentinel["drift"]
    if drift is not None:
        line += f", drift {100 * drift:.1f}% within this run"
        if drift > LARGE_DRIFT or max(abs(sentinel["max_level"] - 1), abs(sentinel["min_level"] - 1)) > LARGE_DRIFT:
            line += " [LARGE: compare normalized figures]"
    for note in sentinel["notes"]:
        line += f"\n  {note}"
    return line


@profile.command("ops")
@click.option("--device", required=True, help="Device name (see 'edgelat devices list'; 'local' is this machine).")
@click.option("--preset", default=None, help="Operator preset: mobilenet (default) or smoke.")
@click.option("--ops", "ops_file", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON list of kernel specs (dicts or canonical keys) instead of a preset.")
@click.option("--space", default=None,
              help="Every kernel a search space can contain (ofa-mbv3, proxyless, fbnet, nasbench201 or a YAML "
                   "file), so that search can price any architecture from the table.")
@click.option("--force", is_flag=True, help="Measure again kernels already in the table.")
@click.option("--rounds", type=click.IntRange(min=0), default=None,
              help="Interleave each batch over this many rounds on the device, shuffled (default 4; 0 or 1: "
                   "one kernel after the other). E.g. --rounds 6")
@runtime_options
@protocol_options
@_runner_option
@json_option
def ops(device: str, preset: str | None, ops_file: str | None, space: str | None, force: bool, rounds: int | None,
        runtime_config: Any, protocol: Any, runner: str | None, as_json: bool) -> None:
    """Profile operators (kernels) on a device into its lookup table.

    Kernels already measured for this device and runtime config are skipped, so an
    interrupted run finishes where it stopped when you run it again. A few fixed
    sentinel kernels are measured at the start, every few seconds and at the end:
    the drift they saw is printed, and each row stores its level and its median
    normalized to the device's reference state.

    \b
    Examples:
      edgelat profile ops --device local --preset smoke
      edgelat profile ops --device rpi5 --preset mobilenet --runtime litert --threads 4 --json
      edgelat profile ops --device pixel7 --preset mobilenet --runner benchmark_model
      edgelat profile ops --device rpi5 --space ofa-mbv3 --max-seconds 1
      edgelat profile ops --device local --preset mobilenet --force --rounds 6
    """
    from edgelat.profiler.ops import load_specs
    from edgelat.profiler.presets import get_preset

    if sum(x is not None for x in (preset, ops_file, space)) > 1:
        raise BadInput("give one of --preset, --ops or --space")
    if space is not None:
        from edgelat.search.spaces import get_space

        specs = get_space(space).kernel_vocabulary()
    elif ops_file is not None:
        specs = load_specs(ops_file)
    else:
        specs = get_preset(preset or "mobilenet")
    _, registry = open_registry()
    runtime_config = resolve_runtime(registry.get(device), runner, runtime_config, _runtime_given())
    summary = run_kernel_job(device, specs, runtime_config, protocol, force, runner=runner, quiet=as_json,
                             rounds=rounds)
    if as_json:
        emit_json(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.interrupted:
        raise DeviceError(summary.interrupted)
    if summary.failed and not summary.measured and not summary.skipped:
        raise DeviceError(f"every kernel failed; first error: {summary.failed[0][1]}")


def model_format_of(path: Path) -> str:
    """The model format, from the file name (a clear error for anything else)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".tflite":
        return "tflite"
    raise BadInput(f"{path}: unknown model format {suffix or '(no extension)'}: expected .onnx or .tflite")


def result_json(device: str, result: Any, model_ref: str, path: str) -> dict[str, Any]:
    """The ``profile model --json`` object (its keys are a documented contract)."""
    lat = result.latency
    return {
        "device": device,
        "model": path,
        "model_ref": model_ref,
        "runtime": result.config.runtime,
        "runtime_version": result.config.version,
        "provider": result.config.provider,
        "threads": result.config.threads,
        "latency_ms": {
            "median": lat.median, "mean": lat.mean, "std": lat.std,
            "p10": lat.p10, "p90": lat.p90, "n": lat.n,
        },
        "stable": lat.stable,
        "rel_ci": lat.rel_ci,
        "session_ms": result.session_ms,
        "first_run_ms": result.first_run_ms,
        "energy_mj": result.energy_mj,
        "energy_note": result.energy_note or None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "environment": result.environment,
        "agent_version": result.agent_version,
    }


@profile.command("model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", required=True, help="Device name ('local' is this machine).")
@runtime_options
@protocol_options
@_runner_option
@json_option
def model(path: str, device: str, runtime_config: Any, protocol: Any, runner: str | None, as_json: bool) -> None:
    """Profile a whole model file (.onnx or .tflite) on a device.

    The runtime defaults to onnxruntime for .onnx and LiteRT for .tflite.

    \b
    Examples:
      edgelat profile model net.onnx --device local --json
      edgelat profile model net.tflite --device rpi5 --threads 4
      edgelat profile model net.tflite --device pixel7 --runner benchmark_model --json
    """
    from edgelat.profiler.jobs import model_ref_for, profile_model

    file = Path(path)
    fmt = model_format_of(file)
    db, registry = open_registry()
    try:
        runtime_config = resolve_runtime(registry.get(device), runner, runtime_config, _runtime_given(), fmt)
    except BadInput as exc:
        raise BadInput(f"{file.name}: {exc}") from exc
    data = file.read_bytes()
    if not data:
        raise BadInput(f"{file}: the file is empty")
    with registry.connect(device, runner=runner) as client:
        try:
            result = profile_model(db, device, client, data, fmt, runtime_config, protocol,
                                   model_ref=model_ref_for(data), name=file.name)
        except CorruptModel as exc:
            raise CorruptModel(f"{file}: {exc}") from exc
    registry.touch(device, "available")
    out = result_json(device, result, model_ref_for(data), str(file))
    if as_json:
        emit_json(out)
        return
    lat = {k: ("n/a" if v is None or v != v else f"{v:.3f}" if isinstance(v, float) else v)
           for k, v in out["latency_ms"].items()}
    energy = f"{out['energy_mj']:.3f} mJ" if out["energy_mj"] is not None else f"n/a ({out['energy_note']})"
    stdout_console().print(
        f"{file.name} on {device} ({out['runtime']} {out['runtime_version']}, {out['threads']} thread(s)): "
        f"median {lat['median']} ms (p10 {lat['p10']}, p90 {lat['p90']}, n={lat['n']}"
        f"{'' if out['stable'] else ', UNSTABLE'}), energy {energy}"
    )
