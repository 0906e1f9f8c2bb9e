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
              RuntimeUnavailable, DeviceError)
}
