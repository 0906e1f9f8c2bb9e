"""The registry of named devices and how each is reached.

A device has a name, a kind (phone | board | gpu-host | host | imported), a
transport (how to reach it) and the facts read from it at registration. The
local machine is always available as ``local`` without registering it.

Transports (stored as JSON):

- ``{"type": "local"}``: this machine, in process.
- ``{"type": "agent", "address": "HOST:PORT", "token_file": ..., "tls_ca": ...}``: a gRPC agent.
- ``{"type": "adb", "serial": ...}`` or ``{"type": "adb", "address": "HOST:PORT"}``:
  a phone reached through the ADB bridge (in process, or a running ``agent adb``
  whose address is stored as ``"agent"``).
- ``{"type": "imported"}``: known only from imported measurements; cannot run models.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from edgelat.agents.client import DeviceClient
from edgelat.errors import BadInput, DeviceError, UnknownDevice

LOCAL = "local"
KINDS = ("phone", "board", "gpu-host", "host", "imported")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass
class Device:
    name: str
    kind: str
    transport: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    first_seen: float | None = None
    last_seen: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "transport": self.transport,
            "status": self.status,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "facts": self.facts,
        }


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise BadInput(
            f"invalid device name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, starting alphanumeric)"
        )
    return name


class Registry:
    """Named devices, stored in the ``devices`` table of the edgelat database."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def _local(self) -> Device:
        row = self._row(LOCAL)
        if row is not None:
            return row
        return Device(name=LOCAL, kind="host", transport={"type": "local"}, status="available")

    def _row(self, name: str) -> Device | None:
        try:
            r = self.db["devices"].get(name)
        except sqlite_utils.db.NotFoundError:
            return None
        return Device(
            name=r["name"],
            kind=r["kind"],
            transport=json.loads(r["transport_json"] or "{}"),
            facts=json.loads(r["facts_json"] or "{}"),
            status=r["status"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
        )

    def get(self, name: str) -> Device:
        """The device called ``name``; raises :class:`UnknownDevice` with the known names."""
        if name == LOCAL:
            return self._local()
        dev = self._row(name)
        if dev is None:
            known = ", ".join(d.name for d in self.list()) or "none"
            raise UnknownDevice(f"unknown device {name!r} (known: {known}); register it with 'edgelat devices register'")
        return dev

    def exists(self, name: str) -> bool:
        return name == LOCAL or self._row(name) is not None

    def list(self) -> list[Device]:
        """All devices, ``local`` first."""
        out = [self._local()]
        for r in self.db["devices"].rows_where(order_by="name"):
            if r["name"] != LOCAL:
                out.append(self.get(r["name"]))
        return out

    def register(
        self, name: str, kind: str, transport: dict[str, Any], facts: dict[str, Any], status: str = "available"
    ) -> Device:
        """Add or update a device (facts are replaced by the fresh ones)."""
        check_name(name)
        if kind not in KINDS:
            raise BadInput(f"unknown device kind {kind!r} (one of {', '.join(KINDS)})")
        now = time.time()
        old = self._row(name)
        row = {
            "name": name,
            "kind": kind,
            "transport_json": json.dumps(transport, sort_keys=True),
            "facts_json": json.dumps(facts, sort_keys=True, default=str),
            "status": status,
            "first_seen": old.first_seen if old else now,
            "last_seen": now,
        }
        with self.db.conn:
            self.db["devices"].upsert(row, pk="name")
        return self.get(name)

    def ensure_imported(self, name: str) -> Device:
        """A device known only from imported measurements; created if new."""
        if self.exists(name):
            return self.get(name)
        return self.register(name, "imported", {"type": "imported"}, {}, status="imported")

    def touch(self, name: str, status: str) -> None:
        """Record that a device was just seen (or lost)."""
        if name == LOCAL and self._row(LOCAL) is None:
            return
        with self.db.conn:
            self.db["devices"].update(name, {"status": status, "last_seen": time.time()})

    def remove(self, name: str) -> None:
        """Forget a device (its measurements stay in the tables)."""
        if name == LOCAL:
            raise BadInput("the 'local' device is built in and cannot be removed")
        self.get(name)
        with self.db.conn:
            self.db["devices"].delete(name)

    def connect(self, name: str, **overrides: Any) -> DeviceClient:
        """A client for the device, by its transport (``overrides`` such as
        ``runner="python"`` replace transport keys for this connection only)."""
        return connect(self.get(name), **overrides)


def connect(device: Device, **overrides: Any) -> DeviceClient:
    """Open a :class:`DeviceClient` for a registered device."""
    transport = {**device.transport, **{k: v for k, v in overrides.items() if v is not None}}
    t = transport.get("type")
    if t == "local":
        from edgelat.agents.client import LocalClient
        from edgelat.agents.local import LocalBackend

        return LocalClient(LocalBackend())
    if t == "agent":
        from edgelat.agents.remote import GrpcClient

        return GrpcClient.from_transport(transport)
    if t == "adb":
        from edgelat.agents.adb.bridge import client_for

        return client_for(transport, device.facts)
    if t == "imported":
        raise DeviceError(
            f"device {device.name!r} is known only from imported measurements; it cannot run models"
        )
    raise DeviceError(f"device {device.name!r} has an unknown transport {t!r}")
