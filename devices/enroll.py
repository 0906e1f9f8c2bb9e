"""Registering a board or GPU host reached through its agent, and deciding its kind.

The facts are read from the agent before anything is written, so an unreachable agent or a
bad token leaves the registry as it was; the kind (``gpu-host`` or ``board``) follows from
those facts unless the caller gives one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelat.devices.registry import KINDS, Device, Registry, connect, identity_change
from edgelat.errors import DeviceMismatch

__all__ = ["agent_kind", "agent_transport", "register_agent"]


def agent_kind(facts: dict[str, Any]) -> str:
    """The kind of a device reached through an agent: ``gpu-host`` when the agent reports a GPU
    provider, else ``board``."""
    return "gpu-host" if facts.get("kind") == "gpu-host" else "board"


def agent_transport(address: str, token_file: str | None = None, tls_ca: str | None = None) -> dict[str, Any]:
    """The stored transport of an agent: its address, and absolute paths of the token and CA files."""
    transport: dict[str, Any] = {"type": "agent", "address": address}
    if token_file:
        transport["token_file"] = str(Path(token_file).resolve())
    if tls_ca:
        transport["tls_ca"] = str(Path(tls_ca).resolve())
    return transport


def register_agent(registry: Registry, name: str, address: str, token_file: str | None = None,
                   tls_ca: str | None = None, kind: str | None = None, replace: str | None = None) -> Device:
    """Register (or refresh) ``name`` as the device whose agent answers at ``address``.

    A taken name is refused before the agent is contacted unless ``replace`` says what becomes
    of its rows (``keep-rows`` or ``drop-rows``, see :meth:`Registry.register`)."""
    transport = agent_transport(address, token_file, tls_ca)
    registry.check_replace(name, transport, replace)
    with connect(Device(name=name, kind="board", transport=transport)) as client:
        facts = client.describe()
    return registry.register(name, kind or agent_kind(facts), transport, facts, replace=replace)


def enroll_dialled(registry: Registry, name: str, facts: dict[str, Any]) -> Device:
    """A device that dialled in to a hub (``agent serve|adb --hub``), in the hub's own registry with
    transport ``hub``: the library's device checks (known name, kind, identity) then hold for it as
    for any other device, and it is reached only through its agent's tunnel. A name registered
    already is kept as it is, unless the device answers as another board."""
    if registry.exists(name):  # registered on this host already (e.g. a phone the hub's own host serves)
        known = registry.get(name)
        change = identity_change(known.facts, facts)
        if change:
            raise DeviceMismatch(f"device {name!r} dialled in as another board than the one registered ({change}); "
                                 "nothing is measured on it under that name")
        return known
    kind = facts.get("kind") if facts.get("kind") in KINDS[:4] else agent_kind(facts)
    return registry.register(name, str(kind), {"type": "hub"}, facts)
