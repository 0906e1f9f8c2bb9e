"""``edgelat predictor list``: the predictors the database holds."""

from __future__ import annotations

import click

from edgelat.cli.base import emit_json, json_option, open_registry, predictor, stdout_console
from edgelat.cli.jobs import hub_reads


@predictor.command("list")
@click.option("--device", default=None, help="Only this device's predictors.")
@hub_reads()
@json_option
def list_cmd(device: str | None, as_json: bool) -> None:
    """The stored predictors: kernel-level ones (per device and runtime config, with the
    calibration fitted beside them) and architecture-level ones (per space).

    \b
    Examples:
      edgelat predictor list
      edgelat predictor list --device rpi5 --json
      EDGELAT_HUB=hub.lab:50100 edgelat predictor list   # the hub's, of the devices the token may read
    """
    from edgelat.predictors.catalog import list_predictors

    db, registry = open_registry()
    if device is not None:
        registry.get(device)
    rows = list_predictors(db, device)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no predictors stored; build one with 'edgelat predictor build --device NAME' "
                   "or fit one with 'edgelat predictor fit --space SPACE --device NAME'")
        return
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("level", "device", "space", "config", "what", "fitted (UTC)"):
        table.add_column(col)
    for r in rows:
        if r["level"] == "kernel":
            cal = r["calibration"]
            what = f"{len(r['regressors'])} regressors, " + (
                f"calibration {cal['form']} (LOO MAPE {100 * cal['loo_mape']:.1f}%)"
                if cal and cal.get("loo_mape") is not None else "no calibration")
            table.add_row("kernel", r["device"], "", r["config_key"], what, r["fitted_at"] or "")
        else:
            m = r["metrics"]
            what = f"{r['kind']} on {r['samples']} archs" + (
                f", Spearman {m['spearman']:.3f}" if m.get("spearman") is not None else "")
            table.add_row("arch", r["device"], r["space"], r["config_key"], what, r["fitted_at"] or "")
    stdout_console().print(table)
