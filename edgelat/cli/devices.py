"""``edgelat devices``: register boards/GPU hosts by agent address, list, show, remove.

Phones are registered by ``devices register-phone`` (see ``edgelat/cli/phone.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import click

from edgelat.cli.base import devices, emit_json, json_option, open_registry, stdout_console


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


@devices.command("register")
@click.argument("name")
@click.option("--agent", "address", required=True, metavar="HOST:PORT", help="Address of a running 'edgelat agent serve'.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="File holding the agent's token.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate when the agent uses TLS.")
@click.option("--kind", type=click.Choice(["board", "gpu-host", "host"]), default=None,
              help="Device kind (default: gpu-host when the agent reports a GPU provider, else board).")
@json_option
def register(name: str, address: str, token_file: str | None, tls_ca: str | None, kind: str | None, as_json: bool) -> None:
    """Register a board or GPU host reached through its agent; the facts are read from the agent.

    \b
    Example:
      edgelat agent serve --listen 127.0.0.1:50051          # on the board
      edgelat devices register rpi5 --agent 127.0.0.1:50051
    """
    from edgelat.devices.registry import Device, check_name, connect

    db, registry = open_registry()
    check_name(name)
    transport: dict[str, Any] = {"type": "agent", "address": address}
    if token_file:
        transport["token_file"] = str(Path(token_file).resolve())
    if tls_ca:
        transport["tls_ca"] = str(Path(tls_ca).resolve())
    # Read the facts before writing anything: an unreachable agent or a bad token leaves the registry unchanged.
    with connect(Device(name=name, kind="board", transport=transport)) as client:
        facts = client.describe()
    if kind is None:
        kind = "gpu-host" if facts.get("kind") == "gpu-host" else "board"
    device = registry.register(name, kind, transport, facts)
    if as_json:
        emit_json(device.to_dict())
    else:
        click.echo(f"registered {name} ({kind}) at {address}: {facts.get('cpu_model') or facts.get('arch', '?')}")


@devices.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the registered devices (``local`` is always there).

    \b
    Example:
      edgelat devices list --json | jq '.[].name'
    """
    _, registry = open_registry()
    rows = [d.to_dict() for d in registry.list()]
    if as_json:
        for r in rows:
            r.pop("facts", None)
        emit_json(rows)
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
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a device: how it is reached and the facts read from it.

    \b
    Example:
      edgelat devices show rpi5 --json
    """
    _, registry = open_registry()
    device = registry.get(name)
    data = device.to_dict()
    if device.transport.get("type") == "local" and not device.facts:
        from edgelat.agents.facts import host_facts

        data["facts"] = host_facts()
    if as_json:
        emit_json(data)
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
def remove(name: str) -> None:
    """Forget a device. Its measurements stay in the tables.

    \b
    Example:
      edgelat devices remove rpi5
    """
    _, registry = open_registry()
    registry.remove(name)
    click.echo(f"removed {name}")
