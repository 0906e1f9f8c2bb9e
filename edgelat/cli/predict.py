"""``edgelat predict``, ``edgelat predictor fit`` and ``edgelat lut import-archs``.

Predictions for search-space architectures come from
:func:`edgelat.predictors.arch_predict.predict_archs` (an architecture measured
exactly on the device is answered with that measurement, the rest by the
device's latency model); a model file from :func:`edgelat.on_demand.predict_model_file`
(kernels nothing can price are measured on the device first). Devices known only from imported
measurements have no runtime config: ``--runtime``/``--threads`` do not apply
to them and are ignored.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from edgelat.cli.base import emit_json, json_option, lut, main, open_registry, predictor, runtime_options
from edgelat.cli.jobs import hub_reads
from edgelat.errors import BadInput


def _space(name: str) -> Any:
    from edgelat.profiler.spaces import get_space

    return get_space(name)


def _fmt_ms(v: float) -> str:
    return f"{v:.4g} ms"


# ------------------------------------------------------------------ lut import-archs
@lut.command("import-archs")
@click.argument("csv_path", metavar="LATENCIES.CSV", type=click.Path(dir_okay=False))
@click.option("--space", "space_name", required=True, help="Search space of the arch strings (e.g. nasbench201).")
@click.option("--devices", default=None, help="Comma-separated device columns to import (default: all).")
@click.option("--source", default=None, help="Where the numbers come from (stored with each row; default: file name).")
@json_option
def import_archs(csv_path: str, space_name: str, devices: str | None, source: str | None, as_json: bool) -> None:
    """Import measured whole-architecture latencies from a wide CSV.

    The CSV has an ``arch`` column and one column per device with latencies in
    ms (an ``idx`` column is ignored; an empty cell means not measured). Devices
    not yet registered are created with kind ``imported``. Every row is checked
    before anything is stored; importing the same file again changes nothing.

    \b
    Example:
      edgelat lut import-archs nasbench201_latency_ms.csv --space nasbench201
    """
    from edgelat.predictors.archs_io import import_arch_table

    space = _space(space_name)
    wanted = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    if devices is not None and not wanted:
        raise BadInput("--devices is empty: give comma-separated device column names")
    db, _ = open_registry()
    counts = import_arch_table(db, csv_path, space, wanted, source)
    if as_json:
        emit_json({"space": space.name, "file": csv_path, "rows": counts, "total": sum(counts.values())})
        return
    from rich.table import Table

    from edgelat.cli.base import stdout_console

    table = Table(title=f"imported {space.name} latencies", show_edge=False)
    table.add_column("device")
    table.add_column("rows", justify="right")
    for dev, c in counts.items():
        table.add_row(dev, str(c))
    stdout_console().print(table)


# ------------------------------------------------------------------ predict
@main.command("predict")
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False))
@click.option("--device", required=True, help="Device name (see 'edgelat devices list').")
@click.option("--space", "space_name", default=None, help="Search space of --arch/--archs (ofa-mbv3, nasbench201, ...).")
@click.option("--arch", default=None, help="One architecture string of the space.")
@click.option("--archs", "archs_csv", default=None, type=click.Path(dir_okay=False),
              help="CSV with an 'arch' column: predict every row.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="With --archs: write the rows plus a latency_ms column here (default: CSV on stdout).")
@click.option("--measure-if-unsure", is_flag=True,
              help="With a model file: first measure on the device the kernels whose regressor prices make the "
                   "90% interval wide, store them, then answer.")
@click.option("--sustained", is_flag=True,
              help="With a model file: predict the sustained state, what 'profile model --sustained' measures "
                   "(after the device has settled under load). Default: warm, what 'profile model' measures.")
@click.option("--no-speed-check", "no_speed_check", is_flag=True,
              help="With a model file: answer with the device's speed when its predictor was built. By default "
                   "a warm prediction first measures the build's held-out whole models again (a few seconds) and "
                   "scales the figure to the device's speed now, as 'profile model' would find it.")
@runtime_options
@hub_reads(refused={"measure_if_unsure": "--measure-if-unsure measures on the device, which a read through a hub "
                                         "cannot do: profile the kernels through the hub ('edgelat profile ops'), "
                                         "then predict"})
@json_option
def predict(model_path: str | None, device: str, space_name: str | None, arch: str | None,
            archs_csv: str | None, out_path: str | None, measure_if_unsure: bool, sustained: bool,
            no_speed_check: bool, runtime_config: Any, as_json: bool) -> None:
    """Predict the latency of a model file or of search-space architectures on a device.

    For an imported device (known only from imported measurements) the runtime
    options do not apply and are ignored.

    \b
    Examples:
      edgelat predict model.onnx --device rpi5 --json
      edgelat predict net.onnx --device rpi5 --measure-if-unsure
      edgelat predict net.onnx --device rpi5 --sustained   # vs 'profile model --sustained'
      edgelat predict --space ofa-mbv3 --arch '{"ks": [...], "e": [...], "d": [...], "r": 224}' --device rpi5
      edgelat predict --space nasbench201 --archs query.csv --device pixel3 --out predictions.csv
      EDGELAT_HUB=hub.lab:50100 edgelat predict model.onnx --device pixel7   # from the hub's tables
    """
    if model_path and space_name:
        raise BadInput("give either a model file or --space with --arch/--archs, not both")
    if model_path:
        if arch or archs_csv or out_path:
            raise BadInput("--arch, --archs and --out go with --space, not with a model file")
        _predict_model(model_path, device, runtime_config, as_json, measure_if_unsure, sustained, not no_speed_check)
        return
    if measure_if_unsure:
        raise BadInput("--measure-if-unsure goes with a model file")
    if no_speed_check:
        raise BadInput("--no-speed-check goes with a model file")
    if sustained:
        raise BadInput("--sustained goes with a model file")
    if not space_name:
        raise BadInput("nothing to predict: give a model file, or --space with --arch or --archs")
    if bool(arch) == bool(archs_csv):
        raise BadInput("with --space give exactly one of --arch (one architecture) or --archs (a CSV)")
    if out_path and not archs_csv:
        raise BadInput("--out goes with --archs")
    from edgelat.predictors.arch_predict import predict_archs

    space = _space(space_name)
    db, registry = open_registry()
    registry.get(device)
    if arch is not None:
        g = space.from_string(arch)[None, :]
        ms, src = predict_archs(db, device, runtime_config, space, g)
        data = {"device": device, "space": space.name, "arch": space.to_string(g[0]),
                "latency_ms": float(ms[0]), "source": src[0]}
        if as_json:
            emit_json(data)
        else:
            click.echo(f"{device} {space.name}: {_fmt_ms(data['latency_ms'])} ({src[0]})")
        return
    from edgelat.predictors.archs_io import read_arch_list, write_predictions

    header, rows, pop = read_arch_list(archs_csv, space)
    ms, src = predict_archs(db, device, runtime_config, space, pop)
    if as_json:
        emit_json({
            "device": device, "space": space.name,
            "predictions": [{"arch": space.to_string(g), "latency_ms": float(v), "source": s}
                            for g, v, s in zip(pop, ms, src)],
        })
    if out_path:
        write_predictions(out_path, header, rows, ms)
        if not as_json:
            counts = {s: src.count(s) for s in dict.fromkeys(src)}
            how = ", ".join(f"{c} from {s}" for s, c in counts.items())
            click.echo(f"wrote {len(rows)} predictions to {out_path} ({how})", err=True)
    elif not as_json:
        write_predictions(sys.stdout, header, rows, ms)


def _predict_model(path: str, device: str, config: Any, as_json: bool, measure_if_unsure: bool,
                   sustained: bool = False, speed_check: bool = True) -> None:
    from edgelat.on_demand import predict_model_file

    db, registry = open_registry()
    registry.get(device)
    data = predict_model_file(db, device, config, path, measure_if_unsure=measure_if_unsure,
                              state="sustained" if sustained else "warm", speed_check=speed_check)
    if as_json:
        emit_json(data)
        return
    from rich.table import Table

    from edgelat.cli.base import stdout_console

    kernels = data.get("kernels") or []
    title = f"{path} on {device}, {data['state']}: {_fmt_ms(float(data['latency_ms']))}"
    if data.get("latency_ms_low") is not None:
        title += f" (90% interval {data['latency_ms_low']:.4g}-{data['latency_ms_high']:.4g} ms)"
    if data.get("calibrated"):
        title += " (calibrated)"
    if data.get("measured_ms") is not None:
        title += f", measured {_fmt_ms(float(data['measured_ms']))}"
    click.echo(title)
    cov = data.get("coverage") or {}
    click.echo("from: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in cov.items() if v > 0))
    if (data.get("speed") or {}).get("note"):
        click.echo(data["speed"]["note"])
    if data.get("latency_ms_low") is None and data.get("interval"):
        click.echo(data["interval"])
    table = Table(show_edge=False)
    for col in ("kernel", "type", "ms", "from"):
        table.add_column(col, justify="right" if col == "ms" else "left")
    for k in kernels:
        ms = k.get("predicted_ms")
        table.add_row(str(k.get("key", "")), str(k.get("type", "")), f"{ms:.4g}" if ms is not None else "-",
                      str(k.get("source") or ("table" if k.get("exact_table_hit") else "predicted")))
    stdout_console().print(table)


# ------------------------------------------------------------------ predictor fit
@predictor.command("fit")
@click.option("--space", "space_name", required=True, help="Search space (ofa-mbv3, proxyless, fbnet, nasbench201).")
@click.option("--device", required=True, help="Device whose measured architectures train the predictor.")
@click.option("--few-shot/--no-few-shot", default=None,
              help="Borrow strength from the other devices' measurements in the space, or never. "
                   "Default: decided by itself; with few measured architectures it keeps whichever "
                   "predicts them better out of sample, and says so.")
@click.option("--samples", type=click.IntRange(2, None), default=None,
              help="Train on only this many random measured architectures; the rest validate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/validation split.")
@runtime_options
@json_option
def fit(space_name: str, device: str, few_shot: bool | None, samples: int | None, seed: int, runtime_config: Any,
        as_json: bool) -> None:
    """Fit and store the architecture-level latency predictor of a device for a space.

    Trains on the device's measured architectures (imported with 'lut
    import-archs' or profiled) and prints accuracy on architectures the fit did
    not see (a held-out split, or leave-one-out for small sets). For an
    imported device the runtime options do not apply.

    \b
    Examples:
      edgelat predictor fit --space nasbench201 --device pixel3
      edgelat predictor fit --space nasbench201 --device pixel3 --samples 10
      edgelat predictor fit --space nasbench201 --device pixel3 --no-few-shot
    """
    from edgelat.predictors.arch import fit_device_predictor

    space = _space(space_name)
    db, registry = open_registry()
    registry.get(device)
    summary = fit_device_predictor(db, space, device, runtime_config, few_shot=few_shot, samples=samples, seed=seed)
    if as_json:
        emit_json(summary)
        return
    m = summary["metrics"]
    click.echo(
        f"fitted {summary['kind']} predictor for {space.name} on {device} ({summary['config_key']}) "
        f"from {summary['n_samples']} architectures"
        + (f" + {len(summary['sources'])} source devices" if summary["sources"] else "")
    )
    click.echo(f"borrowing from other devices: {'yes' if summary['few_shot'] else 'no'} ({summary['few_shot_reason']})")
    click.echo(f"validation: {summary['validation']}")
    click.echo(
        f"  spearman {m['spearman']:.3f}  within 10% {m['within_10']:.1%}  within 5% {m['within_5']:.1%}  "
        f"MAPE {m['mape']:.1%}  RMSE {m['rmse']:.3g} ms  (n={m['n']})"
    )
