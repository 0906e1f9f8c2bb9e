"""``edgelat quickstart``: the first thing a new user runs, on this machine, in under two minutes."""

from __future__ import annotations

import click

from edgelat.cli.base import emit_json, json_option, main, progress_lines, stderr_console, stdout_console


@main.command("quickstart")
@click.option("--runtime", type=click.Choice(["onnxruntime", "litert"]), default="onnxruntime", show_default=True,
              help="Runtime to profile with.")
@click.option("--max-seconds", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Time cap per kernel (rows that hit it before the 2% target are flagged unstable).")
@json_option
def quickstart(runtime: str, max_seconds: float, as_json: bool) -> None:
    """Profile the smoke preset and one whole model on this machine ('local').

    Measures each kernel of the 'smoke' preset and a small MobileNet-like network
    built from the same catalog, stores them in the local table, and prints them.
    Running it again skips what is already measured.

    \b
    Example:
      edgelat quickstart
      edgelat lut show --device local
    """
    from rich import box
    from rich.table import Column, Table

    from edgelat.profiler.quickstart import QuickstartJob

    err = stderr_console()
    with QuickstartJob(runtime, max_seconds) as job:
        if not as_json:
            err.print(f"[bold]1/2[/bold] profiling {len(job.specs)} kernels of the smoke preset on 'local' "
                      f"({runtime}, 1 thread)")
        with progress_lines("profiling", len(job.specs), as_json) as bar:
            summary = job.profile_kernels(progress=lambda done, total, key, result: bar.update(done, key))
        if not as_json:
            err.print("[bold]2/2[/bold] profiling a whole model built from the catalog (tiny_net)")
        result = job.profile_model()
        rows = job.kernel_rows()
    database = job.database
    lat = result.latency
    if as_json:
        emit_json({
            "device": "local",
            "database": str(database),
            "kernels": summary.to_dict(),
            "model": {"name": "tiny_net", "median_ms": lat.median, "p10_ms": lat.p10, "p90_ms": lat.p90,
                      "n": lat.n, "stable": lat.stable, "energy_mj": result.energy_mj,
                      "energy_note": result.energy_note or None},
        })
        return
    table = Table(Column("kernel", min_width=30, overflow="fold"), "median ms", "p10", "p90", "n", "stable",
                  box=box.SIMPLE_HEAD, title=f"local ({runtime} {result.config.version}, 1 thread)")
    for r in rows:
        table.add_row(r["kernel_key"], f"{r['median_ms']:.4f}", f"{r['p10_ms']:.4f}", f"{r['p90_ms']:.4f}",
                      str(r["n"]), "yes" if r["stable"] else "[red]no[/red]")
    table.add_row("[bold]tiny_net (whole model)", f"[bold]{lat.median:.4f}", f"{lat.p10:.4f}", f"{lat.p90:.4f}",
                  str(lat.n), "yes" if lat.stable else "[red]no[/red]")
    out = stdout_console()
    out.print(table)
    energy = (f"{result.energy_mj:.3f} mJ per inference" if result.energy_mj is not None
              else f"not measured: {result.energy_note}")
    out.print(f"energy: {energy}")
    out.print(f"{summary.measured} kernels measured now, {summary.skipped} already in the table, "
              f"{len(summary.failed)} failed, {summary.unstable} unstable.")
    out.print(f"data: {database} (SQLite). Next: 'edgelat lut show --device local', "
              f"'edgelat lut export --device local --out local.csv'.")
