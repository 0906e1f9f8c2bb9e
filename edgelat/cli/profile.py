"""``edgelat profile``: measure operators or whole models on a device into its table."""

from __future__ import annotations

from typing import Any

import click

from edgelat.cli.jobs import detach_option, hub_options, remote
from edgelat.cli.base import (
    emit_json,
    json_option,
    open_registry,
    profile,
    progress_lines,
    protocol_options,
    runtime_options,
    stderr_console,
    stdout_console,
)
from edgelat.devices.runtime import RUNNERS, resolve_runtime
from edgelat.errors import BadInput, DeviceError

_runner_option = click.option(
    "--runner",
    type=click.Choice(RUNNERS),
    default=None,
    help="Phones only: the on-device runner (default: the one chosen at register-phone).",
)


def _runtime_given() -> bool:
    return click.get_current_context().get_parameter_source("runtime").name != "DEFAULT"


def run_kernel_job(device: str, specs: list, runtime_config: Any, protocol: Any, force: bool,
                   runner: str | None = None, quiet: bool = False, rounds: int | None = None) -> Any:
    """Profile ``specs`` on ``device`` with a progress bar on stderr (shared with quickstart)."""
    from edgelat.profiler.jobs import profile_kernels

    db, registry = open_registry()
    with registry.connect(device, runner=runner) as client:
        with progress_lines("profiling", len(specs), quiet) as bar:

            def on_result(done: int, total: int, key: str, result: Any) -> None:
                bar.update(done, key)

            extra = {} if rounds is None else {"rounds": rounds}
            summary = profile_kernels(db, device, client, specs, runtime_config, protocol, force=force,
                                      progress=on_result, **extra)
    registry.touch(device, "lost" if summary.interrupted else "available")
    return summary


