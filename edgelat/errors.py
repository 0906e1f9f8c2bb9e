"""User-facing errors.

Every failure a user can cause (bad input, unknown names, unreachable agents)
raises an :class:`EdgelatError` subclass whose message is one line that says
what went wrong and what to do. The CLI prints it and exits non-zero; nothing
is written to the database before the input has been validated.
"""

from __future__ import annotations


class EdgelatError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class UnknownDevice(EdgelatError):
    """A device name that is not in the registry."""


class UnknownPreset(EdgelatError):
    """A preset name the operator catalog does not define."""


class BadInput(EdgelatError):
    """Malformed user input: a spec file, a CSV, an architecture string, an option."""


class CorruptModel(EdgelatError):
    """A model file that the runtime cannot load."""


class AgentUnreachable(EdgelatError):
    """The agent address did not answer (or stopped answering)."""


class AuthFailed(EdgelatError):
    """The agent rejected the token (wrong or missing)."""


class RuntimeUnavailable(EdgelatError):
    """The requested runtime/provider/delegate is not installed on the device."""


class DeviceError(EdgelatError):
    """The device failed while running a job (disconnect, timeout, runner crash)."""


class DeviceMismatch(DeviceError):
    """A registered name answered with other identifying facts than it was registered with."""


class StoreError(EdgelatError):
    """The database (or ``EDGELAT_HOME``) cannot be used; nothing was changed in it."""


class StoreCorrupt(StoreError):
    """The database file is damaged: garbage, truncated or empty. It is left as it is."""


class StoreSchema(StoreError):
    """The database has a schema this edgelat cannot use (written by a newer one)."""


class StoreReadOnly(StoreError):
    """The database, its folder or its filesystem is read-only."""


class StoreLocked(StoreError):
    """Another process held the database past the busy timeout."""


class StoreFull(StoreError):
    """The disk (or the database's page limit) is full; the change was rolled back."""


class StoreUnavailable(StoreError):
    """``EDGELAT_HOME`` or the database cannot be opened (a file in the way, no permission, I/O error)."""


def describe(exc: EdgelatError) -> str:
    """Serialise an error as ``"ClassName: message"`` so it survives any transport
    (a per-item error in a gRPC batch) and can be raised again as the same class."""
    return f"{type(exc).__name__}: {exc}"


def revive(text: str) -> EdgelatError:
    """The inverse of :func:`describe`: rebuild the error class from its text
    (unknown or missing class names give a plain :class:`DeviceError`)."""
    name, sep, message = text.partition(": ")
    cls = _BY_NAME.get(name) if sep else None
    if cls is None:
        return DeviceError(text)
    return cls(message)


_BY_NAME: dict[str, type[EdgelatError]] = {
    c.__name__: c
    for c in (UnknownDevice, UnknownPreset, BadInput, CorruptModel, AgentUnreachable, AuthFailed,
              RuntimeUnavailable, DeviceError, DeviceMismatch, StoreError)
}
