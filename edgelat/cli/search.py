"""``edgelat search`` and ``edgelat export``: hardware-aware search against a named device.

Latency comes from the device's table or predictor (see
:mod:`edgelat.search.sources`); the accuracy side is pluggable and labelled
as a proxy when it is one (:mod:`edgelat.search.objective`).
"""

from __future__ import annotations

from typing import Any

import click

from edgelat.cli.base import emit_json, json_option, main, open_registry, runtime_options, stderr_console
from edgelat.cli.jobs import detach_option, hub_options, remote, submit
from edgelat.errors import BadInput


@main.command("search")
@click.option("--space", "space_name", required=True,
              help="ofa-mbv3, proxyless, fbnet, nasbench201, or a path to a YAML space file.")
@click.option("--device", required=True, help="Device whose table/predictor prices latency.")
@click.option("--max-latency", type=float, default=None, help="Latency budget (ms, predicted).")
@click.option("--max-energy", type=float, default=None, help="Energy budget (mJ per inference; needs energy rows).")
@click.option("--max-memory", type=float, default=None, help="Memory budget (MB; fp32 weights + largest activations, estimated).")
@click.option("--max-params", type=float, default=None, help="Parameter budget (millions).")
@click.option("--pareto", is_flag=True, help="NSGA-II: the whole score/latency front instead of one budget.")
@click.option("--population", type=click.IntRange(4, 100000), default=100, show_default=True)
@click.option("--generations", type=click.IntRange(0, 100000), default=None,
              help="Generations [default: 500 for evolution, 100 for --pareto].")
@click.option("--parents", type=click.FloatRange(0.01, 0.99), default=0.25, show_default=True,
              help="Share of the population kept as parents (evolution).")
