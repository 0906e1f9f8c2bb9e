"""``edgelat lut``: show and export a device's latency/energy table."""

from __future__ import annotations

from pathlib import Path

import click

from edgelat.cli.base import emit_json, json_option, lut, open_registry, stdout_console
from edgelat.cli.jobs import hub_reads


#: rows a terminal table shows by default (``--limit`` changes it)
SHOW_LIMIT = 100


def _ms(value: float | None) -> str:
    """A latency cell; statistics the runner did not report are shown as '-', never made up."""
    return "-" if value is None or value != value else f"{value:.4f}"


@lut.command("show")
@click.option("--device", required=True, help="Device name.")
@click.option("--op", default=None, help="Only this operator type (conv2d, dwconv2d, mbconv, ...).")
@click.option("--models", is_flag=True, help="Show whole-model rows instead of kernel rows.")
@click.option("--archs", is_flag=True,
              help="Show measured search-space architectures (imported with 'lut import-archs' or profiled).")
@click.option("--sort", type=click.Choice(["key", "median", "measured"]), default="key", show_default=True,
              help="Row order: by kernel key, slowest first, or newest first.")
@click.option("--limit", type=click.IntRange(0, None), default=None,
              help=f"At most N rows (0: all) [default: {SHOW_LIMIT} on a terminal table, all with --json].")
@hub_reads()
@json_option
def show(device: str, op: str | None, models: bool, archs: bool, sort: str, limit: int | None, as_json: bool) -> None:
    """Show the measured rows of a device's table.

    Unstable rows (the confidence target was not reached) are marked, energy is
    blank where the device had no sensor (the note says why). Kernel rows show the
    raw median and the median normalized to the device's reference state (divided
    by the drift sentinel's level); rows measured more than 5% away from that
    state are flagged in the "drift" column ('?' when no level was recorded).

    \b
    Examples:
      edgelat lut show --device local --op conv2d
      edgelat lut show --device local --sort median --limit 20
      edgelat lut show --device pixel3 --archs        # after 'lut import-archs'
      edgelat lut show --device rpi5 --json | jq '.[] | select(.stable == 0)'
      EDGELAT_HUB=hub.lab:50100 edgelat lut show --device pixel7   # the hub's table
    """
    from edgelat.errors import BadInput
    from edgelat.lut.table import LARGE_DRIFT, drift_flag, missing_rows_hint, row_counts, table_rows

    db, registry = open_registry()
    registry.get(device)
    cap = (None if as_json else SHOW_LIMIT) if limit is None else (limit or None)
    if models and archs:
        raise BadInput("give --models or --archs, not both")
    rows = table_rows(db, device, op=op, models=models, sort=sort, limit=None if cap is None else cap + 1,
                      archs=archs)
    more = cap is not None and len(rows) > cap
    rows = rows[:cap] if more else rows
    if as_json:
        from edgelat.results import public_row

        emit_json([public_row(r) for r in rows])
        return
    if not rows:
        what = "archs" if archs else "models" if models else "kernels"
        if what == "kernels" and op and row_counts(db, device)["kernels"]:
            click.echo(f"no {op} rows for {device}", err=True)
        else:
            click.echo(missing_rows_hint(db, device, what), err=True)
        return
    if archs:
        _print_archs(rows, more, cap, sort)
        return
    from rich import box
    from rich.table import Column, Table

    name_col = "model" if models else "kernel"
    console = stdout_console()
    configs: dict[str, list] = {}
    for r in rows:
        configs.setdefault(r["config_key"], []).append(r)
    flagged = 0
    for group in configs.values():  # one table per runtime config: rows are only comparable within one
        first = group[0]
        norm_cols = [] if models else ["norm ms", "drift"]
        table = Table(Column(name_col, min_width=30, overflow="fold"), "median ms", *norm_cols, "p10", "p90", "n",
                      "stable", "mJ",
                      box=box.SIMPLE_HEAD, title=f"{device}: {first['runtime']} {first['runtime_version']} {first['provider']}, "
                            f"{first['threads']} thread(s), {len(group)} {name_col} rows")
        for r in group:
            energy = f"{r['energy_mj']:.3f}" if r["energy_mj"] is not None else "-"
            norm = []
            if not models:
                flag = drift_flag(r.get("sentinel_level"))
                flagged += bool(flag) and flag != "unknown"
                norm = [_ms(r.get("median_norm_ms")), "?" if flag == "unknown" else f"[red]{flag}[/red]" if flag else ""]
            table.add_row(
                (r.get("model_name") or r.get("model_ref")) if models else r["kernel_key"],
                _ms(r["median_ms"]), *norm, _ms(r["p10_ms"]), _ms(r["p90_ms"]), str(r["n"]),
                "yes" if r["stable"] else "[red]no[/red]", energy,
            )
        console.print(table)
    if more:
        click.echo(f"showing the first {cap} rows ({sort} order); --limit 0 shows them all, --json prints them all")
    if flagged:
        click.echo(f"drift: {flagged} row(s) measured more than {100 * LARGE_DRIFT:.0f}% away from the device's "
                   "reference state; compare their normalized figures")
    notes = sorted({r["energy_note"] for r in rows if r["energy_mj"] is None and r["energy_note"]})
    for note in notes:
        click.echo(f"energy: {note}")


