"""``edgelat predictor build`` and ``edgelat predictor report``: the kernel-level predictor of a device."""

from __future__ import annotations

from typing import Any

import click

from edgelat.cli.base import emit_json, json_option, open_registry, predictor, runtime_options, stdout_console
from edgelat.cli.jobs import detach_option, hub_options, hub_reads, remote


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


@predictor.command("build")
@click.option("--device", required=True, help="Device name ('local' is this machine).")
@click.option(
    "--budget-minutes",
    type=click.FloatRange(0, 24 * 60),
    default=30.0,
    show_default=True,
    help="Profiling time for this device + runtime config, summed over runs: an interrupted "
    "build continues when rerun; rerun with a larger budget to profile more. The whole models "
    "that calibrate the predictor are measured last and at least once each, which can run "
    "past a budget of a minute or less (by up to a second per model).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the kernel sampler.")
@runtime_options
@hub_options
@detach_option
@json_option
def build(device: str, budget_minutes: float, seed: int, runtime_config: Any, as_json: bool,
          hub: str | None = None, hub_token_file: str | None = None, detach: bool = False) -> None:
    """Profile kernels on a device by adaptive sampling and fit its latency predictor.

    Measures which operator pairs the runtime fuses, kernels drawn from real CNNs
    (MobileNetV2/V3, Once-for-All subnets and perturbations of them), a handful of
    whole models to calibrate against, then more kernels around the ones predicted
    worst, until the budget is spent. Every measurement is stored as it arrives.

    \b
    Examples:
      edgelat predictor build --device local --budget-minutes 5
      edgelat predictor build --device rpi5 --runtime litert --threads 4
    """
    if remote(hub):  # through a hub: a job that runs the same build there
        from edgelat.cli.jobs import predictor_build

        data = predictor_build(device, budget_minutes * 60.0, seed, runtime_config, as_json, hub, hub_token_file,
                               detach)
        if data is not None and as_json:
            emit_json(data)
        elif data is not None:
            _print_build(data)
        return
    from edgelat.cli.base import progress_lines
    from edgelat.predictors.sampling import build_on_device, build_state

    db, registry = open_registry()
    registry.get(device)
    budget_s = budget_minutes * 60.0
    already = build_state(db, device, runtime_config)["spent_s"]
    with progress_lines("building", max(budget_s, 1.0), quiet=as_json, done=min(already, budget_s),
                        unit="{:.0f} s") as bar:

        def on_progress(phase: str, spent: float, budget: float, message: str) -> None:
            bar.update(min(spent, budget), f"{phase}: {message}")

        summary = build_on_device(db, device, runtime_config, budget_s, seed=seed, progress=on_progress)
    data = summary.to_dict()
    if as_json:
        emit_json(data)
    else:
        _print_build(data)
    if summary.interrupted:
        from edgelat.errors import DeviceError

        raise DeviceError(summary.interrupted)


def _print_build(d: dict[str, Any]) -> None:
    from rich.table import Table

    out = stdout_console()
    out.print(
        f"[bold]{d['device']}[/] {d['config_key']}: {d['kernels_measured']} kernels measured this run "
        f"({d['kernels_total']} in the table), {d['models_measured']} whole models, {d['rounds']} adaptive rounds; "
        f"profiling {d['spent_s'] / 60:.1f} of {d['budget_s'] / 60:.1f} min budget, fitting {d['fit_s']:.0f} s"
    )
    if d["spent_s"] >= d["budget_s"] and d["spent_this_run_s"] == 0:
        out.print("the budget was already spent: nothing measured (rerun with a larger --budget-minutes to profile more)")
    if d["fusion"]:
        fused = sorted(k for k, v in d["fusion"].items() if v == "fused")
        separate = sorted(k for k, v in d["fusion"].items() if v == "separate")
        out.print(f"fused on this runtime: {', '.join(fused) or 'none'}; run apart: {', '.join(separate) or 'none'}")
    if d.get("layout"):
        out.print(f"layout conversion (kernels alone and chained): {d['layout']['per_element_ms'] * 1e6:.3f} ns per element, "
                  "taken off the kernel prices where a model does not convert")
    if d["regressors"]:
        t = Table("kernel type", "rows", "regressor", "CV MAPE", title="per-type regressors")
        for op, r in d["regressors"].items():
            t.add_row(op, str(r["rows"]), r["model"], _pct(r["cv_mape"]))
        out.print(t)
    else:
        out.print("no kernel type has enough rows for a regressor yet")
    c = d["calibration"]
    for state, cs in ((c.get("states") or {"": c}).items() if c else ()):
        loo = (cs.get("loo_mape") or {}).get(cs["form"])
        held = f" (MAPE {_pct(loo)} on families left out)" if loo is not None else ""
        label = f"calibration ({state})" if state else "calibration"
        out.print(f"{label}: {cs['form']} {['%.4g' % x for x in cs['coef']]} from {cs['models']} whole models{held}")
    for f in d["failed"]:
        out.print(f"  failed {f['key']}: {f['error']}")


@predictor.command("report")
@click.option("--device", required=True, help="Device name.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG of predicted vs measured.")
@runtime_options
@hub_reads()
@json_option
def report(device: str, plot_path: str | None, runtime_config: Any, as_json: bool) -> None:
    """Accuracy of a device's kernel predictor on held-out measurements.

    Kernels: out-of-fold predictions of the cross-validation at fit time. Whole
    models: the build's holdout models (never calibrated on), the calibration
    models leave-one-out, and every model with all its kernels predicted
    out-of-fold (as if the device had never run any of them).

    \b
    Example:
      edgelat predictor report --device local --plot report.png
    """
    from edgelat.predictors.report import plot_report, predictor_report

    db, _ = open_registry()
    rep = predictor_report(db, device, runtime_config)
    if plot_path:
        plot_report(rep, plot_path)
    if as_json:
        data = dict(rep)
        data["kernels"] = {k: v for k, v in rep["kernels"].items() if k != "points"}
        data["plot"] = plot_path
        emit_json(data)
        return
    _print_report(rep, plot_path)


def _print_report(rep: dict[str, Any], plot_path: str | None) -> None:
    from rich.table import Table

    out = stdout_console()
    t = Table("held out", "n", "RMSE ms", "MAPE", "±5%", "±10%", "Spearman", title=f"{rep['device']} · {rep['config_key']}")
    k = rep["kernels"]

    def row(label: str, m: dict[str, Any]) -> None:
        if m.get("n"):
            t.add_row(label, str(m["n"]), _num(m.get("rmse")), _pct(m.get("mape")), _pct(m.get("within_5")),
                      _pct(m.get("within_10")), _num(m.get("spearman")))

    if "overall" in k:
        row("kernels (out-of-fold)", k["overall"])
        for op, m in k["by_type"].items():
            row(f"  {op} ({m['regressor']})", m)
    models = rep["models"]
    row("models: holdout", models["holdout"])
    row("models: calibration, leave-one-out", models["calibration_leave_one_out"])
    row("models: kernels unseen", models["kernels_unseen"])
    row("models: uncalibrated kernel sum", models["uncalibrated_sum"])
    out.print(t)
    if k["measured_after_fit"]:
        out.print(f"{k['measured_after_fit']} kernels measured after the last fit are not in these figures")
    if k["types_without_regressor"]:
        lacking = ", ".join(f"{op} ({n} rows)" for op, n in k["types_without_regressor"].items())
        out.print(f"kernel types without a regressor (too few rows; not in these figures): {lacking}")
    if plot_path:
        out.print(f"plot written to {plot_path}")
