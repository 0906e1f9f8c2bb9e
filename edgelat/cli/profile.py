"""``edgelat profile``: measure operators or whole models on a device into its table."""

from __future__ import annotations

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
                   runner: str | None = None, quiet: bool = False) -> Any:
    """Profile ``specs`` on ``device`` with a progress bar on stderr (shared with quickstart)."""
    from edgelat.profiler.jobs import profile_kernels

    db, registry = open_registry()
    with registry.connect(device, runner=runner) as client:
        with _progress_bar(len(specs), quiet) as bar:
            task = bar.add_task("", total=len(specs))

            def on_result(done: int, total: int, key: str, result: Any) -> None:
                bar.update(task, completed=done, description=key[:48])

            summary = profile_kernels(db, device, client, specs, runtime_config, protocol, force=force,
                                      progress=on_result)
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


@profile.command("ops")
@click.option("--device", required=True, help="Device name (see 'edgelat devices list'; 'local' is this machine).")
@click.option("--preset", default=None, help="Operator preset: mobilenet (default) or smoke.")
@click.option("--ops", "ops_file", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON list of kernel specs (dicts or canonical keys) instead of a preset.")
@click.option("--space", default=None,
              help="Every kernel a search space can contain (ofa-mbv3, proxyless, fbnet, nasbench201 or a YAML "
                   "file), so that search can price any architecture from the table.")
@click.option("--force", is_flag=True, help="Measure again kernels already in the table.")
@runtime_options
@protocol_options
@_runner_option
@json_option
def ops(device: str, preset: str | None, ops_file: str | None, space: str | None, force: bool, runtime_config: Any,
        protocol: Any, runner: str | None, as_json: bool) -> None:
    """Profile operators (kernels) on a device into its lookup table.

    Kernels already measured for this device and runtime config are skipped, so an
    interrupted run finishes where it stopped when you run it again.

    \b
    Examples:
      edgelat profile ops --device local --preset smoke
      edgelat profile ops --device rpi5 --preset mobilenet --runtime litert --threads 4 --json
      edgelat profile ops --device pixel7 --preset mobilenet --runner benchmark_model
      edgelat profile ops --device rpi5 --space ofa-mbv3 --max-seconds 1
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
    summary = run_kernel_job(device, specs, runtime_config, protocol, force, runner=runner, quiet=as_json)
    if as_json:
        emit_json(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.interrupted:
        raise DeviceError(summary.interrupted)
    if summary.failed and not summary.measured and not summary.skipped:
        raise DeviceError(f"every kernel failed; first error: {summary.failed[0][1]}")


def result_json(device: str, result: Any, model_ref: str, path: str, notes: list[str] | None = None) -> dict[str, Any]:
    """The ``profile model --json`` object (its keys are a documented contract)."""
    lat = result.latency
    return {
        "device": device,
        "model": path,
        "model_ref": model_ref,
        "notes": list(notes or []),
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
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--device", required=True, help="Device name ('local' is this machine).")
@runtime_options
@protocol_options
@_runner_option
@json_option
def model(path: str, device: str, runtime_config: Any, protocol: Any, runner: str | None, as_json: bool) -> None:
    """Profile a whole model file (.onnx or .tflite) on a device.

    The format comes from the file's content. ONNX weights kept in external data
    files next to the model (model.onnx + model.onnx.data, as PyTorch's exporter
    writes them) are read and sent with it as one self-contained model; a symbolic
    batch dimension is measured at 1 (the output's notes say so). The runtime
    defaults to onnxruntime for ONNX and LiteRT for TFLite.

    \b
    Examples:
      edgelat profile model net.onnx --device local --json
      edgelat profile model resnet50.onnx --device rpi5 --json   # resnet50.onnx.data travels with it
      edgelat profile model net.tflite --device rpi5 --threads 4
      edgelat profile model net.tflite --device pixel7 --runner benchmark_model --json
    """
    from edgelat.profiler.intake import read_model
    from edgelat.profiler.jobs import profile_model

    m = read_model(path)
    db, registry = open_registry()
    try:
        runtime_config = resolve_runtime(registry.get(device), runner, runtime_config, _runtime_given(), m.format)
    except BadInput as exc:
        raise BadInput(f"{m.name}: {exc}") from exc
    with registry.connect(device, runner=runner) as client:
        try:
            result = profile_model(db, device, client, m.data, m.format, runtime_config, protocol,
                                   model_ref=m.ref, name=m.name)
        except (BadInput, CorruptModel) as exc:  # refused (upload cap) or rejected by the device
            raise type(exc)(f"{m.path}: {exc}") from exc
    registry.touch(device, "available")
    out = result_json(device, result, m.ref, str(m.path), m.notes)
    if as_json:
        emit_json(out)
        return
    lat = {k: ("n/a" if v is None or v != v else f"{v:.3f}" if isinstance(v, float) else v)
           for k, v in out["latency_ms"].items()}
    energy = f"{out['energy_mj']:.3f} mJ" if out["energy_mj"] is not None else f"n/a ({out['energy_note']})"
    stdout_console().print(
        f"{m.name} on {device} ({out['runtime']} {out['runtime_version']}, {out['threads']} thread(s)): "
        f"median {lat['median']} ms (p10 {lat['p10']}, p90 {lat['p90']}, n={lat['n']}"
        f"{'' if out['stable'] else ', UNSTABLE'}), energy {energy}"
    )
    for note in m.notes:
        click.echo(f"note: {note}", err=True)