def _print_archs(rows: list, more: bool, cap: int | None, sort: str) -> None:
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("space", "arch", "latency ms", "source"):
        table.add_column(col, justify="right" if col == "latency ms" else "left")
    for r in rows:
        table.add_row(r["space"], r["arch"], _ms(r["latency_ms"]), r.get("source") or "")
    stdout_console().print(table)
    if more:
        click.echo(f"showing the first {cap} rows ({sort} order); --limit 0 shows them all, --json prints them all")


@lut.command("export")
@click.option("--device", required=True, help="Device name.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .csv, .parquet or .json (format from the extension).")
@click.option("--models", is_flag=True, help="Export whole-model rows instead of kernel rows.")
@click.option("--archs", is_flag=True, help="Export measured search-space architectures instead of kernel rows.")
@hub_reads()
def export(device: str, out: str, models: bool, archs: bool) -> None:
    """Export a device's table to CSV, Parquet or JSON.

    The file is written next to its destination and renamed into place, so a full
    disk or an interrupted export never leaves a half-written table.

    \b
    Examples:
      edgelat lut export --device rpi5 --out rpi5.csv
      edgelat lut export --device rpi5 --out rpi5.parquet
      edgelat lut export --device pixel3 --archs --out pixel3-nasbench201.csv
      EDGELAT_HUB=hub.lab:50100 edgelat lut export --device pixel7 --out t.parquet
    """
    from edgelat.lut.table import export_table

    db, registry = open_registry()
    registry.get(device)
    count = export_table(db, device, Path(out), models=models, archs=archs)
    click.echo(f"wrote {count} rows to {out}")


@lut.command("history")
@click.option("--device", required=True, help="Device name.")
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
              help="Only the measurements of this model file (.onnx/.tflite).")
@click.option("--kernel", "kernel_key", default=None, help="Only the measurements of this kernel key.")
@click.option("--limit", type=click.IntRange(1, None), default=50, show_default=True, help="Newest N measurements.")
@hub_reads()
@json_option
def history(device: str, model_path: str | None, kernel_key: str | None, limit: int, as_json: bool) -> None:
    """Every measurement a device's table ever stored, newest first: re-profiling keeps the old
    figures here (the table itself shows the latest), with when, in which state and where from.

    \b
    Examples:
      edgelat lut history --device rpi5 --model net.onnx
      edgelat lut history --device local --kernel 'conv2d:...' --json
    """
    from edgelat.api import measurement_history
    from edgelat.errors import BadInput

    if model_path and kernel_key:
        raise BadInput("give --model or --kernel, not both")
    out = measurement_history(device, model=model_path, kernel=kernel_key, limit=limit)
    if as_json:
        emit_json(out)
        return
    if not out:
        what = f"{model_path}" if model_path else (kernel_key or device)
        click.echo(f"no measurements of {what} on {device}", err=True)
        return
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("measured (UTC)", "kind", "item", "config", "median ms", "p10", "p90", "n", "stable", "drift level"):
        table.add_column(col, justify="right" if col in ("median ms", "p10", "p90", "n", "drift level") else "left")
    for r in out:
        level = r.get("sentinel_level")
        table.add_row(r["measured_at"] or "-", r["kind"], r["name"] or r["item_key"], r["config_key"],
                      _ms(r["median_ms"]), _ms(r["p10_ms"]), _ms(r["p90_ms"]), str(r["n"] or "-"),
                      "yes" if r["stable"] else "NO", "-" if level is None else f"{level:.3f}")
    stdout_console().print(table)
