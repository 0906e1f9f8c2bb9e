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
- ``{"type": "archived", "of": NAME, "was": ...}``: the rows of a removed device,
  kept by ``devices remove --keep-rows``; cannot run models.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from edgelat.agents.client import DeviceClient
from edgelat.errors import BadInput, DeviceError, DeviceMismatch, UnknownDevice
from edgelat.lut import devices_store
from edgelat.lut.store import device_row_counts, measurement_count

LOCAL = "local"
KINDS = ("phone", "board", "gpu-host", "host", "imported", "archived")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: what to do with the rows of a name that is registered again (``--replace``)
ROWS_CHOICES = ("keep-rows", "drop-rows")
#: facts that tell one board or phone from another (those present are compared)
IDENTITY_KEYS = (
    "machine_id", "serial", "board_model", "hostname", "manufacturer", "model", "device", "soc", "hardware",
    "cpu_model", "arch", "cores",
)


def identity(facts: dict[str, Any]) -> dict[str, Any]:
    """The identifying facts of a device (its serial, model, CPU, host name...)."""
    out = {k: facts[k] for k in IDENTITY_KEYS if facts.get(k) not in (None, "", [])}
    transport = facts.get("transport")
    if isinstance(transport, dict) and transport.get("serial"):
        out.setdefault("serial", transport["serial"])  # a phone's USB serial
    return out


def fingerprint(facts: dict[str, Any]) -> str:
    """A short hash of :func:`identity`, stored at registration."""
    ident = identity(facts)
    if not ident:
        return ""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity_change(registered: dict[str, Any], answered: dict[str, Any]) -> str | None:
    """How the identifying facts differ (``"cpu_model 'A' -> 'B'"``), or None when they
    agree on every fact both sides report."""
    old, new = identity(registered), identity(answered)
    diffs = [f"{k} {old[k]!r} -> {new[k]!r}" for k in IDENTITY_KEYS if k in old and k in new and old[k] != new[k]]
    return ", ".join(diffs) or None


@dataclass
class Device:
    name: str
    kind: str
    transport: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    first_seen: float | None = None
    last_seen: float | None = None
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "transport": self.transport,
            "status": self.status,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "fingerprint": self.fingerprint,
            "facts": self.facts,
        }

    @property
    def where(self) -> str:
        """How it is reached, in a few words."""
        t = self.transport
        return str(t.get("address") or t.get("serial") or t.get("type"))


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise BadInput(
            f"invalid device name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, starting alphanumeric)"
        )
    return name


def check_registrable(name: str) -> str:
    """A valid name that is not the built-in ``local``."""
    check_name(name)
    if name == LOCAL:
        raise BadInput("'local' is this machine, built in: it cannot be registered or re-pointed; pick another name")
    return name


def _rows_text(counts: dict[str, int]) -> str:
    total = measurement_count(counts)
    return f"{total} row{'s' if total != 1 else ''}"