@click.option("--mutate-prob", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Probability that a gene is resampled in a mutant.")
@click.option("--mutation-ratio", type=click.FloatRange(0, 0.99), default=0.5, show_default=True,
              help="Share of each new population made by mutation (the rest by crossover; evolution).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many architectures to report (evolution; --pareto reports the whole front).")
@click.option("--accuracy", "accuracy_csv", default=None, metavar="CSV",
              help="Measured accuracies: a CSV with columns arch, accuracy.")
@click.option("--unknown-archs", type=click.Choice(["nearest", "exclude"]), default="nearest", show_default=True,
              help="With --accuracy: score unlisted architectures by the nearest listed one, or exclude them.")
@click.option("--accuracy-fn", default=None, metavar="MODULE:FUNCTION",
              help="Python scorer fn(space, pop) -> scores (module:function or file.py:function).")
@click.option("--validate", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Export the top K, measure them on the device and store them.")
@click.option("--validate-seconds", type=click.FloatRange(0.05, 600), default=10.0, show_default=True,
              help="Time cap per validated model.")
@click.option("--compare-flops", is_flag=True,
              help="Also search under a FLOPs budget matched to the latency winner, and compare (measured when possible).")
@click.option("--no-speed-check", "no_speed_check", is_flag=True,
              help="Price with the device's speed when its predictor was built. By default the build's held-out "
                   "whole models are measured again first (a few seconds) and the kernel predictor's figures "
                   "scaled to the device's speed now, as 'predict' does.")
@click.option("--out", "out_csv", default=None, metavar="CSV", help="Write the results to a CSV file.")
@click.option("--plot", "plot_png", default=None, metavar="PNG", help="Write a score-vs-latency PNG with the constraint.")
@hub_options
@detach_option
@json_option
@runtime_options
def search_cmd(
    space_name: str, device: str, max_latency: float | None, max_energy: float | None, max_memory: float | None,
    max_params: float | None, pareto: bool, population: int, generations: int | None, parents: float,
    mutate_prob: float, mutation_ratio: float, seed: int, top: int, accuracy_csv: str | None, unknown_archs: str,
    accuracy_fn: str | None, validate: int, validate_seconds: float, compare_flops: bool, no_speed_check: bool,
    out_csv: str | None,
    plot_png: str | None, as_json: bool, runtime_config: Any, hub: str | None = None,
    hub_token_file: str | None = None, detach: bool = False,
) -> None:
    """Find the best architectures of a space that fit a budget on a device.

    The default objective is a size proxy (log FLOPs + log params), labelled
    as a proxy in every output; give --accuracy or --accuracy-fn for real
    accuracies. Latency is the device's predicted latency (table, kernel
    predictor or architecture predictor); --validate measures the winners.

    \b
    Examples:
      edgelat search --space ofa-mbv3 --device pixel7 --max-latency 25
      edgelat search --space ofa-mbv3 --device pixel7 --pareto --out front.csv --plot front.png
      edgelat search --space ofa-mbv3 --device pixel7 --max-latency 25 --validate 5
      edgelat search --space nasbench201 --device pixel3 --max-latency 12 --accuracy accuracies.csv
      EDGELAT_HUB=hub.lab:50100 edgelat search --space ofa-mbv3 --device pixel7 --max-latency 25 --validate 5
    """
    from edgelat.search.job import make_job, run_search
    from edgelat.search.report import check_writable, plot_front, print_table, write_csv

    out_path = check_writable(out_csv, "--out")
    plot_path = check_writable(plot_png, "--plot")
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise BadInput(f"--plot {plot_path}: name the file *.png")
    if remote(hub):  # the search runs on the hub (its tables, its agents), followed here unless --detach
        if accuracy_csv is not None or accuracy_fn is not None or plot_path is not None:
            raise BadInput("--accuracy, --accuracy-fn and --plot are not supported through a hub: search locally")
        params = dict(space=space_name, max_latency_ms=max_latency, max_energy_mj=max_energy,
                      max_memory_mb=max_memory, max_params_m=max_params, pareto=pareto, population=population,
                      generations=generations, parents=parents, mutate_prob=mutate_prob,
                      mutation_ratio=mutation_ratio, seed=seed, top=top, unknown_archs=unknown_archs,
                      validate=validate, validate_seconds=validate_seconds, compare_flops=compare_flops,
                      speed_check=not no_speed_check)
        config = {k: v for k, v in runtime_config.to_dict().items() if k != "version"}
        done = submit(hub, hub_token_file, "search", device, config, params, detach, as_json, "searching")
        if done is None:
            return
        report = dict(done.get("result") or {})
        if out_path is not None:
            write_csv(out_path, report["results"])
            report["csv"] = str(out_path)
        if as_json:
            emit_json(report)
        else:
            print_table(report)
            if "csv" in report:
                click.echo(f"wrote {report['csv']}")
        return
    job = make_job(space_name, device, runtime_config, max_latency_ms=max_latency, max_energy_mj=max_energy,
                   max_memory_mb=max_memory, max_params_m=max_params, pareto=pareto, population=population,
                   generations=generations, parents=parents, mutate_prob=mutate_prob, mutation_ratio=mutation_ratio,
                   seed=seed, top=top, accuracy_csv=accuracy_csv, accuracy_fn=accuracy_fn, unknown_archs=unknown_archs,
                   validate=validate, validate_seconds=validate_seconds, compare_flops=compare_flops,
                   keep_cloud=plot_path is not None, speed_check=not no_speed_check)
    db, registry = open_registry()
    registry.get(device)
    space, objective = job.space, job.objective
    console = stderr_console()
    outcome = run_search(db, job, progress=None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]")))
    report = outcome.report
    if out_path is not None:
        write_csv(out_path, report["results"])
        report["csv"] = str(out_path)
    if plot_path is not None:
        plot_front(plot_path, outcome.shown, outcome.result.cloud, max_latency, device, space.name,
                   "proxy score (log FLOPs + log params)" if objective.proxy and accuracy_csv is None
                   and accuracy_fn is None else f"score ({objective.name})")
        report["plot"] = str(plot_path)
    if as_json:
        emit_json(report)
    else:
        print_table(report)
        for key in ("csv", "plot"):
            if key in report:
                click.echo(f"wrote {report[key]}")


@main.command("export")
@click.option("--space", "space_name", required=True, help="Search space (name or YAML file).")
@click.option("--arch", required=True, help="Architecture string of the space.")
@click.option("--out", "out_path", required=True, metavar="FILE", help="Output model: *.onnx or *.tflite.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@json_option
def export_cmd(space_name: str, arch: str, out_path: str, seed: int, as_json: bool) -> None:
    """Write an architecture of a space as an ONNX or TFLite model with random weights.

    The format follows the file name. TFLite export covers the chain-shaped
    spaces (ofa-mbv3, proxyless, YAML spaces); fbnet and nasbench201 export ONNX.

    \b
    Example:
      edgelat export --space ofa-mbv3 --arch '{"ks": [...20], "e": [...20], "d": [...5], "r": 160}' --out net.onnx
      edgelat export --space nasbench201 --arch '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|' --out cell.onnx
    """
    from edgelat.search.export import export_arch

    info = export_arch(space_name, arch, out_path, seed)
    path, fmt, data_len = info["out"], info["format"], info["bytes"]
    if as_json:
        emit_json(info)
    else:
        click.echo(f"wrote {path} ({fmt}, {data_len / 1e6:.2f} MB, {info['params'] / 1e6:.3f} M params, "
                   f"{info['flops'] / 1e6:.1f} MFLOPs)")
