"""``edgelat devices``: register boards/GPU hosts by agent address, list, show, remove.

Phones are registered by ``devices register-phone`` (see ``edgelat/cli/phone.py``).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import sys
from typing import Any, Callable

import click

from edgelat.cli.base import devices, emit_json, json_option, open_registry, stdout_console
from edgelat.cli.jobs import hub_options, hub_reads, remote
from edgelat.results import public_row


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def replace_options(f: Callable) -> Callable:
    """``--replace`` with ``--keep-rows``/``--drop-rows``: re-point a registered name;
    gives the command a ``replace`` kwarg (None, "keep-rows" or "drop-rows")."""

    @click.option("--replace", is_flag=True, help="Re-point a name that is already registered (say what becomes of its rows).")
    @click.option("--keep-rows", is_flag=True, help="With --replace: the name keeps its rows (the same board, reached anew).")
    @click.option("--drop-rows", is_flag=True, help="With --replace: delete the name's rows (a different board).")
    @functools.wraps(f)
    def wrapper(*args: Any, replace: bool, keep_rows: bool, drop_rows: bool, **kwargs: Any) -> Any:
        kwargs["replace"] = rows_choice(replace, keep_rows, drop_rows)
        return f(*args, **kwargs)

    return wrapper


def _interactive() -> bool:
    return sys.stdin.isatty()


def rows_choice(replace: bool, keep_rows: bool, drop_rows: bool) -> str | None:
    """What ``--replace`` does with the rows; asked when interactive and not given."""
    from edgelat.errors import BadInput

    if keep_rows and drop_rows:
        raise BadInput("give only one of --keep-rows and --drop-rows")
    if (keep_rows or drop_rows) and not replace:
        raise BadInput("--keep-rows and --drop-rows go with --replace")
    if not replace:
        return None
    if keep_rows or drop_rows:
        return "keep-rows" if keep_rows else "drop-rows"
    if _interactive():
        answer = click.prompt(
            "keep the name's rows (same board) or drop them (a different board)?",
            type=click.Choice(["keep", "drop"]),
        )
        return f"{answer}-rows"
    raise BadInput("--replace needs --keep-rows (the name keeps its rows) or --drop-rows (they are deleted)")


@devices.command("register")
@click.argument("name")
@click.option("--agent", "address", required=True, metavar="HOST:PORT", help="Address of a running 'edgelat agent serve'.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="File holding the agent's token.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate when the agent uses TLS.")
@click.option("--kind", type=click.Choice(["board", "gpu-host", "host"]), default=None,
              help="Device kind (default: gpu-host when the agent reports a GPU provider, else board).")
@replace_options
@json_option
def register(name: str, address: str, token_file: str | None, tls_ca: str | None, kind: str | None,
             replace: str | None, as_json: bool) -> None:
    """Register a board or GPU host reached through its agent; the facts are read from the agent.

    A name stays bound to one board: registering it again at another address, or
    when another board answers there, is refused unless --replace says what
    becomes of its rows. 'local' (this machine) cannot be registered.

    \b
    Example:
      edgelat agent serve --listen 127.0.0.1:50051          # on the board
      edgelat devices register rpi5 --agent 127.0.0.1:50051
      edgelat devices register rpi5 --agent 10.0.0.9:50051 --replace --keep-rows   # same board, new address
    """
    from edgelat.devices.enroll import register_agent

    _, registry = open_registry()
    device = register_agent(registry, name, address, token_file, tls_ca, kind, replace)
    facts = device.facts
    if as_json:
        emit_json(public_row(device.to_dict()))
    else:
        click.echo(f"registered {name} ({device.kind}) at {address}: {facts.get('cpu_model') or facts.get('arch', '?')}")


@devices.command("list")
@hub_options
@json_option
def list_(as_json: bool, hub: str | None = None, hub_token_file: str | None = None) -> None:
    """List the registered devices (``local`` is always there); with a hub, the hub's devices
    (online, busy, offline or quarantined).

    \b
    Example:
      edgelat devices list --json | jq '.[].name'
    """
    if remote(hub):
        from edgelat.cli.jobs import devices_list

        return devices_list(hub, hub_token_file, as_json)
    from edgelat.devices.info import device_rows

    _, registry = open_registry()
    rows = device_rows(registry.list())
    if as_json:
        emit_json([public_row(r) for r in rows])
        return
    from rich.table import Table

    table = Table("name", "kind", "status", "reached by", "last seen")
    for r in rows:
        t = r["transport"]
        how = t.get("address") or t.get("serial") or t.get("type")
        table.add_row(r["name"], r["kind"], r["status"], str(how), _when(r["last_seen"]))
    stdout_console().print(table)


@devices.command("show")
@click.argument("name")
@hub_reads(device_param="name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a device: how it is reached and the facts read from it.

    \b
    Example:
      edgelat devices show rpi5 --json
      EDGELAT_HUB=hub.lab:50100 edgelat devices show pixel7   # as the hub's tables hold it
    """
    from edgelat.devices.info import device_info

    _, registry = open_registry()
    device = registry.get(name)
    data = device_info(device)
    if as_json:
        emit_json(public_row(data))
        return
    click.echo(f"{device.name}  kind={device.kind}  status={device.status}")
    click.echo(f"transport: {json.dumps(device.transport, sort_keys=True)}")
    click.echo(f"first seen: {_when(device.first_seen)}  last seen: {_when(device.last_seen)}")
    for key in sorted(data["facts"]):
        value = data["facts"][key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        click.echo(f"  {key}: {text}")


@devices.command("remove")
@click.argument("name")
@click.option("--keep-rows", is_flag=True,
              help="Archive the rows under NAME.archived-<time> (still shown by 'lut show') instead of deleting them.")
def remove(name: str, keep_rows: bool) -> None:
    """Forget a device and delete its measurements and predictors (or archive them).

    Registering the name again starts empty either way.

    \b
    Example:
      edgelat devices remove rpi5
      edgelat devices remove rpi5 --keep-rows
    """
    _, registry = open_registry()
    rows, archive = registry.remove(name, keep_rows=keep_rows)
    if archive:
        click.echo(f"removed {name}; its {rows} rows are archived as {archive} (edgelat lut show --device {archive})")
    elif keep_rows:
        click.echo(f"removed {name}; it had no rows to archive")
    else:
        click.echo(f"removed {name} and its {rows} rows")