class Registry:
    """Named devices, stored in the ``devices`` table of the edgelat database.

    A name stays bound to one board: registering a taken name again is refused
    unless ``replace`` says what becomes of its rows, and a registered device that
    answers with other identifying facts (:func:`identity`) is refused on connect,
    so rows never silently move from one board to another.
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def _local(self) -> Device:
        row = self._row(LOCAL)
        if row is not None and row.transport.get("type") == "local":
            return row
        return Device(name=LOCAL, kind="host", transport={"type": "local"}, status="available")

    def _row(self, name: str) -> Device | None:
        r = devices_store.device_row(self.db, name)
        if r is None:
            return None
        facts = json.loads(r["facts_json"] or "{}")
        return Device(
            name=r["name"],
            kind=r["kind"],
            transport=json.loads(r["transport_json"] or "{}"),
            facts=facts,
            status=r["status"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
            fingerprint=r.get("fingerprint") or fingerprint(facts),
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
        for name in devices_store.device_names(self.db):
            if name != LOCAL:
                out.append(self.get(name))
        return out

    def row_counts(self, name: str) -> dict[str, int]:
        """Rows the device has in each table."""
        return device_row_counts(self.db, name)

    def check_replace(self, name: str, transport: dict[str, Any], replace: str | None) -> Device | None:
        """Refuse, before anything is contacted or written, to register ``local`` or
        to re-point a taken name without ``replace``; returns the registered device, if any."""
        check_registrable(name)
        if replace is not None and replace not in ROWS_CHOICES:
            raise BadInput(f"replace must be one of {', '.join(ROWS_CHOICES)}")
        old = self._row(name)
        if old is not None and replace is None and old.transport != transport:
            raise BadInput(
                f"device {name!r} is already registered (at {old.where}, {_rows_text(self.row_counts(name))}): "
                "to re-point the name add --replace with --keep-rows (its rows stay: the same board) "
                "or --drop-rows (its rows are deleted)"
            )
        return old

    def register(
        self,
        name: str,
        kind: str,
        transport: dict[str, Any],
        facts: dict[str, Any],
        status: str = "available",
        replace: str | None = None,
    ) -> Device:
        """Add a device, or refresh one registered with the same transport and identity.

        A taken name with another transport, or answering as another board, is
        refused unless ``replace`` is ``"keep-rows"`` (the rows stay with the name)
        or ``"drop-rows"`` (its rows are deleted in the same transaction).
        """
        if kind not in KINDS:
            raise BadInput(f"unknown device kind {kind!r} (one of {', '.join(KINDS)})")
        old = self.check_replace(name, transport, replace)
        if old is not None and replace is None:
            change = identity_change(old.facts, facts)
            if change:
                raise DeviceMismatch(
                    f"device {name!r} now answers as another board ({change}), so its rows would move to it: "
                    "if it is the same board add --replace --keep-rows, if not --replace --drop-rows "
                    "(or register the new board under another name)"
                )
        now = time.time()
        row = {
            "name": name,
            "kind": kind,
            "transport_json": json.dumps(transport, sort_keys=True),
            "facts_json": json.dumps(facts, sort_keys=True, default=str),
            "status": status,
            "first_seen": old.first_seen if old and replace != "drop-rows" else now,
            "last_seen": now,
            "fingerprint": fingerprint(facts),
        }
        devices_store.save_device(self.db, row, drop_rows=old is not None and replace == "drop-rows")
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
        devices_store.set_status(self.db, name, status)

    def remove(self, name: str, keep_rows: bool = False) -> tuple[int, str | None]:
        """Forget a device and delete its rows, or with ``keep_rows`` archive them under
        a new name (``NAME.archived-YYYYmmdd-HHMMSS``, a device of kind ``archived`` that
        ``lut show``/``lut export`` reach and that cannot run models), so registering
        the name again starts empty; a name without rows leaves no archive. Returns (rows,
        archive name or None)."""
        if name == LOCAL:
            raise BadInput("the 'local' device is built in and cannot be removed")
        dev = self.get(name)
        # nothing to archive: no empty archive device is left behind
        archive = self._archive_name(name) if keep_rows and self.row_counts(name) else None
        archive_row = None if archive is None else {
            "name": archive,
            "kind": "archived",
            "transport_json": json.dumps({"type": "archived", "of": name, "was": dev.transport}, sort_keys=True),
            "facts_json": json.dumps(dev.facts, sort_keys=True, default=str),
            "status": "archived",
            "first_seen": dev.first_seen,
            "last_seen": time.time(),
            "fingerprint": dev.fingerprint,
        }
        rows = devices_store.remove_device(self.db, name, archive_row)
        return rows, archive

    def _archive_name(self, name: str) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = f"{name[: 64 - len(stamp) - 14]}.archived-{stamp}"
        candidate, n = base, 1
        while self.exists(candidate) or self.row_counts(candidate):
            n += 1
            candidate = f"{base}-{n}"
        return check_name(candidate)

    def connect(self, name: str, **overrides: Any) -> DeviceClient:
        """A client for the device, by its transport (``overrides`` such as
        ``runner="python"`` replace transport keys for this connection only).

        A registered board or phone is asked for its facts first: one that answers
        as another board (other identifying facts) is refused, so its
        measurements are never stored under this name."""
        device = self.get(name)
        client = connect(device, **overrides)
        if device.transport.get("type") in ("agent", "adb") and identity(device.facts):
            try:
                change = identity_change(device.facts, client.describe())
            except BaseException:
                client.close()
                raise
            if change:
                client.close()
                raise DeviceMismatch(
                    f"device {name!r} answers as another board than the one registered ({change}); "
                    f"nothing was measured: if it is the same board re-register it with --replace --keep-rows, "
                    "if not with --replace --drop-rows, or register it under another name"
                )
        return client


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
    if t == "archived":
        raise DeviceError(
            f"device {device.name!r} holds the archived rows of the removed device {device.transport.get('of')!r}; "
            "it cannot run models"
        )
    if t == "imported":
        raise DeviceError(
            f"device {device.name!r} is known only from imported measurements; it cannot run models"
        )
    if t == "hub":
        raise DeviceError(
            f"device {device.name!r} dialled in to a hub: it is reached through the hub's jobs, not directly"
        )
    raise DeviceError(f"device {device.name!r} has an unknown transport {t!r}")