def _print_summary(d: dict[str, Any]) -> None:
    """The end of ``profile ops``, from the job summary's dict (local, or a hub job's result)."""
    err = stderr_console()
    err.print(
        f"{d['device']}: {d['measured']} measured, {d['skipped']} already in the table, "
        f"{len(d['failed'])} failed, {d['unstable']} flagged unstable "
        f"({d['wall_seconds']:.1f} s wall, {d['measured_seconds']:.1f} s inside measured runs)"
    )
    for f in d["failed"][:10]:
        err.print(f"  failed {f['key']}: {f['error']}")
    err.print(drift_line(d["sentinel"]))


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
@hub_options
@detach_option
@json_option
def ops(device: str, preset: str | None, ops_file: str | None, space: str | None, force: bool, rounds: int | None,
        runtime_config: Any, protocol: Any, runner: str | None, as_json: bool, hub: str | None = None,
        hub_token_file: str | None = None, detach: bool = False) -> None:
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
      EDGELAT_HUB=hub.lab:50100 edgelat profile ops --device pixel7 --preset mobilenet --detach
    """
    if remote(hub):  # a job on the hub, followed here unless --detach
        from edgelat.cli.jobs import profile_ops

        data = profile_ops(device, preset, ops_file, space, force, rounds, runtime_config, protocol, runner,
                           as_json, hub, hub_token_file, detach)
        if data is not None and as_json:
            emit_json(data)
        elif data is not None:
            _print_summary(data)
        if data is not None and data.get("interrupted"):
            raise DeviceError(data["interrupted"])
        return
    from edgelat.profiler.ops import load_specs
    from edgelat.profiler.presets import get_preset

    if sum(x is not None for x in (preset, ops_file, space)) > 1:
        raise BadInput("give one of --preset, --ops or --space")
    if space is not None:
        from edgelat.profiler.spaces import get_space

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
        _print_summary(summary.to_dict())
    if summary.interrupted:
        raise DeviceError(summary.interrupted)
    if summary.failed and not summary.measured and not summary.skipped:
        raise DeviceError(f"every kernel failed; first error: {summary.failed[0][1]}")


def result_json(device: str, result: Any, model_ref: str, path: str, notes: list[str] | None = None) -> dict[str, Any]:
    """The ``profile model --json`` object (its keys are a documented contract)."""
    from edgelat.results import ModelProfile

    return ModelProfile.from_result(device, result, model_ref, path, notes).to_dict()


@profile.command("model")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--device", required=True, help="Device name ('local' is this machine).")
@runtime_options
@protocol_options
@_runner_option
@hub_options
@detach_option
@click.option("--per-layer", is_flag=True,
              help="Also measure each layer with the runtime's profiler (onnxruntime), in runs of their own "
                   "after the timed ones; shown slowest first with its share of the total.")
@click.option("--layers", "show_layers", type=click.IntRange(1, None), default=20, show_default=True,
              help="With --per-layer: how many of the slowest layers to print (--json prints all).")
@click.option("--sustained", is_flag=True,
              help="Measure the sustained state: run the model unmeasured for --settle-s seconds first, as "
                   "'predictor build' settles before its sustained calibration ('predict --sustained' predicts "
                   "this). Default: warm (after warm-up runs), what 'predict' predicts.")
@click.option("--settle-s", type=click.FloatRange(min=0), default=None,
              help="With --sustained: seconds of unmeasured load first [default: 120, the build's].")
@json_option
def model(path: str, device: str, runtime_config: Any, protocol: Any, runner: str | None, per_layer: bool,
          show_layers: int, sustained: bool, settle_s: float | None, as_json: bool, hub: str | None = None,
          hub_token_file: str | None = None, detach: bool = False) -> None:
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
      edgelat profile model net.onnx --device local --per-layer
      edgelat profile model net.onnx --device local --sustained   # after settling under load
    """
    import dataclasses

    from edgelat.profiler.jobs import profile_model_file

    if per_layer:
        protocol = dataclasses.replace(protocol, per_layer=True)

    if settle_s is not None and not sustained:
        raise BadInput("--settle-s goes with --sustained (the warm state does not settle)")
    if remote(hub):
        from edgelat.cli.jobs import profile_model

        got = profile_model(path, device, runtime_config, protocol, runner, _runtime_given(), as_json, hub,
                            hub_token_file, detach, state="sustained" if sustained else "warm", settle_s=settle_s)
        if got is None:
            return
        m, out = got
    else:
        db, _ = open_registry()
        m, result = profile_model_file(db, device, path, runtime_config, protocol, runner=runner,
                                       runtime_given=_runtime_given(), state="sustained" if sustained else "warm",
                                       settle_s=settle_s)
        out = result_json(device, result, m.ref, str(m.path), m.notes)
    if as_json:
        emit_json(out)
        return
    lat = {k: ("n/a" if v is None or v != v else f"{v:.3f}" if isinstance(v, float) else v)
           for k, v in out["latency_ms"].items()}
    energy = f"{out['energy_mj']:.3f} mJ" if out["energy_mj"] is not None else f"n/a ({out['energy_note']})"
    stdout_console().print(
        f"{m.name} on {device} ({out['runtime']} {out['runtime_version']}, {out['threads']} thread(s)), "
        f"{out['state']}: median {lat['median']} ms (p10 {lat['p10']}, p90 {lat['p90']}, n={lat['n']}"
        f"{'' if out['stable'] else ', UNSTABLE'}), energy {energy}"
    )
    for note in m.notes:
        click.echo(f"note: {note}", err=True)
    if per_layer:
        _print_layers(out.get("layers"), out.get("layers_note"), show_layers)


def _print_layers(layers: list | None, note: str | None, limit: int) -> None:
    """The slowest layers first, with their share of the layers' sum."""
    if not layers:
        click.echo(note or "no per-layer times: this device's runner reports none (onnxruntime and "
                           "benchmark_model do)", err=True)
        return
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("layer", "op", "median ms", "share"):
        table.add_column(col, justify="right" if col in ("median ms", "share") else "left")
    ranked = sorted(layers, key=lambda r: -r["median_ms"])
    for r in ranked[:limit]:
        table.add_row(r["layer"], r["op"], f"{r['median_ms']:.4f}", f"{100 * r['share']:.1f}%")
    stdout_console().print(table)
    if len(ranked) > limit:
        click.echo(f"{len(ranked) - limit} more layers (--layers N, or --json for all)")
    if note:
        click.echo(f"note: {note}", err=True)
