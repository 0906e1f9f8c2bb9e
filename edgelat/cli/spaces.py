"""``edgelat spaces``: list the search spaces and show what one allows."""

from __future__ import annotations

import click

from edgelat.cli.base import EdgelatGroup, emit_json, json_option, main, stdout_console


@main.group(cls=EdgelatGroup)
def spaces() -> None:
    """List the built-in search spaces and show what one allows."""


@spaces.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """The built-in search spaces: genes, architectures, distinct kernels.

    \b
    Example:
      edgelat spaces list --json
    """
    from edgelat.search.describe import list_spaces

    rows = list_spaces()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("space", "genes", "architectures", "kernels"):
        table.add_column(col, justify="left" if col == "space" else "right")
    for r in rows:
        table.add_row(r["name"], str(r["genes"]), f"{r['architectures']:.3g}", str(r["kernel_vocabulary"]))
    stdout_console().print(table)
    click.echo("a YAML file defines a space of your own: see 'edgelat spaces show FILE.yaml'")


@spaces.command("show")
@click.argument("space")
@click.option("--random", "n_random", type=click.IntRange(0, 100), default=3, show_default=True,
              help="How many random architectures to print.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def show_cmd(space: str, n_random: int, seed: int, as_json: bool) -> None:
    """What a space allows: values per gene, the smallest and largest architectures by FLOPs,
    and random architectures (strings ready for predict, export and search).

    \b
    Examples:
      edgelat spaces show ofa-mbv3
      edgelat spaces show nasbench201 --random 5 --json
      edgelat spaces show my_space.yaml
    """
    from edgelat.search.describe import describe_space

    d = describe_space(space, n_random, seed)
    if as_json:
        emit_json(d)
        return
    click.echo(f"{d['name']}: {d['genes']} genes, {d['architectures']:.4g} architectures, "
               f"{d['kernel_vocabulary']} distinct kernels")
    for run in d["choices"]:
        first, last = run["genes"]
        genes = f"gene {first}" if first == last else f"genes {first}-{last}"
        click.echo(f"  {genes}: {', '.join(str(v) for v in run['values'])}")
    click.echo(f"smallest ({d['extremes']}): {d['smallest']['flops'] / 1e6:.1f} MFLOPs")
    click.echo(f"  {d['smallest']['arch']}")
    click.echo(f"largest: {d['largest']['flops'] / 1e6:.1f} MFLOPs")
    click.echo(f"  {d['largest']['arch']}")
    for r in d["random"]:
        click.echo(f"random: {r['flops'] / 1e6:.1f} MFLOPs")
        click.echo(f"  {r['arch']}")
